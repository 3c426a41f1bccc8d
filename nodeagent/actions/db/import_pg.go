package db

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/jackc/pgx/v5"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// ImportPostgresDump is ImportDump for PostgreSQL: it replaces database
// name with the untrusted plain dump read from dump (pg_dump --no-owner
// --no-privileges, as DumpCommand makes it), which must carry pg_dump's
// \restrict guard in its header. The dump is loaded
//
//   - by a throw-away role that is no superuser and owns only this
//     database for the load (so COPY ... TO/FROM PROGRAM, server files,
//     other databases, roles and GRANTs beyond the database all fail),
//     its objects handed to the database's owner role (pgOwnerRole, never
//     a superuser) and the role dropped afterwards;
//   - by psql under a \restrict of a key the dump cannot know: the
//     dump's own \restrict line is replaced with it and its closing
//     \unrestrict dropped, so psql refuses every meta-command in it
//     (\! runs a shell, \connect, \copy, \o ...), parsed as psql parses;
//   - with ON_ERROR_STOP in one transaction, committed only when the dump
//     ends with pg_dump's completion line: the first error or an early end
//     undoes it all (and a failed load leaves the database empty:
//     emptyAfterFailure). The dump passes through the same filter as
//     ImportUntrustedPostgres (plainFilter), which keeps the BEGIN;/COMMIT;
//     around large objects from ending the load's transaction.
//
// The database's users get their privileges on it back (it is made
// again) and the use of what the dump made, as with
// ImportUntrustedPostgres: the dump carries no ownership or privileges.
func (m *Module) ImportPostgresDump(ctx context.Context, env *actions.Env, name string, dump io.Reader) error {
	e, log, unlock, err := m.begin(ctx, env, validate.EnginePostgreSQL, name)
	if err != nil {
		return err
	}
	defer unlock()
	pg, ok := e.(*postgres)
	if !ok {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED, "importing a PostgreSQL dump needs PostgreSQL")
	}
	return pg.importDump(ctx, log, name, dump)
}

// importDump is ImportPostgresDump with the database's lock held.
func (pg *postgres) importDump(ctx context.Context, log *slog.Logger, name string, dump io.Reader) error {
	cc, err := restoreCommand(pg, name)
	if err != nil {
		return err
	}
	tail := &tailBuf{}
	br := bufio.NewReaderSize(io.TeeReader(dump, tail), 64<<10)
	head, err := cc.ReadHeader(br)
	if err != nil {
		return err
	}
	head, guard := cutLastLine(head)
	theirKey := strings.TrimSpace(strings.TrimPrefix(guard, postgresGuard))
	var rnd [32]byte
	_, _ = rand.Read(rnd[:])
	ourKey := hex.EncodeToString(rnd[:16])
	role := "npimport_" + hex.EncodeToString(rnd[16:22])
	pw := hex.EncodeToString(rnd[22:])

	held, err := pg.databaseGrants(ctx, name)
	if err != nil {
		return err
	}
	trailer := pg.dumpTrailer()
	body := &plainFilter{r: br, unrestrict: theirKey, atStart: true, done: func() error {
		if !complete(tail.n, tail.tail, trailer) {
			return fmt.Errorf("the dump ended after %d bytes without its completion line %q: incomplete", tail.n, trailer)
		}
		return nil
	}}
	src := io.MultiReader(strings.NewReader(postgresGuard+ourKey+"\nBEGIN;\n"), bytes.NewReader(head), body)
	lerr := body.outcome(pg.restricted(ctx, log, name, role, pw, "", src))
	if lerr != nil {
		lerr = errors.Join(lerr, pg.emptyAfterFailure(ctx, name))
	}
	// The database was made again, even when the load then failed: its
	// users get their grants on it back either way.
	if err := pg.regrant(ctx, name, held); err != nil {
		return errors.Join(lerr, err)
	}
	if lerr != nil {
		return lerr
	}
	return pg.grantImported(ctx, name, held)
}

