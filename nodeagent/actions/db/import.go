package db

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// This file is the db module's surface for importing dumps made elsewhere
// (cPanel archives). Such a dump is not trusted: it is loaded by a
// throw-away MariaDB user that holds privileges on the target database
// only, never by the admin, so that a GRANT, a CREATE USER, a USE of
// another database or a DEFINER of someone else in it fails instead of
// reaching beyond the database; and the client runs in sandbox mode
// whatever the dump says, so that it refuses client commands (\! runs a
// shell).

// isSandboxLine says whether line is the sandbox comment mariadb-dump
// writes first (both spellings seen in the wild).
func isSandboxLine(line string) bool {
	t := strings.TrimSpace(line)
	return t == `/*M!999999\- enable the sandbox mode */` || t == `/*!999999\- enable the sandbox mode */`
}

// ImportDump replaces the MariaDB database name with the plain SQL dump
// read from dump: the database is dropped and created empty, then loaded.
// A first line that is the dump's own sandbox comment is dropped (the
// restore puts its own first).
func (m *Module) ImportDump(ctx context.Context, env *actions.Env, name string, dump io.Reader) error {
	return m.importMaria(ctx, env, name, dump, true, nil, nil)
}

// ImportTables loads an untrusted MariaDB dump of some tables (as
// TablesDumpCommand makes it: DROP TABLE IF EXISTS, CREATE TABLE, rows)
// into the existing database name, leaving its other tables as they are:
// ImportDump without the drop of the database. A failed load can leave
// some tables replaced and not others; the caller then replaces the whole
// database.
func (m *Module) ImportTables(ctx context.Context, env *actions.Env, name string, dump io.Reader) error {
	return m.importMaria(ctx, env, name, dump, false, nil, nil)
}

// importMaria loads dump into database name (dropped and created empty
// first with replace, else it must exist) as a throw-away user with
// privileges on that database only, the client in sandbox mode whatever
// the dump says; wrap is applied to the dump after its sandbox line, and
// after runs once the load succeeded, with the loader's name, before the
// loader is dropped.
func (m *Module) importMaria(ctx context.Context, env *actions.Env, name string, dump io.Reader, replace bool, wrap func(io.Reader) io.Reader, after func(md *mariadb, loader string) error) error {
	e, log, unlock, err := m.begin(ctx, env, "mariadb", name)
	if err != nil {
		return err
	}
	defer unlock()
	md, ok := e.(*mariadb)
	if !ok {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED, "importing a dump needs MariaDB")
	}
	if replace {
		if err := recreate(ctx, md, name, true); err != nil {
			return err
		}
	} else if ok, err := md.databaseExists(ctx, name); err != nil {
		return err
	} else if !ok {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_NOT_FOUND, "database %q does not exist", name)
	}
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	user := "npimport_" + hex.EncodeToString(rnd[:6])
	pw := hex.EncodeToString(rnd[6:])
	acct := account(user, "localhost")
	if _, err := md.db.ExecContext(ctx, "CREATE USER "+acct+" IDENTIFIED BY PASSWORD ?", nativeHash(pw)); err != nil {
		return fmt.Errorf("import user: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := md.db.ExecContext(dctx, "DROP USER IF EXISTS "+acct); err != nil {
			log.Error("drop the import's temporary database user", "user", user, "err", err)
		}
	}()
	if _, err := md.db.ExecContext(ctx, "GRANT ALL PRIVILEGES ON "+mysqlGrantDB(name)+".* TO "+acct); err != nil {
		return fmt.Errorf("import user: %w", err)
	}
	// Its credentials, 0600 beside the admin's (a root-only directory).
	cnf, err := os.CreateTemp(filepath.Dir(md.cred), ".import-*.cnf")
	if err != nil {
		return err
	}
	defer os.Remove(cnf.Name())
	_, werr := fmt.Fprintf(cnf, "[client]\nuser=%s\npassword=%s\n", user, pw)
	if err := cnf.Close(); werr != nil || err != nil {
		return fmt.Errorf("write the import's credentials: %v %v", werr, err)
	}

	br := bufio.NewReaderSize(dump, 64<<10)
	if first, err := br.Peek(64); len(first) > 0 && (err == nil || err == io.EOF || err == bufio.ErrBufferFull) {
		line, _, _ := bytes.Cut(first, []byte("\n"))
		if isSandboxLine(string(line)) {
			if _, err := br.ReadSlice('\n'); err != nil && err != io.EOF {
				return err
			}
		}
	}
	c := exec.CommandContext(ctx, md.paths.MariadbClient,
		// Must come first; keeps the password off the command line.
		"--defaults-extra-file="+cnf.Name(),
		"--socket="+md.socket,
		"--default-character-set=utf8mb4",
		"--batch",
		"--database="+name,
	)
	c.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	var body io.Reader = br
	if wrap != nil {
		body = wrap(br)
	}
	c.Stdin = io.MultiReader(strings.NewReader(mariadbGuard+"\n"), body)
	var out limitedBuf
	c.Stdout, c.Stderr = &out, &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.WaitDelay = 5 * time.Second
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(md.paths.MariadbClient), err, bytes.TrimSpace(out.b))
	}
	if after != nil {
		return after(md, user)
	}
	return nil
}
