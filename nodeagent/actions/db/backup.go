package db

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// This file is the db module's small surface for the backup module, which
// streams dumps into restic and restores them: it reuses the module's
// connection conventions (admin credentials, sockets) instead of
// repeating them. Callers validate names (validate.DatabaseName) first.

// Command is a database tool run as an argument vector with a complete
// environment. Credentials reach it through a 0600 file named in Argv or
// Env (never the password itself).
type Command struct {
	Argv []string
	Env  []string
	// Trailer is the line a complete dump ends with (dumps only).
	Trailer string
	// Guard is how the line that locks the client down starts (restore
	// clients only); see ReadHeader.
	Guard string
}

// The lines the dump tools write so that their client refuses client
// commands (\! runs a shell as root) in the rest of the dump: MariaDB's
// sandbox mode (mariadb-dump 10.11.8 and later, as its first line) and
// PostgreSQL's \restrict <key> (pg_dump 15.14 and later, after a comment
// header), which the dump ends with \unrestrict <key>.
const (
	mariadbGuard  = `/*M!999999\- enable the sandbox mode */`
	postgresGuard = `\restrict `
)

// maxHeaderLines bounds how far into a dump its guard is looked for.
const maxHeaderLines = 16

// ReadHeader reads the start of a dump from br up to and including its
// guard line and returns what it read, to be fed to the client before the
// rest of br. The MariaDB guard must be the first line (as mariadb-dump
// writes it); only blank and comment (--) lines may come before
// PostgreSQL's. A dump without it could run client commands as root, so
// it is refused before anything reaches the client.
func (c Command) ReadHeader(br *bufio.Reader) ([]byte, error) {
	var head []byte
	for range maxHeaderLines {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
		head = append(head, line...)
		t := strings.TrimRight(string(line), " \r\n")
		if err == nil && guardLine(c.Guard, t) {
			return head, nil
		}
		if err != nil || c.Guard == mariadbGuard || (t != "" && !strings.HasPrefix(t, "--")) {
			break
		}
	}
	return nil, fmt.Errorf("refusing to import a dump that does not start with %q (its client would run client commands in it as root; mariadb-dump before 10.11.8 and pg_dump before 15.14 do not write it)", c.Guard)
}

// guardLine says whether line (trailing blanks trimmed) is guard's line:
// MariaDB's exactly, PostgreSQL's with its key.
func guardLine(guard, line string) bool {
	switch guard {
	case mariadbGuard:
		return line == guard
	case postgresGuard:
		return len(line) > len(guard) && strings.HasPrefix(line, guard) && !strings.ContainsAny(line[len(guard):], " \t")
	}
	return false
}

