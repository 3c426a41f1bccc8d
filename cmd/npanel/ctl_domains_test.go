package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// npanel ctl dns zone delete, dns reverse add/delete, domain add
// --alias-of and domain logs through the real binary: usage errors exit 2
// before anything is sent, API refusals exit 1 or 2 with their code, and
// the deletes work with --yes (scripts are never asked).
func TestCLIDomainsAndZones(t *testing.T) {
	s := startServer(t)
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=http://" + s.api}
	pw, _ := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
	if out, code := run(t, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "plan", "create", "doms", "--domains", "3"); code != 0 {
		t.Fatalf("plan create: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "account", "create", "clidom", "--domain", "clidom.example.com", "--plan", "doms"); code != 0 {
		t.Fatalf("account create: exit %d: %s", code, out)
	}

	for _, args := range [][]string{
		{"ctl", "dns", "zone", "delete"},
		{"ctl", "dns", "reverse", "delete"},
		{"ctl", "domain", "add", "clidom", "park.example.net", "--alias-of", "clidom.example.com", "--docroot", "x"},
		{"ctl", "domain", "logs", "clidom.example.com", "-n", "0"},
		{"ctl", "domain", "logs", "clidom.example.com", "-n", "1001"},
		{"ctl", "domain", "logs", "not a domain"},
		{"ctl", "dns", "zone", "delete", "in-addr.arpa.bad..", "--yes"},
	} {
		if out, code := run(t, env, "", args...); code != 2 || strings.TrimSpace(out) == "" {
			t.Errorf("%v: exit %d, want 2 with a message: %s", args, code, out)
		}
	}
	if out, code := run(t, env, "", "ctl", "domain", "logs", "nobody.example.org"); code != 1 || !strings.Contains(out, "NOT_FOUND") {
		t.Errorf("logs of a domain nobody serves: exit %d: %s", code, out)
	}

	// A parked domain, shown as such.
	out, code := run(t, env, "", "ctl", "domain", "add", "clidom", "park.example.net", "--alias-of", "clidom.example.com")
	if code != 0 || !strings.Contains(out, "Alias of:") {
		t.Fatalf("domain add --alias-of: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "domain", "remove", "clidom", "park.example.net", "--yes"); code != 0 {
		t.Errorf("domain remove: exit %d: %s", code, out)
	}

	// Reverse zones: the old spelling creates, add and delete name the
	// two directions.
	if out, code := run(t, env, "", "ctl", "dns", "reverse", "192.0.2.0/24"); code != 0 || !strings.Contains(out, "2.0.192.in-addr.arpa") {
		t.Fatalf("dns reverse CIDR: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "dns", "reverse", "add", "198.51.100.0/24"); code != 0 {
		t.Fatalf("dns reverse add: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "dns", "zone", "delete", "2.0.192.in-addr.arpa", "--yes"); code != 2 || !strings.Contains(out, "deleteReverseZone") {
		t.Errorf("zone delete of a reverse zone: exit %d: %s", code, out)
	}
	for _, z := range []string{"2.0.192.in-addr.arpa", "100.51.198.in-addr.arpa"} {
		if out, code := run(t, env, "", "ctl", "dns", "reverse", "delete", z, "--yes"); code != 0 {
			t.Errorf("dns reverse delete %s: exit %d: %s", z, code, out)
		}
	}
	if out, code := run(t, env, "", "ctl", "dns", "zone", "delete", "nothing.example.org", "--yes"); code != 1 || !strings.Contains(out, "NOT_FOUND") {
		t.Errorf("zone delete of a missing zone: exit %d: %s", code, out)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"GET / HTTP/1.1\t200":    "GET / HTTP/1.1\t200",
		"\x1b]52;c;cHduZWQ=\x07": `\x1b]52;c;cHduZWQ=\x07`,
		"caf\u00e9 \u2603":       "caf\u00e9 \u2603",
		"bad \xff utf8":          `bad \xff utf8`,
		"\u009b31m C1 CSI":       `\xc2\x9b31m C1 CSI`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}
