package db

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/validate"
)

// Names of the credential files the agent generates in its DataDir on a
// supervised node (production nodes get theirs from Ansible at the paths in
// platform.DBPaths).
const (
	MariaDBAdminFile  = "mariadb-admin.cnf"
	PostgresAdminFile = "postgres-admin.pgpass"
)

func (m *Module) engineFor(ctx context.Context, env *actions.Env, name string) (engine, error) {
	paths := env.Profile.DB()
	supervised := env.Profile.Prefix != ""
	var key, cred string
	switch name {
	case validate.EngineMariaDB:
		if _, err := os.Stat(paths.Mariadbd); err != nil {
			return nil, fmt.Errorf("%w: mariadb (%s: %v)", ErrEngineUnavailable, paths.Mariadbd, errors.Unwrap(err))
		}
		cred = mariadbCredPath(env, paths)
		key = name + "\x00" + paths.MariaDBSocket + "\x00" + cred
	case validate.EnginePostgreSQL:
		if _, err := os.Stat(paths.Postgres); err != nil {
			return nil, fmt.Errorf("%w: postgresql (%s is not installed)", ErrEngineUnavailable, paths.Postgres)
		}
		cred = postgresCredPath(env, paths)
		key = name + "\x00" + paths.PgSocketDir + "\x00" + cred
	default:
		return nil, fmt.Errorf("%w: %q", ErrEngineUnavailable, name)
	}
	m.enginesMu.Lock()
	defer m.enginesMu.Unlock()
	if e := m.engines[key]; e != nil {
		return e, nil
	}
	var e engine
	var err error
	if name == validate.EngineMariaDB {
		e, err = openMariaDB(ctx, paths, cred, supervised)
	} else {
		e, err = openPostgres(ctx, paths, cred)
	}
	if err != nil {
		return nil, err
	}
	m.engines[key] = e
	return e, nil
}

// Close closes every cached pool: at agent shutdown, and in tests that
// restart the servers.
func (m *Module) Close() {
	m.enginesMu.Lock()
	defer m.enginesMu.Unlock()
	for k, e := range m.engines {
		if c, ok := e.(interface{ close() }); ok {
			c.close()
		}
		delete(m.engines, k)
	}
}

func mariadbCredPath(env *actions.Env, paths platform.DBPaths) string {
	if paths.MariaDBAdminCnf != "" {
		return paths.MariaDBAdminCnf
	}
	return filepath.Join(env.DataDir, MariaDBAdminFile)
}

func postgresCredPath(env *actions.Env, paths platform.DBPaths) string {
	if paths.PgAdminPass != "" {
		return paths.PgAdminPass
	}
	return filepath.Join(env.DataDir, PostgresAdminFile)
}

// readCredFile reads a credentials file, refusing one that others can
// read: a file that leaked its mode has probably leaked its content.
func readCredFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("credentials file %s has mode %v; it must not be readable by group or others (0600)", path, fi.Mode().Perm())
	}
	return os.ReadFile(path)
}

// parseOptionFile reads user and password from the [client] group of a
// MariaDB option file (the format mariadb-dump reads with
// --defaults-extra-file, so one file serves both).
func parseOptionFile(b []byte) (user, password string, err error) {
	group := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' && line[len(line)-1] == ']' {
			group = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		if group != "client" {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		switch k {
		case "user":
			user = v
		case "password":
			password = v
		}
	}
	if user == "" || password == "" {
		return "", "", errors.New("no user and password in its [client] group")
	}
	return user, password, nil
}

// parsePgpass reads the user and password of the first line of a pgpass(5)
// file (host:port:database:user:password, '\' escaping ':' and '\').
func parsePgpass(b []byte) (user, password string, err error) {
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		var fields []string
		var cur strings.Builder
		for i := 0; i < len(line); i++ {
			switch c := line[i]; {
			case c == '\\' && i+1 < len(line):
				i++
				cur.WriteByte(line[i])
			case c == ':' && len(fields) < 4:
				fields = append(fields, cur.String())
				cur.Reset()
			default:
				cur.WriteByte(c)
			}
		}
		fields = append(fields, cur.String())
		if len(fields) != 5 || fields[3] == "" || fields[4] == "" {
			return "", "", errors.New("not a pgpass line host:port:database:user:password")
		}
		return fields[3], fields[4], nil
	}
	return "", "", errors.New("no pgpass line")
}

// writeSecretFile writes data to path atomically with mode 0600.
func writeSecretFile(path string, data []byte) error {
	return writeFileAtomic(path, data, 0o600)
}

// writeFileAtomic writes data to path atomically with mode, creating a
// missing directory for root alone.
func writeFileAtomic(path string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, mode, nil)
}

func fileExists(path string) (bool, error) {
	_, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}