// DumpCommand returns the dump tool for database name of engine:
// mariadb-dump --single-transaction --routines --triggers --events, or
// pg_dump --format=plain.
func (m *Module) DumpCommand(ctx context.Context, env *actions.Env, engine, name string) (Command, error) {
	e, err := m.engineFor(ctx, env, engine)
	if err != nil {
		return Command{}, err
	}
	c := e.dumpCommand(name)
	if c.env == nil {
		c.env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	return Command{Argv: c.argv, Env: c.env, Trailer: e.dumpTrailer()}, nil
}

// RestoreCommand returns the client that reads a plain SQL dump on its
// stdin into database name, stopping at the first error.
func (m *Module) RestoreCommand(ctx context.Context, env *actions.Env, engine, name string) (Command, error) {
	e, err := m.engineFor(ctx, env, engine)
	if err != nil {
		return Command{}, err
	}
	return restoreCommand(e, name)
}

func restoreCommand(e engine, name string) (Command, error) {
	switch e := e.(type) {
	case *mariadb:
		return Command{Argv: []string{e.paths.MariadbClient,
			// Must come first; keeps the password off the command line.
			"--defaults-extra-file=" + e.cred,
			"--socket=" + e.socket,
			"--default-character-set=utf8mb4",
			"--batch",
			"--database=" + name,
		}, Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, Guard: mariadbGuard}, nil
	case *postgres:
		return Command{Argv: []string{e.paths.Psql,
			"--host=" + e.paths.PgSocketDir,
			"--port=" + strconv.Itoa(e.paths.PgPort),
			"--username=" + e.user,
			"--no-password", "--quiet", "--no-psqlrc",
			"--set=ON_ERROR_STOP=1", "--single-transaction",
			"--dbname=" + name,
		}, Env: []string{"PATH=/usr/bin:/bin", "PGPASSFILE=" + e.cred, "PGCONNECT_TIMEOUT=10"}, Guard: postgresGuard}, nil
	}
	return Command{}, fmt.Errorf("%w: %T", ErrEngineUnavailable, e)
}

// DatabaseExists says whether database name exists on engine's server.
func (m *Module) DatabaseExists(ctx context.Context, env *actions.Env, engine, name string) (bool, error) {
	e, err := m.engineFor(ctx, env, engine)
	if err != nil {
		return false, err
	}
	return e.databaseExists(ctx, name)
}

// RecreateDatabase creates database name empty, dropping it first when
// drop is set; without drop an existing database is a CONFLICT, so that
// nothing is overwritten unasked. It holds the module's lock of the
// database, as the database actions do.
func (m *Module) RecreateDatabase(ctx context.Context, env *actions.Env, engine, name string, drop bool) error {
	e, _, unlock, err := m.begin(ctx, env, engine, name)
	if err != nil {
		return err
	}
	defer unlock()
	return recreate(ctx, e, name, drop)
}

// RestoreDatabase loads a dump of one of owner's databases (as our dump
// command made it, read through src) into database name. In place, an
// existing database is replaced: it is first dumped (verified, 0600 in
// owner's root-only backup area, as DropDatabase does), and put back from
// that dump if the load fails; the dump is removed once the database is
// replaced or put back, and kept only when putting it back fails (the
// error names it). Otherwise an existing database is a CONFLICT and
// nothing changes.
//
// The SQL is the account's own. MariaDB's is loaded by the admin through
// its client behind the dump's guard line (its DEFINERs name the
// account's users, which only the admin may set). PostgreSQL's goes the
// way of an untrusted import (importDump): loaded as a throw-away role
// that is no superuser, its objects owned by the database's owner role,
// never by the superuser (as whom the account's SECURITY DEFINER
// functions would then run), and the users' privileges on the database
// given back, which live with the database and go with its drop.
func (m *Module) RestoreDatabase(ctx context.Context, env *actions.Env, engine, owner, name string, inPlace bool, src func(load func(io.Reader) error) error) error {
	e, log, unlock, err := m.begin(ctx, env, engine, name)
	if err != nil {
		return err
	}
	defer unlock()
	load := func(ctx context.Context) func(io.Reader) error {
		return func(r io.Reader) error { return loadOwn(ctx, log, e, name, r) }
	}
	existed, err := e.databaseExists(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case existed && !inPlace:
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "database %q exists", name)
	case !existed:
		return src(load(ctx))
	}
	dir, dirPath, err := dumpDir(env.Profile.BackupDir, owner)
	if err != nil {
		return err
	}
	safety, _, err := writeDump(ctx, dir, dirPath, name+"-before-restore", e.dumpCommand(name), e.dumpTrailer())
	if err != nil {
		return fmt.Errorf("dump of %q before the restore: nothing changed: %w", name, err)
	}
	lerr := src(load(ctx))
	if lerr == nil {
		_ = os.Remove(safety)
		return nil
	}
	// Put back even when the restore was cancelled.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Hour)
	defer cancel()
	berr := loadFile(safety, load(bctx))
	if berr != nil {
		log.Error("database restore failed and putting it back failed", "database", name, "engine", engine, "dump", safety, "err", berr)
		return fmt.Errorf("restore failed: %w; putting the database back also failed (%v): its dump is %s", lerr, berr, safety)
	}
	_ = os.Remove(safety)
	return fmt.Errorf("restore failed; the database was put back as it was: %w", lerr)
}

func recreate(ctx context.Context, e engine, name string, drop bool) error {
	if drop {
		if err := e.dropDatabase(ctx, name); err != nil {
			return err
		}
	}
	existed, err := e.ensureDatabase(ctx, name, DefaultCharset)
	if err != nil {
		return err
	}
	if existed {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "database %q exists", name)
	}
	return nil
}

// loadOwn makes database name again, empty, and loads r, a dump of the
// account's own database, into it (RestoreDatabase says how).
func loadOwn(ctx context.Context, log *slog.Logger, e engine, name string, r io.Reader) error {
	if pg, ok := e.(*postgres); ok {
		return pg.importDump(ctx, log, name, r)
	}
	if err := recreate(ctx, e, name, true); err != nil {
		return err
	}
	cc, err := restoreCommand(e, name)
	if err != nil {
		return err
	}
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := cc.ReadHeader(br)
	if err != nil {
		return err
	}
	c := exec.CommandContext(ctx, cc.Argv[0], cc.Argv[1:]...)
	c.Env = cc.Env
	c.Stdin = io.MultiReader(bytes.NewReader(head), br)
	var out limitedBuf
	c.Stdout, c.Stderr = &out, &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.WaitDelay = 5 * time.Second
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(cc.Argv[0]), err, bytes.TrimSpace(out.b))
	}
	return nil
}

// loadFile hands load the gzipped dump at p (one writeDump wrote).
func loadFile(p string, load func(io.Reader) error) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 256<<10))
	if err != nil {
		return err
	}
	return load(zr)
}