// emptyAfterFailure makes database name again, empty, after a load that
// failed or ended early: what it committed before (a COMMIT of the dump's
// own ends the load's transaction) does not stay.
func (pg *postgres) emptyAfterFailure(ctx context.Context, name string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := recreate(rctx, pg, name, true); err != nil {
		return fmt.Errorf("empty the database after the failed load: %w", err)
	}
	return nil
}

// restricted recreates database name empty and loads the SQL read from
// src into it as a throw-away role (password pw) that owns only the
// database, with psql; src must start by restricting psql (\restrict
// with a key src cannot know) before anything of the dump. The
// transaction is src's own: it begins it and commits only when complete,
// so that a truncated src commits nothing (plainFilter). What the load
// made is handed to owner afterwards, or with owner "" to the database's
// owner role (pgOwnerRole).
func (pg *postgres) restricted(ctx context.Context, log *slog.Logger, name, role, pw, owner string, src io.Reader) (err error) {
	if err := recreate(ctx, pg, name, true); err != nil {
		return err
	}
	v, err := newScramVerifier(pw)
	if err != nil {
		return err
	}
	lit, err := pgVerifierLiteral(v)
	if err != nil {
		return err
	}
	if _, err := pg.pool.Exec(ctx, "CREATE ROLE "+pgIdent(role)+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD "+lit); err != nil {
		return fmt.Errorf("import role: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := pg.dropImportRole(dctx, name, role, owner); derr != nil {
			log.Error("drop the import's temporary database role", "role", role, "err", derr)
			// What the load made may not have its owner: the import fails.
			err = errors.Join(err, fmt.Errorf("hand over what the import made: %w", derr))
		}
	}()
	if _, err := pg.pool.Exec(ctx, "ALTER DATABASE "+pgIdent(name)+" OWNER TO "+pgIdent(role)); err != nil {
		return fmt.Errorf("import role: %w", err)
	}
	// Its credentials, 0600 beside the admin's (a root-only directory).
	pass, err := os.CreateTemp(filepath.Dir(pg.cred), ".import-*.pgpass")
	if err != nil {
		return err
	}
	defer os.Remove(pass.Name())
	_, werr := fmt.Fprintf(pass, "*:*:*:%s:%s\n", role, pw)
	if err := pass.Close(); werr != nil || err != nil {
		return fmt.Errorf("write the import's credentials: %v %v", werr, err)
	}

	argv := []string{
		"--host=" + pg.paths.PgSocketDir,
		"--port=" + strconv.Itoa(pg.paths.PgPort),
		"--username=" + role,
		"--no-password", "--quiet", "--no-psqlrc",
		"--set=ON_ERROR_STOP=1",
		"--dbname=" + name,
	}
	c := exec.CommandContext(ctx, pg.paths.Psql, argv...)
	c.Env = []string{"PATH=/usr/bin:/bin", "PGPASSFILE=" + pass.Name(), "PGCONNECT_TIMEOUT=10"}
	c.Stdin = src
	var out limitedBuf
	c.Stdout, c.Stderr = &out, &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.WaitDelay = 5 * time.Second
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(pg.paths.Psql), err, bytes.TrimSpace(out.b))
	}
	return nil
}

