package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// npanel ctl mail through the real binary, on an account no node has taken
// yet: bad input exits 2 with a message (the CLI's own checks and the
// server's INVALID_INPUT), a missing object exits 1 with NOT_FOUND, the
// listings work, and a change before placement is refused, not queued. The
// API and controller are tested against a simulated mail agent in
// controlplane's TestMailRBAC and TestMailboxLifecycle.
func TestCLIMail(t *testing.T) {
	s := startServer(t)
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=http://" + s.api}
	pw, _ := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
	if out, code := run(t, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "plan", "create", "mails", "--mailboxes", "2"); code != 0 {
		t.Fatalf("plan create: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "account", "create", "climail", "--domain", "climail.example.com", "--plan", "mails"); code != 0 {
		t.Fatalf("account create: exit %d: %s", code, out)
	}
	for _, args := range [][]string{
		{"ctl", "mail", "mailbox", "create", "climail", "bad@@climail.example.com"},
		{"ctl", "mail", "mailbox", "create", "climail", "a/b@climail.example.com"},
		{"ctl", "mail", "mailbox", "create", "climail", "x@other.example.com"},
		{"ctl", "mail", "mailbox", "create", "climail", "x@climail.example.com", "--quota", "-5"},
		{"ctl", "mail", "mailbox", "quota", "x@climail.example.com", "lots"},
		{"ctl", "mail", "mailbox", "list", "climail", "--limit", "0"},
		{"ctl", "mail", "forwarder", "create", "a@climail.example.com"},
		{"ctl", "mail", "autoresponder", "set", "x@climail.example.com", "--subject", "Away"},
		{"ctl", "mail", "autoresponder", "set", "x@climail.example.com", "--subject", "Away", "--body", "Back soon", "--until", "tomorrow"},
		{"ctl", "mail", "spam", "set", "climail.example.com", "--action", "bounce"},
		{"ctl", "mail", "spam", "train", "x@climail.example.com", "first"},
		{"ctl", "mail", "spf", "set", "climail.example.com", "v=spf2 all"},
		{"ctl", "mail", "dmarc", "set", "climail.example.com", "p=none"},
		{"ctl", "mail", "logs", "x@climail.example.com", "--hours", "500"},
		{"ctl", "mail", "queue", "list", "n1", "--limit", "5000"},
		{"ctl", "mail", "frobnicate"},
	} {
		out, code := run(t, env, "", args...)
		if code != 2 || len(strings.TrimSpace(out)) == 0 {
			t.Errorf("%v: exit %d, want 2 with a message: %s", args, code, out)
		}
	}
	if out, code := run(t, env, "weak\n", "ctl", "mail", "mailbox", "create", "climail", "info@climail.example.com", "--password-stdin"); code != 2 || !strings.Contains(out, "password") {
		t.Errorf("weak password: exit %d: %s", code, out)
	}
	for _, args := range [][]string{
		{"ctl", "mail", "mailbox", "delete", "x@nowhere.example.com", "--yes"},
		{"ctl", "mail", "dkim", "enable", "nowhere.example.com"},
		{"ctl", "mail", "queue", "flush", "no-such-node"},
	} {
		if out, code := run(t, env, "", args...); code != 1 || !strings.Contains(out, "NOT_FOUND") {
			t.Errorf("%v: exit %d, want 1 with NOT_FOUND: %s", args, code, out)
		}
	}
	for _, args := range [][]string{
		{"ctl", "mail", "mailbox", "list", "climail", "-o", "json"},
		{"ctl", "mail", "forwarder", "list", "climail", "-o", "json"},
		{"ctl", "mail", "domains", "climail", "-o", "json"},
	} {
		if out, code := run(t, env, "", args...); code != 0 || strings.TrimSpace(out) != "[]" {
			t.Errorf("%v: exit %d: %s", args, code, out)
		}
	}
	// No node has the account yet: the change is refused, not queued.
	if out, code := run(t, env, "", "ctl", "mail", "mailbox", "create", "climail", "info@climail.example.com"); code != 1 || !strings.Contains(out, "CONFLICT") {
		t.Errorf("create before placement: exit %d: %s", code, out)
	}
	// A delete asks first; without a terminal and --yes it does nothing.
	if out, code := run(t, env, "", "ctl", "mail", "forwarder", "delete", "team@climail.example.com"); code == 0 {
		t.Errorf("delete without --yes: exit 0: %s", out)
	}
}
