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
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// nobody runs pg_restore: its parser reads the archive's bytes, which come
// from elsewhere, and it needs nothing but its stdin and stdout.
const nobodyID = 65534

// ImportUntrustedPostgres replaces database name with a PostgreSQL dump
// made on another system (a cPanel archive's psql/DB.tar or DB.sql): a
// plain SQL dump, with or without pg_dump's \restrict line, or pg_dump's
// tar or custom format, which pg_restore turns into SQL without connecting
// anywhere (-f -, as nobody). Either way the SQL goes through the same
// restricted loader as ImportPostgresDump — a throw-away non-superuser
// role owning only the database, psql under a \restrict key of ours put
// before the dump's first line — never to a superuser. Ownership and
// privileges of the old system are left out (pg_restore --no-owner
// --no-privileges; in a plain dump pg_dump's one-line ALTER ... OWNER TO,
// GRANT and REVOKE statements): the objects become those of one of the
// database's users (never the admin's), its users get their grants from
// the import.
//
// The load is one transaction that commits only when the dump was read to
// its end (and pg_restore succeeded): a truncated archive leaves the
// database empty.
func (m *Module) ImportUntrustedPostgres(ctx context.Context, env *actions.Env, name string, dump io.Reader) error {
	e, log, unlock, err := m.begin(ctx, env, validate.EnginePostgreSQL, name)
	if err != nil {
		return err
	}
	defer unlock()
	pg, ok := e.(*postgres)
	if !ok {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED, "importing a PostgreSQL dump needs PostgreSQL")
	}
	// The database is dropped and made again for the load: its users'
	// grants on it go with it and are given back after.
	held, err := pg.databaseGrants(ctx, name)
	if err != nil {
		return err
	}
	// What the dump made is given to a user of the database, never to the
	// admin: owned by a superuser, a SECURITY DEFINER function, a view or
	// a rule of the dump would run as one.
	var owner string
	for u := range held {
		if slices.Contains(held[u], "CONNECT") && (owner == "" || u < owner) {
			owner = u
		}
	}
	if owner == "" {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_CONFLICT, "no database user holds %s: grant it to one first, who will own what the dump makes", name)
	}
	var rnd [32]byte
	_, _ = rand.Read(rnd[:])
	ourKey := hex.EncodeToString(rnd[:16])
	role := "npimport_" + hex.EncodeToString(rnd[16:22])
	pw := hex.EncodeToString(rnd[22:])

	br := bufio.NewReaderSize(dump, 64<<10)
	magic, _ := br.Peek(512)
	var sql io.Reader = br
	var restore *exec.Cmd
	var restoreErr limitedBuf
	if archiveFormat(magic) {
		restore = exec.CommandContext(ctx, filepath.Join(filepath.Dir(pg.paths.Psql), "pg_restore"),
			"--file=-", "--no-owner", "--no-privileges", "--no-tablespaces")
		restore.Env = []string{"PATH=/usr/bin:/bin"}
		restore.Dir = "/"
		restore.Stdin = br
		restore.Stderr = &restoreErr
		restore.SysProcAttr = &syscall.SysProcAttr{Setpgid: true,
			Credential: &syscall.Credential{Uid: nobodyID, Gid: nobodyID}}
		restore.WaitDelay = 5 * time.Second
		out, err := restore.StdoutPipe()
		if err != nil {
			return err
		}
		if err := restore.Start(); err != nil {
			return fmt.Errorf("pg_restore: %w", err)
		}
		defer func() {
			if restore.ProcessState == nil { // the load stopped early: pg_restore may block on a full pipe
				_ = syscall.Kill(-restore.Process.Pid, syscall.SIGKILL)
				_ = restore.Wait()
			}
		}()
		sql = out
	}
	sr := bufio.NewReaderSize(sql, 64<<10)
	head, theirKey, err := untrustedHeader(sr)
	if err != nil {
		return err
	}
	body := &plainFilter{r: sr, unrestrict: theirKey, atStart: true, done: func() error {
		if restore == nil {
			return nil
		}
		if err := restore.Wait(); err != nil {
			return fmt.Errorf("pg_restore: %w: %s", err, bytes.TrimSpace(restoreErr.b))
		}
		return nil
	}}
	src := io.MultiReader(strings.NewReader(postgresGuard+ourKey+"\nBEGIN;\n"), bytes.NewReader(head), body)
	lerr := body.outcome(pg.restricted(ctx, log, name, role, pw, owner, src))
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