// dropImportRole gives what role made in the database to owner (with ""
// to the database's owner role, never the admin: owned by a superuser, a
// SECURITY DEFINER function, a view or a rule of the dump would run as
// one) and the database itself to the admin, then drops role.
func (p *postgres) dropImportRole(ctx context.Context, name, role, owner string) error {
	var errs []error
	// Before the admin connects to the database: what its owner (role)
	// may have set on it is taken back.
	serr := p.resetDatabaseSettings(ctx, name, role)
	if serr != nil {
		errs = append(errs, serr)
	}
	if owner == "" || owner == p.user {
		var err error
		if owner, err = p.ensureOwnerRole(ctx, name); err != nil {
			// Without an owner that is no superuser nothing is handed
			// over: DROP OWNED below drops what the load made.
			errs = append(errs, err)
		}
	}
	if serr != nil {
		// Not connecting to a database whose settings may be the dump's:
		// what the load made stays the role's, which is then not dropped.
	} else if c, err := p.connectDB(ctx, name); err != nil {
		errs = append(errs, err)
	} else {
		// REASSIGN also hands the database itself over (a shared object);
		// it goes back to the admin below.
		if owner != "" {
			if _, err := c.Exec(ctx, "REASSIGN OWNED BY "+pgIdent(role)+" TO "+pgIdent(owner)); err != nil {
				errs = append(errs, err)
			}
		}
		if _, err := c.Exec(ctx, "DROP OWNED BY "+pgIdent(role)); err != nil {
			errs = append(errs, err)
		}
		_ = c.Close(ctx)
	}
	if _, err := p.pool.Exec(ctx, "ALTER DATABASE "+pgIdent(name)+" OWNER TO "+pgIdent(p.user)); err != nil {
		errs = append(errs, err)
	}
	if _, err := p.pool.Exec(ctx, "DROP ROLE IF EXISTS "+pgIdent(role)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// resetDatabaseSettings takes back from database name, as the admin
// (through the pool, connected to the maintenance database), what its
// owner role — a load's throw-away role — could change on it: settings
// of ALTER DATABASE ... SET (a search_path through a schema of the
// dump's would have the admin's later connections call its functions as
// a superuser; default_transaction_read_only, statement_timeout ...) and
// of ALTER ROLE ... IN DATABASE ... SET for any role (the database was
// made anew before the load: none are anyone's but the load's);
// ALLOW_CONNECTIONS, IS_TEMPLATE and CONNECTION LIMIT; and the privileges
// on the database it granted (to PUBLIC, to other tenants' roles): the
// database's users get theirs back after (regrant).
func (p *postgres) resetDatabaseSettings(ctx context.Context, name, role string) error {
	db := pgIdent(name)
	for _, q := range []string{
		"ALTER DATABASE " + db + " RESET ALL",
		"ALTER DATABASE " + db + " WITH ALLOW_CONNECTIONS true IS_TEMPLATE false CONNECTION LIMIT -1",
	} {
		if _, err := p.pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("reset the settings of database %q: %w", name, err)
		}
	}
	rows, err := p.pool.Query(ctx, `SELECT r.rolname FROM pg_catalog.pg_db_role_setting s
		JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
		WHERE d.datname = $1
		UNION
		SELECT r.rolname FROM pg_catalog.pg_database d CROSS JOIN LATERAL pg_catalog.aclexplode(d.datacl) a
		JOIN pg_catalog.pg_roles r ON r.oid = a.grantee WHERE d.datname = $1 AND r.rolname NOT IN ($2, $3)`, name, p.user, role)
	if err != nil {
		return fmt.Errorf("settings of database %q: %w", name, err)
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("settings of database %q: %w", name, err)
	}
	qs := []string{"REVOKE ALL ON DATABASE " + db + " FROM PUBLIC"}
	for _, r := range roles {
		qs = append(qs, "ALTER ROLE "+pgIdent(r)+" IN DATABASE "+db+" RESET ALL")
		if r != p.user && r != role {
			qs = append(qs, "REVOKE ALL ON DATABASE "+db+" FROM "+pgIdent(r)+" CASCADE")
		}
	}
	for _, q := range qs {
		if _, err := p.pool.Exec(ctx, q); err != nil {
			return fmt.Errorf("reset the settings of database %q: %w", name, err)
		}
	}
	return nil
}

// cutLastLine splits b (lines, ending in a newline) before its last line
// and returns that line without its line end.
func cutLastLine(b []byte) ([]byte, string) {
	t := bytes.TrimRight(b, "\r\n")
	i := bytes.LastIndexByte(t, '\n') + 1
	return b[:i], strings.TrimRight(string(t[i:]), " \r")
}
