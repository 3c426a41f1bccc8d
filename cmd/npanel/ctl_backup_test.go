package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// npanel ctl backup through the real binary against a server in the
// test process (whose store the test drives as the backup controller
// would): every subcommand's happy path, --wait following a backup,
// a verification and a restore to their end, -o json, exit 2 with a
// message for bad input (the CLI's own checks and the server's
// INVALID_INPUT), exit 1 with the code for refusals, and an S3 secret
// read from a file or standard input that no output shows.
func TestBackupCLI(t *testing.T) {
	// The test plays the backup controller.
	s := testenv.StartServer(t, func(c *controlplane.Config) { c.Backup.Paused = true })
	ctx := context.Background()
	s.FakeNode(t, "n1", nil, 100, 100_000)
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "bk", DiskMB: 100, BandwidthMB: 100, Domains: 2, Mailboxes: 1, Databases: 2, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "clibk", Domain: "clibk.example.com", Plan: "bk"}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "clibk placed", func() bool {
		a, err := s.Admin.Account(ctx, "clibk")
		return err == nil && a != nil && a.NodeName() != ""
	})
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=" + s.URL()}
	if out, code := run(t, env, testenv.AdminPassword, "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	const secret = "cli-SECRET-key-0123456789abcdefghij"
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s3 := func(name string, extra ...string) []string {
		return append([]string{"ctl", "backup", "targets", "create", name, "--kind", "s3", "--endpoint", "https://s3.example.com",
			"--bucket", "npanel-backups", "--prefix", "c1", "--region", "us-east-1", "--access-key-id", "AKIDEXAMPLE"}, extra...)
	}
	ok := func(stdin string, want string, args ...string) string {
		t.Helper()
		out, code := run(t, env, stdin, args...)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("%v: exit %d, want %q in: %s", args, code, want, out)
		}
		if strings.Contains(out, secret) {
			t.Fatalf("%v: the output shows the secret key: %s", args, out)
		}
		return out
	}

	for _, args := range [][]string{
		{"ctl", "backup", "frobnicate"},
		{"ctl", "backup", "targets", "frobnicate"},
		{"ctl", "backup", "create"},
		{"ctl", "backup", "create", "clibk", "--target", "nowhere"}, // the server's INVALID_INPUT
		{"ctl", "backup", "list", "clibk", "--limit", "0"},
		{"ctl", "backup", "restore", "clibk-x"},
		{"ctl", "backup", "restore", "clibk-x", "--what", "bogus"},
		{"ctl", "backup", "restore", "clibk-x", "--what", "files", "--database", "clibk_db"},
		{"ctl", "backup", "restore", "clibk-x", "--what", "database", "--database", "clibk_db"},
		{"ctl", "backup", "restore", "clibk-x", "--what", "database", "--database", "clibk_db", "--into-database", "clibk_x", "--in-place"},
		{"ctl", "backup", "restore", "clibk-x", "--what", "mailbox"},
		{"ctl", "backup", "restore", "clibk-x", "--what", "zone", "--node", "n1"},
		{"ctl", "backup", "restore", "clibk-x", "--what", "all"},
		{"ctl", "backup", "schedule", "bk"},
		{"ctl", "backup", "schedule", "bk", "--target", "default", "--hour", "24"},
		{"ctl", "backup", "schedule", "bk", "--target", "default", "--keep-daily", "-1"},
		{"ctl", "backup", "schedule", "bk", "--off", "--hour", "3"},
		{"ctl", "backup", "targets", "create", "x", "--kind", "ftp"},
		{"ctl", "backup", "targets", "create", "x", "--kind", "local", "--node", "n1"},
		{"ctl", "backup", "targets", "create", "x", "--kind", "node"},
		{"ctl", "backup", "targets", "create", "x", "--kind", "node", "--node", "n1"}, // no backup role: the server's INVALID_INPUT
		{"ctl", "backup", "targets", "create", "Bad_Name", "--kind", "local"},
		s3("s3x"), // no secret file
		s3("s3x", "--secret-access-key-file", filepath.Join(dir, "missing")),
		s3("s3x", "--secret-access-key-file", "-"), // empty stdin
		append(s3("s3x", "--secret-access-key-file", secretFile), "--node", "n1"),
		{"ctl", "backup", "targets", "create", "s3x", "--kind", "s3", "--endpoint", "http://s3.example.com", "--bucket", "npanel-backups",
			"--region", "us-east-1", "--access-key-id", "AKIDEXAMPLE", "--secret-access-key-file", secretFile},
	} {
		out, code := run(t, env, "", args...)
		if code != 2 || len(strings.TrimSpace(out)) == 0 {
			t.Errorf("%v: exit %d, want 2 with a message: %s", args, code, out)
		}
		if strings.Contains(out, secret) {
			t.Errorf("%v: the output shows the secret key: %s", args, out)
		}
	}
	if ts, err := s.Store().ListBackupTargets(ctx); err != nil || len(ts) != 0 {
		t.Fatalf("refused commands stored targets: %+v, %v", ts, err)
	}

	ok("", "default", "ctl", "backup", "targets", "create", "default", "--kind", "local")
	ok("", "s3.example.com", append(s3("s3a", "--secret-access-key-file", secretFile), "-o", "json")...)
	ok(secret+"\n", "AKIDEXAMPLE", s3("s3b", "--secret-access-key-file", "-")...)
	out := ok("", `"name":"s3b"`, "ctl", "backup", "targets", "list", "-o", "json")
	if strings.Contains(out, "secret") {
		t.Errorf("targets list shows a secret: %s", out)
	}
	ok("", "s3a", "ctl", "backup", "targets", "delete", "s3a", "--yes")
	ok("", "3", "ctl", "backup", "schedule", "bk", "--target", "default", "--hour", "3", "--keep-daily", "5")
	ok("", `"enabled":false`, "ctl", "backup", "schedule", "bk", "--target", "default", "--off", "-o", "json")
	ok("", "no", "ctl", "backup", "schedule", "bk", "--off")

	// create --wait follows the backup to its end.
	finish := func(state store.BackupState, fn func(b *store.Backup)) {
		go func() {
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				// The pending one: ids order by the second they were made
				// in, then at random.
				bs, _, err := s.Store().ListBackups(ctx, "clibk", "", 0)
				i := slices.IndexFunc(bs, func(b store.Backup) bool { return b.Status.State == store.BackupPending })
				if err != nil || i < 0 {
					continue
				}
				b := bs[i]
				_, _ = s.Store().UpdateBackup(ctx, b.ID, func(b *store.Backup) ([]*store.ObjectTask, error) {
					b.Status.State = state
					b.Status.Contents = store.BackupContents{Files: true, Databases: []string{"clibk_shop"}, Zones: []string{"clibk.example.com"}}
					b.Status.SizeBytes, b.Status.FileCount = 4096, 12
					b.Status.AddEvent(time.Now(), strings.ToLower(string(state)), "by the test")
					if fn != nil {
						fn(b)
					}
					return nil, nil
				}, store.AuditEvent{})
				return
			}
		}()
	}
	finish(store.BackupSucceeded, nil)
	out = ok("", "SUCCEEDED", "ctl", "backup", "create", "clibk", "--wait", "--timeout", "30s", "-o", "json")
	var b client.Backup
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &b); err != nil || b.ID == "" || b.FileCount != 12 {
		t.Fatalf("create --wait -o json: %v: %s", err, out)
	}
	ok("", b.ID, "ctl", "backup", "list", "clibk")
	ok("", "clibk_shop", "ctl", "backup", "show", b.ID)
	// A backup already pending: exit 1 with the code.
	if _, err := s.Admin.CreateBackup(ctx, "clibk", ""); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, env, "", "ctl", "backup", "create", "clibk"); code != 1 || !strings.Contains(out, "RATE_LIMITED") {
		t.Errorf("create while one is pending: exit %d: %s", code, out)
	}
	finish(store.BackupFailed, func(b *store.Backup) { b.Status.Error = "disk full" })
	testenv.WaitFor(t, 10*time.Second, "pending backup failed", func() bool {
		bs, _, _ := s.Store().ListBackups(ctx, "clibk", "", 0)
		return len(bs) == 2 && slices.ContainsFunc(bs, func(b store.Backup) bool { return b.Status.State == store.BackupFailed })
	})

	// verify --wait follows the verification.
	go func() {
		// Not testenv.WaitFor: it would fail the test from this goroutine.
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if got, err := s.Store().GetBackup(ctx, b.ID); err == nil && got.VerifyRequested > 0 {
				break
			}
		}
		_, _ = s.Store().UpdateBackup(ctx, b.ID, func(b *store.Backup) ([]*store.ObjectTask, error) {
			b.Status.VerifiedGeneration, b.Status.VerifyOK, b.Status.VerifiedAt = b.VerifyRequested, true, time.Now()
			b.Status.AddEvent(time.Now(), "verified", "")
			return nil, nil
		}, store.AuditEvent{})
	}()
	ok("", "ok ", "ctl", "backup", "verify", b.ID, "--wait", "--timeout", "30s")

	// restore --wait follows the restore; a PARTIAL one is exit 1.
	restoreDone := func(state store.BackupState) {
		go func() {
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				rs, err := s.Store().ListRestores(ctx, "clibk")
				i := slices.IndexFunc(rs, func(r store.Restore) bool { return r.Status.State == store.BackupPending })
				if err != nil || i < 0 {
					continue
				}
				_, _ = s.Store().UpdateRestore(ctx, rs[i].ID, func(r *store.Restore) ([]*store.ObjectTask, error) {
					r.Status.State = state
					r.Status.Restored = []string{"files"}
					if state == store.BackupPartial {
						r.Status.Failed = []store.BackupItemFailure{{Item: "database:clibk_shop", Error: "no database service on the node"}}
					}
					return nil, nil
				}, store.AuditEvent{})
				return
			}
		}()
	}
	restoreDone(store.BackupSucceeded)
	ok("", "public_html", "ctl", "backup", "restore", b.ID, "--what", "files", "--path", "public_html", "--wait", "--timeout", "30s")
	restoreDone(store.BackupPartial)
	out, code := run(t, env, "", "ctl", "backup", "restore", b.ID, "--what", "all", "--in-place", "--yes", "--wait", "--timeout", "30s")
	if code != 1 || !strings.Contains(out, "PARTIAL") || !strings.Contains(out, "database:clibk_shop") {
		t.Errorf("partial restore: exit %d: %s", code, out)
	}
	ok("", "clibk_shop2", "ctl", "backup", "restore", b.ID, "--what", "database", "--database", "clibk_shop", "--into-database", "clibk_shop2")
	ok("", "PENDING", "ctl", "backup", "list", "clibk", "--restores")
	// Refusals by the server: exit 1 with the code.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ctl", "backup", "show", "clibk-nothing"}, "NOT_FOUND"},
		{[]string{"ctl", "backup", "restore-account", b.ID}, "CONFLICT"},
		{[]string{"ctl", "backup", "targets", "delete", "default", "--yes"}, "CONFLICT"},
		{[]string{"ctl", "backup", "delete", "clibk-nothing", "--yes"}, "NOT_FOUND"},
	} {
		if out, code := run(t, env, "", c.args...); code != 1 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, want 1 with %s: %s", c.args, code, c.want, out)
		}
	}
	ok("", "DELETING", "ctl", "backup", "delete", b.ID, "--yes")
}