// UserHash is one database user's stored credential: enough to recreate
// the same password without knowing it.
type UserHash struct {
	Engine string `json:"engine"`
	User   string `json:"user"`
	Host   string `json:"host,omitempty"`   // MariaDB only
	Plugin string `json:"plugin,omitempty"` // MariaDB only
	Hash   string `json:"hash"`
}

// UserHashes lists the password hashes of owner's database users on
// engine: MariaDB's mysql.global_priv (plugin, authentication_string),
// PostgreSQL's pg_authid.rolpassword.
func (m *Module) UserHashes(ctx context.Context, env *actions.Env, engine, owner string) ([]UserHash, error) {
	e, err := m.engineFor(ctx, env, engine)
	if err != nil {
		return nil, err
	}
	var out []UserHash
	switch e := e.(type) {
	case *mariadb:
		rows, err := e.db.QueryContext(ctx, `SELECT User, Host,
			COALESCE(JSON_VALUE(Priv, '$.plugin'), ''), COALESCE(JSON_VALUE(Priv, '$.authentication_string'), '')
			FROM mysql.global_priv WHERE User LIKE ? ORDER BY User, Host`, owner+`\_%`)
		if err != nil {
			return nil, fmt.Errorf("read password hashes of %q: %w", owner, err)
		}
		defer rows.Close()
		for rows.Next() {
			h := UserHash{Engine: engine}
			if err := rows.Scan(&h.User, &h.Host, &h.Plugin, &h.Hash); err != nil {
				return nil, fmt.Errorf("read password hashes of %q: %w", owner, err)
			}
			if validate.DatabaseUser(h.User, owner) == nil {
				out = append(out, h)
			}
		}
		return out, rows.Err()
	case *postgres:
		rows, err := e.pool.Query(ctx, `SELECT rolname, COALESCE(rolpassword, '') FROM pg_authid WHERE rolname LIKE $1 ORDER BY rolname`, owner+`\_%`)
		if err != nil {
			return nil, fmt.Errorf("read password hashes of %q: %w", owner, err)
		}
		defer rows.Close()
		for rows.Next() {
			h := UserHash{Engine: engine}
			if err := rows.Scan(&h.User, &h.Hash); err != nil {
				return nil, fmt.Errorf("read password hashes of %q: %w", owner, err)
			}
			if validate.DatabaseUser(h.User, owner) == nil {
				out = append(out, h)
			}
		}
		return out, rows.Err()
	}
	return nil, errors.New("unknown engine")
}

// RestoreUserHash sets an existing user's stored password back to h (a
// user that does not exist is left to the control plane, which recreates
// it with its grants). It reports whether the user existed.
func (m *Module) RestoreUserHash(ctx context.Context, env *actions.Env, owner string, h UserHash) (bool, error) {
	if err := validate.DatabaseUser(h.User, owner); err != nil {
		return false, err
	}
	e, _, unlock, err := m.begin(ctx, env, h.Engine, h.User)
	if err != nil {
		return false, err
	}
	defer unlock()
	switch e := e.(type) {
	case *mariadb:
		var n int
		if err := e.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM mysql.global_priv WHERE User = ? AND Host = ?", h.User, h.Host).Scan(&n); err != nil || n == 0 {
			return false, err
		}
		// The hash is bound (interpolated and escaped by the driver), the
		// plugin name only chosen from the two the module creates.
		switch h.Plugin {
		case "mysql_native_password", "":
			_, err = e.db.ExecContext(ctx, "ALTER USER "+account(h.User, h.Host)+" IDENTIFIED VIA mysql_native_password USING ?", h.Hash)
		case "ed25519":
			_, err = e.db.ExecContext(ctx, "ALTER USER "+account(h.User, h.Host)+" IDENTIFIED VIA ed25519 USING ?", h.Hash)
		default:
			return true, fmt.Errorf("user %q: authentication plugin %q is not restored", h.User, h.Plugin)
		}
		if err != nil {
			return true, fmt.Errorf("restore password of %q: %w", h.User, err)
		}
		return true, nil
	case *postgres:
		var ok bool
		if err := e.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", h.User).Scan(&ok); err != nil || !ok {
			return false, err
		}
		if h.Hash == "" {
			return true, nil
		}
		// PostgreSQL stores a SCRAM or md5 verifier given as the password
		// as it is; a literal cannot be bound in ALTER ROLE, so it is
		// quoted (the verifier is base64, '$', ':' and '*' only).
		if _, err := e.pool.Exec(ctx, "ALTER ROLE "+pgIdent(h.User)+" PASSWORD "+pgLiteral(h.Hash)); err != nil {
			return true, fmt.Errorf("restore password of %q: %w", h.User, err)
		}
		return true, nil
	}
	return false, errors.New("unknown engine")
}

// pgLiteral quotes s as a string literal (standard_conforming_strings is
// on by default since 9.1: only ' needs doubling); NUL is refused.
func pgLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			continue
		}
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
