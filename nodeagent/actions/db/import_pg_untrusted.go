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
// GRANT and REVOKE statements): the objects become the admin's, the
// account's users get their grants from the import.
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
	lerr := pg.restricted(ctx, log, name, role, pw, true, src)
	if body.err != nil {
		return body.err
	}
	if lerr != nil {
		return lerr
	}
	if !body.committed {
		return errors.New("the dump was not read to its end: nothing imported")
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
// privileges: roles of the old system that do not exist here.
var ownershipRe = regexp.MustCompile(`^(?:ALTER [A-Z ]+ .+ OWNER TO .+|GRANT .+|REVOKE .+|ALTER DEFAULT PRIVILEGES .+|SET (?:SESSION AUTHORIZATION|ROLE) .+);$`)

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
		if len(s) > 0 && !(whole && f.drop(s)) {
			f.pending = append(f.pending[:0], s...)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
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

// drop says whether the whole line s is left out, following COPY data.
func (f *plainFilter) drop(s []byte) bool {
	t := string(bytes.TrimRight(s, " \r\n"))
	if f.inCopy {
		f.inCopy = t != `\.`
		return false
	}
	switch {
	case f.unrestrict != "" && t == `\unrestrict `+f.unrestrict:
		return true
	case copyStartRe.MatchString(t):
		f.inCopy = true
	case ownershipRe.MatchString(t):
		return true
	}
	return false
}
