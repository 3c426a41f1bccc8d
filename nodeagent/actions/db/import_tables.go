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
	"github.com/npanel/npanel/validate"
)

// ImportTables loads an untrusted MariaDB dump of some tables (as
// TablesDumpCommand makes it: DROP TABLE IF EXISTS, CREATE TABLE, rows)
// into the existing database name, leaving its other tables as they are.
// It is ImportDump without the drop of the database: the same throw-away
// user with privileges on that database only, the client in sandbox mode
// whatever the dump says. A failed load can leave some tables replaced
// and not others; the caller then replaces the whole database.
func (m *Module) ImportTables(ctx context.Context, env *actions.Env, name string, dump io.Reader) error {
	e, log, unlock, err := m.begin(ctx, env, validate.EngineMariaDB, name)
	if err != nil {
		return err
	}
	defer unlock()
	md, ok := e.(*mariadb)
	if !ok {
		return actions.Fail(agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED, "importing tables needs MariaDB")
	}
	if ok, err := md.databaseExists(ctx, name); err != nil {
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
	c.Stdin = io.MultiReader(strings.NewReader(mariadbGuard+"\n"), br)
	var out limitedBuf
	c.Stdout, c.Stderr = &out, &out
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.WaitDelay = 5 * time.Second
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(md.paths.MariadbClient), err, bytes.TrimSpace(out.b))
	}
	return nil
}