// regrant gives the users their privileges on database name back (held).
func (pg *postgres) regrant(ctx context.Context, name string, held map[string][]string) error {
	for u, privs := range held {
		if _, err := pg.pool.Exec(ctx, "GRANT "+strings.Join(privs, ", ")+" ON DATABASE "+pgIdent(name)+" TO "+pgIdent(u)); err != nil {
			return fmt.Errorf("grant %q back on %q: %w", u, name, err)
		}
		if slices.Contains(privs, "CREATE") {
			if err := pg.convergeSchemaCreate(ctx, name, u, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// databaseGrants reads who holds which privilege on database name (not
// the admin).
func (pg *postgres) databaseGrants(ctx context.Context, name string) (map[string][]string, error) {
	rows, err := pg.pool.Query(ctx, `SELECT r.rolname, a.privilege_type FROM pg_database d
		CROSS JOIN LATERAL aclexplode(d.datacl) a JOIN pg_roles r ON r.oid = a.grantee
		WHERE d.datname = $1 AND r.rolname <> $2 AND NOT r.rolsuper`, name, pg.user)
	if err != nil {
		return nil, fmt.Errorf("grants on %q: %w", name, err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var u, p string
		if err := rows.Scan(&u, &p); err != nil {
			return nil, err
		}
		if slices.Contains(validate.DatabasePrivilegeNames(validate.EnginePostgreSQL), p) {
			out[u] = append(out[u], p)
		}
	}
	return out, rows.Err()
}

// grantImported gives the database's users (held) the use of what the
// dump made, which one of them owns after the load:
// on cPanel a user granted a database reaches all of its objects. A user
// granted the database later gets them with a new import or a GRANT of
// its own.
func (pg *postgres) grantImported(ctx context.Context, name string, held map[string][]string) error {
	users := make([]string, 0, len(held))
	for u := range held {
		users = append(users, u)
	}
	slices.Sort(users)
	c, err := pg.connectDB(ctx, name)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	var schemas []string
	rows, err := c.Query(ctx, `SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_' AND nspname <> 'information_schema'`)
	if err != nil {
		return fmt.Errorf("schemas of %q: %w", name, err)
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return err
		}
		schemas = append(schemas, s)
	}
	rows.Close()
	for _, u := range users {
		for _, s := range schemas {
			for _, q := range []string{
				"GRANT USAGE ON SCHEMA %s TO %s",
				"GRANT ALL ON ALL TABLES IN SCHEMA %s TO %s",
				"GRANT ALL ON ALL SEQUENCES IN SCHEMA %s TO %s",
				"GRANT ALL ON ALL ROUTINES IN SCHEMA %s TO %s",
			} {
				if _, err := c.Exec(ctx, fmt.Sprintf(q, pgIdent(s), pgIdent(u))); err != nil {
					return fmt.Errorf("grant the imported objects of %q to %q: %w", name, u, err)
				}
			}
		}
	}
	return nil
}

// archiveFormat says whether a dump starts like pg_dump's custom
// ("PGDMP") or tar (ustar magic at 257) format rather than plain SQL.
func archiveFormat(b []byte) bool {
	return bytes.HasPrefix(b, []byte("PGDMP")) || (len(b) >= 262 && string(b[257:262]) == "ustar")
}

// untrustedHeader reads the comment and blank lines a plain dump starts
// with, up to its \restrict line if it has one, and returns them without
// that line, and its key ("" without one).
func untrustedHeader(br *bufio.Reader) ([]byte, string, error) {
	var head []byte
	for range maxHeaderLines {
		peek, _ := br.Peek(br.Size())
		i := bytes.IndexByte(peek, '\n')
		if i < 0 {
			break
		}
		t := strings.TrimRight(string(peek[:i]), " \r")
		if guardLine(postgresGuard, t) {
			_, _ = br.Discard(i + 1)
			return head, strings.TrimPrefix(t, postgresGuard), nil
		}
		if t != "" && !strings.HasPrefix(t, "--") {
			break
		}
		head = append(head, peek[:i+1]...)
		_, _ = br.Discard(i + 1)
	}
	return head, "", nil
}

// ownershipRe matches pg_dump's one-line statements about ownership and
// privileges (roles of the old system that do not exist here), and the
// COMMENT ON EXTENSION plpgsql that dumps before PostgreSQL 11 carry,
// which only the extension's owner may run.
var ownershipRe = regexp.MustCompile(`^(?:ALTER [A-Z ]+ .+ OWNER TO .+|GRANT .+|REVOKE .+|ALTER DEFAULT PRIVILEGES .+|SET (?:SESSION AUTHORIZATION|ROLE) .+|COMMENT ON EXTENSION .+ IS .+);$`)

// copyStartRe matches the line that starts COPY data (until "\.").
var copyStartRe = regexp.MustCompile(`^COPY .+ FROM stdin;$`)

// plainFilter passes a plain dump through, line by line, without its
// \unrestrict line and outside COPY data without the statements
// ownershipRe matches; at the end of the dump it asks done and, only if it
// says so, ends the transaction with COMMIT. A line longer than the buffer
// passes as it is.
type plainFilter struct {
	r          *bufio.Reader
	unrestrict string
	atStart    bool // at the start of a line
	inCopy     bool
	inLO       bool   // between the BEGIN; and COMMIT; of large objects
	held       []byte // a BEGIN; line not passed yet
	pending    []byte
	done       func() error
	err        error
	committed  bool
	finished   bool
}

func (f *plainFilter) Read(p []byte) (int, error) {
	for len(f.pending) == 0 {
		if f.finished {
			return 0, io.EOF
		}
		s, err := f.r.ReadSlice('\n')
		whole := f.atStart && (err == nil || errors.Is(err, io.EOF))
		f.atStart = err == nil
		f.pending = f.pending[:0]
		if whole {
			f.pending = f.line(f.pending, s)
		} else if len(s) > 0 {
			f.pending = append(append(f.pending, f.held...), s...)
			f.held = nil
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			f.pending = append(f.pending, f.held...)
			f.held = nil
			f.finished = true
			if !errors.Is(err, io.EOF) {
				f.err = err
			} else if derr := f.done(); derr != nil {
				f.err = derr
			} else {
				f.committed = true
				f.pending = append(f.pending, "\nCOMMIT;\n"...)
			}
		}
	}
	n := copy(p, f.pending)
	f.pending = f.pending[n:]
	return n, nil
}

// outcome is the load's error given psql's: the filter's own (a read
// error, or done's), or psql's, or an error when psql stopped before the
// end of the dump (its COMMIT never sent).
func (f *plainFilter) outcome(psql error) error {
	switch {
	case f.err != nil:
		return errors.Join(f.err, psql)
	case psql == nil && !f.committed:
		return errors.New("the dump was not read to its end: nothing imported")
	}
	return psql
}

// loPrefixes start the lines pg_dump writes between the BEGIN; and
// COMMIT; around the contents of large objects.
var loPrefixes = []string{"SELECT pg_catalog.lo_open(", "SELECT pg_catalog.lowrite(", "SELECT pg_catalog.lo_close("}

// line appends to out what passes of the whole line s, following COPY
// data. The BEGIN; and COMMIT; pg_dump (and pg_restore --file=-) write
// around the contents of large objects are left out: the COMMIT would end
// the load's own transaction halfway through the dump. A BEGIN; line (and
// the blank lines after it) is held until the next line shows whether it
// is one (a SELECT pg_catalog.lo_open); other transaction statements pass (an END; ends
// a PL/pgSQL function's body), and a load that fails or ends early is
// undone by making the database again (emptyAfterFailure).
func (f *plainFilter) line(out, s []byte) []byte {
	t := string(bytes.TrimRight(s, " \r\n"))
	if f.held != nil {
		if t == "" { // pg_dump writes "BEGIN;" and a blank line
			f.held = append(f.held, s...)
			return out
		}
		if strings.HasPrefix(t, loPrefixes[0]) {
			f.inLO = true
		} else {
			out = append(out, f.held...)
		}
		f.held = nil
	}
	if f.inCopy {
		f.inCopy = t != `\.`
		return append(out, s...)
	}
	if f.inLO {
		if t == "COMMIT;" {
			f.inLO = false
			return out
		}
		if t == "" || slices.ContainsFunc(loPrefixes, func(p string) bool { return strings.HasPrefix(t, p) }) {
			return append(out, s...)
		}
		f.inLO = false
	}
	switch {
	case t == "BEGIN;":
		f.held = append(f.held[:0], s...)
		return out
	case f.unrestrict != "" && t == `\unrestrict `+f.unrestrict:
		return out
	case copyStartRe.MatchString(t):
		f.inCopy = true
	case ownershipRe.MatchString(t):
		return out
	}
	return append(out, s...)
}
