package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// npanel ctl db through the real binary, on an account that no node has
// taken yet: bad input exits 2 with the server's message, a missing object
// exits 1 with NOT_FOUND, and the listing works. The end-to-end path on a
// real MariaDB is controlplane's TestDatabasesEndToEnd.
func TestCLIDatabases(t *testing.T) {
	s := startServer(t)
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=http://" + s.api}
	pw, _ := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
	if out, code := run(t, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "plan", "create", "dbs", "--databases", "1"); code != 0 {
		t.Fatalf("plan create: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "account", "create", "clidb", "--domain", "clidb.example.com", "--plan", "dbs"); code != 0 {
		t.Fatalf("account create: exit %d: %s", code, out)
	}

	for _, args := range [][]string{
		{"ctl", "db", "create", "clidb", "Bad-Name"},
		{"ctl", "db", "create", "clidb", "x;drop"},
		{"ctl", "db", "create", "clidb", "app", "--engine", "oracle"},
		{"ctl", "db", "delete", "clidb", "otheraccount_app"},
		{"ctl", "db", "grant", "clidb", "clidb_app", "clidb_web", "SELECT,FILE"},
		{"ctl", "db", "user-create", "clidb"},
		{"ctl", "db", "frobnicate"},
	} {
		out, code := run(t, env, "", args...)
		if code != 2 || len(strings.TrimSpace(out)) == 0 {
			t.Errorf("%v: exit %d, want 2 with a message: %s", args, code, out)
		}
	}
	if out, code := run(t, env, "weak\n", "ctl", "db", "passwd", "clidb", "clidb_web", "--password-stdin"); code != 2 || !strings.Contains(out, "password") {
		t.Errorf("weak password: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "db", "delete", "clidb", "clidb_app"); code != 1 || !strings.Contains(out, "NOT_FOUND") {
		t.Errorf("delete of a missing database: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "db", "list", "clidb", "-o", "json"); code != 0 || !strings.Contains(out, `"databases":[]`) {
		t.Errorf("db list: exit %d: %s", code, out)
	}
	// No node has the account yet: the change is refused, not queued.
	if out, code := run(t, env, "", "ctl", "db", "create", "clidb", "app"); code != 1 || !strings.Contains(out, "CONFLICT") {
		t.Errorf("create before placement: exit %d: %s", code, out)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 40: "3.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
