package db

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/validate"
)

// ModuleName is the module's stable name.
const ModuleName = "db"

// Module is the database service area of a node: MariaDB, and PostgreSQL
// where installed.
//
// On production nodes (no prefix) the servers are the distribution's
// systemd units with their own configuration, and the agent's admin
// credentials are files provisioned with the node (platform.DBPaths).
// Supervised (a prefix), Setup lays out the servers under the prefix: it
// writes mariadbd's option file, creates the data directory with
// mariadb-install-db (root authenticating by unix_socket), and initdb's a
// PostgreSQL cluster as the postgres user with a generated superuser
// password kept in a pgpass file in the agent's DataDir. Setup starts
// nothing: it returns the specs, and the MariaDB spec's Ready creates the
// agent's own admin account once the server answers.
//
// The module owns the state its actions share on one agent: the engines
// (connection pools) and the locks that serialise actions on one database
// or user. The agent creates one and builds every database action from it.
type Module struct {
	// engines caches one engine (and so one small connection pool) per
	// server and credential file: actions are built per task, the pools
	// outlive them.
	enginesMu sync.Mutex
	engines   map[string]engine

	// locks serialises actions on one database or user name; see begin.
	locks actions.KeyedLocks
}

var _ actions.Module = (*Module)(nil)

// NewModule returns the database module of one agent.
func NewModule() *Module { return &Module{engines: make(map[string]engine)} }

// Name implements actions.Module.
func (*Module) Name() string { return ModuleName }

// Setup implements actions.Module.
func (m *Module) Setup(ctx context.Context, env *actions.Env) ([]services.Spec, error) {
	if env == nil || env.Profile == nil {
		return nil, errors.New("db: no platform profile")
	}
	var specs []services.Spec
	d := env.Profile.DB()
	supervised := env.Profile.Prefix != ""
	if supervised {
		for _, name := range []string{"mariadb", "postgresql"} {
			if err := os.MkdirAll(filepath.Dir(supervisedLog(env, name)), 0o750); err != nil {
				return nil, fmt.Errorf("db: %w", err)
			}
		}
	}
	if _, err := os.Stat(d.Mariadbd); err == nil {
		if supervised {
			if err := setupMariaDB(ctx, env); err != nil {
				return nil, err
			}
		}
		// Every account's tables: mysql's alone, also where an older
		// agent or the distribution left files readable (Debian's
		// mysql_upgrade_info is 0644).
		if err := env.Profile.MariaDBData().MakePrivate(); err != nil {
			return nil, fmt.Errorf("db: %w", err)
		}
		specs = append(specs, m.mariadbSpec(env))
	}
	if _, err := os.Stat(d.Postgres); err == nil {
		if supervised {
			if err := setupPostgres(ctx, env); err != nil {
				return nil, err
			}
		}
		// PostgreSQL refuses a datadir others may enter; its files are
		// made private all the same.
		if err := env.Profile.PostgresData().MakePrivate(); err != nil {
			return nil, fmt.Errorf("db: %w", err)
		}
		if ok, _ := fileExists(postgresCredPath(env, d)); ok {
			specs = append(specs, m.postgresSpec(env))
		}
	}
	return specs, nil
}

func (m *Module) mariadbSpec(env *actions.Env) services.Spec {
	d := env.Profile.DB()
	s := services.Spec{
		Name:        "mariadb",
		Unit:        d.MariaDBUnit,
		Binary:      d.Mariadbd,
		Args:        []string{"--defaults-file=" + d.MariaDBConfig},
		StopTimeout: 60 * time.Second,
		Listen:      []string{d.MariaDBSocket},
		LogFile:     supervisedLog(env, "mariadb"),
		// Ready logs in as the agent's admin, creating the account first on
		// a fresh supervised server.
		Ready: func(ctx context.Context) error {
			e, err := m.engineFor(ctx, env, validate.EngineMariaDB)
			if err != nil {
				return err
			}
			return e.(*mariadb).db.PingContext(ctx)
		},
		Version: func(ctx context.Context) (string, error) {
			e, err := m.engineFor(ctx, env, validate.EngineMariaDB)
			if err != nil {
				return "", err
			}
			var v string
			err = e.(*mariadb).db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&v)
			return v, err
		},
	}
	return s
}

func (m *Module) postgresSpec(env *actions.Env) services.Spec {
	d := env.Profile.DB()
	return services.Spec{
		Name:   "postgresql",
		Unit:   d.PgUnit,
		Binary: d.PgSetpriv,
		// setpriv execs postgres as its own user (initdb and postgres refuse
		// root), so the supervisor's signals reach postgres itself.
		Args: []string{"--reuid=" + d.PgOSUser, "--regid=" + d.PgOSUser, "--init-groups", "--",
			d.Postgres, "-D", d.PgDataDir, "-k", d.PgSocketDir, "-p", strconv.Itoa(d.PgPort), "-c", "listen_addresses="},
		Env:          []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"},
		ReloadSignal: syscall.SIGHUP,
		StopSignal:   syscall.SIGINT, // fast shutdown
		StopTimeout:  60 * time.Second,
		Listen:       []string{d.PgSocket()},
		LogFile:      supervisedLog(env, "postgresql"),
		Ready: func(ctx context.Context) error {
			e, err := m.engineFor(ctx, env, validate.EnginePostgreSQL)
			if err != nil {
				return err
			}
			return e.(*postgres).pool.Ping(ctx)
		},
		Version: func(ctx context.Context) (string, error) {
			e, err := m.engineFor(ctx, env, validate.EnginePostgreSQL)
			if err != nil {
				return "", err
			}
			var v string
			err = e.(*postgres).pool.QueryRow(ctx, "SHOW server_version").Scan(&v)
			return v, err
		},
	}
}

// supervisedLog is where the supervisor keeps a database server's output
// (its log: neither server is given a log file of its own), "" on a
// production node, where the unit's journal has it.
func supervisedLog(env *actions.Env, name string) string {
	if env.Profile.Prefix == "" {
		return ""
	}
	return filepath.Join("/", env.Profile.Prefix, "var/log", name, name+".log")
}

// MariaDBConfig is mariadbd's option file on a supervised node: everything
// under the prefix, no TCP (account users log in over the socket).
func MariaDBConfig(env *actions.Env) string {
	d := env.Profile.DB()
	return fmt.Sprintf(`# Written by the npanel agent; changes are overwritten.
[mariadbd]
datadir=%s
socket=%s
pid-file=%s
tmpdir=%s
user=%s
skip-networking
skip-name-resolve
character-set-server=utf8mb4
innodb_buffer_pool_size=128M
`, d.MariaDBDataDir, d.MariaDBSocket, d.MariaDBPIDFile, d.MariaDBTmpDir, d.MariaDBOSUser)
}

func setupMariaDB(ctx context.Context, env *actions.Env) error {
	d := env.Profile.DB()
	uid, gid, err := lookupIDs(d.MariaDBOSUser)
	if err != nil {
		return fmt.Errorf("db: %w", err)
	}
	if err := mkdirPublicParents(env.Profile.Prefix, d.MariaDBConfig, d.MariaDBDataDir, d.MariaDBRunDir, d.MariaDBTmpDir); err != nil {
		return fmt.Errorf("db: %w", err)
	}
	for _, p := range []string{d.MariaDBDataDir, d.MariaDBRunDir, d.MariaDBTmpDir} {
		if err := os.MkdirAll(p, 0o750); err != nil {
			return fmt.Errorf("db: %w", err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return fmt.Errorf("db: %w", err)
		}
	}
	if err := writeFileAtomic(d.MariaDBConfig, []byte(MariaDBConfig(env)), 0o644); err != nil {
		return fmt.Errorf("db: write %s: %w", d.MariaDBConfig, err)
	}
	if _, err := os.Stat(filepath.Join(d.MariaDBDataDir, "mysql")); err == nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, d.MariadbInstall, "--defaults-file="+d.MariaDBConfig,
		"--auth-root-authentication-method=socket", "--skip-test-db").CombinedOutput()
	if err != nil {
		return fmt.Errorf("db: mariadb-install-db: %w: %s", err, tail(out))
	}
	return nil
}

func setupPostgres(ctx context.Context, env *actions.Env) error {
	d := env.Profile.DB()
	uid, gid, err := lookupIDs(d.PgOSUser)
	if err != nil {
		return fmt.Errorf("db: %w", err)
	}
	if err := mkdirPublicParents(env.Profile.Prefix, d.PgDataDir, d.PgSocketDir); err != nil {
		return fmt.Errorf("db: %w", err)
	}
	for _, p := range []string{d.PgDataDir, d.PgSocketDir} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("db: %w", err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return fmt.Errorf("db: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(d.PgDataDir, "PG_VERSION")); err == nil {
		return nil
	}
	var rnd [24]byte
	_, _ = rand.Read(rnd[:])
	pw := hex.EncodeToString(rnd[:])
	// initdb reads the superuser's password from a file the postgres user
	// can read; it lives in the (0700, postgres-owned) socket directory for
	// the moment initdb runs.
	pwfile := filepath.Join(d.PgSocketDir, ".initdb-pw")
	// Owned by postgres before the password is in it.
	if err := atomicfile.WriteFile(pwfile, []byte(pw+"\n"), 0o600, &atomicfile.Owner{UID: uid, GID: gid}); err != nil {
		return fmt.Errorf("db: %w", err)
	}
	defer os.Remove(pwfile)
	cmd := exec.CommandContext(ctx, d.Initdb, "-D", d.PgDataDir, "-U", d.PgAdminUser, "--pwfile="+pwfile,
		"--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"}
	cmd.Dir = d.PgSocketDir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("db: initdb: %w: %s", err, tail(out))
	}
	return writeSecretFile(postgresCredPath(env, d), []byte("*:*:*:"+d.PgAdminUser+":"+pw+"\n"))
}

// mkdirPublicParents creates the parents of paths below prefix with mode
// 0755: the daemons drop to their own users and must be able to reach
// their directories.
func mkdirPublicParents(prefix string, paths ...string) error {
	for _, p := range paths {
		dir := filepath.Dir(p)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for d := dir; len(d) > len(prefix); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				return err
			}
		}
	}
	if fi, err := os.Stat(prefix); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
		return os.Chmod(prefix, fi.Mode().Perm()|0o055)
	}
	return nil
}

func lookupIDs(name string) (int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, err
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, err
	}
	return uid, gid, nil
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
