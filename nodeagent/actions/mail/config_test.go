package mail

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A configuration the daemon refuses is not installed: the old file stays
// (the rollback) and no candidate is left behind.
func TestReplaceConfigRollsBack(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "exim.conf")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	changed, err := replaceConfig(ctx, path, []byte("bad\n"), func(string) *exec.Cmd { return exec.Command("/bin/false") })
	if err == nil || changed {
		t.Fatalf("refused config: changed=%v err=%v", changed, err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old\n" {
		t.Fatalf("old config replaced: %q", b)
	}
	if _, err := os.Stat(path + ".candidate"); !os.IsNotExist(err) {
		t.Fatalf("candidate left behind: %v", err)
	}
	changed, err = replaceConfig(ctx, path, []byte("good\n"), func(string) *exec.Cmd { return exec.Command("/bin/true") })
	if err != nil || !changed {
		t.Fatalf("accepted config: changed=%v err=%v", changed, err)
	}
	changed, err = replaceConfig(ctx, path, []byte("good\n"), func(string) *exec.Cmd { return exec.Command("/bin/false") })
	if err != nil || changed {
		t.Fatalf("unchanged config is not checked again: changed=%v err=%v", changed, err)
	}
}

// The renderers take odd but valid listeners (all addresses, IPv6
// loopback) and refuse node settings that would add configuration lines.
// Setup runs the daemons' own checks on the result (integration test).
func TestRenderListenersAndInjection(t *testing.T) {
	for _, relay := range []string{"", "127.0.0.1:2525"} {
		in := configInput{Node: "n1.example.com", Mailname: "n1.example.com", Relay: relay, Antivirus: true}
		in.Paths.ClamdSocket = "/run/clamav/clamd.ctl"
		in.Listen.smtp, _ = parseListen("smtp", ":25")
		in.Listen.submission, _ = parseListen("submission", "[::1]:587")
		in.Listen.smtps, _ = parseListen("smtps", "127.0.0.1:465")
		for _, l := range []*listenAddr{&in.Listen.imap, &in.Listen.imaps, &in.Listen.pop3, &in.Listen.pop3s} {
			*l, _ = parseListen("x", ":143")
		}
		if _, err := renderExim(in); err != nil {
			t.Fatal(err)
		}
	}
	for _, sock := range []string{"", "clamd.ctl", "/run/x y", "/run/x\nav_scanner = cmdline:/bin/sh", "/run/${run{/bin/sh}}", "127.0.0.1 3310"} {
		in := configInput{Antivirus: true}
		in.Paths.ClamdSocket = sock
		if _, err := renderExim(in); err == nil {
			t.Errorf("clamd socket %q was rendered", sock)
		}
	}
	// clamd is reached only over its unix socket.
	in := configInput{Antivirus: true}
	in.Paths.ClamdSocket = "/run/clamav/clamd.ctl"
	if conf, err := renderExim(in); err != nil || !strings.Contains(conf, "\nav_scanner = clamd:/run/clamav/clamd.ctl\n") {
		t.Fatalf("av_scanner not the socket: %v\n%s", err, conf)
	}
	if _, err := renderExim(configInput{Relay: "bad relay"}); err == nil {
		t.Fatal("a relay that is not host:port was rendered")
	}
	if _, err := renderExim(configInput{Mailname: "x\nspool_directory = /"}); err == nil {
		t.Fatal("a mail name with a newline was rendered")
	}
	if _, err := parseListen("smtp", "example.com:25"); err == nil {
		t.Fatal("a host name listener was accepted")
	}
}

// The quota-warning command line is written into Dovecot's configuration
// only when no argument could split or extend it; the 90% warning and the
// SPF ACL are in the rendered configurations.
func TestRenderQuotaWarningAndSPF(t *testing.T) {
	in := configInput{Node: "n1.example.com", Mailname: "n1.example.com"}
	for _, l := range []*listenAddr{&in.Listen.smtp, &in.Listen.submission, &in.Listen.smtps, &in.Listen.imap, &in.Listen.imaps, &in.Listen.pop3, &in.Listen.pop3s} {
		*l, _ = parseListen("x", ":143")
	}
	in.QuotaWarning = []string{"/usr/bin/npanel", QuotaWarningCommand, "--from", "postmaster@n1.example.com"}
	conf, err := renderDovecot(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"quota_warning = storage=90%% quota-warning 90 %u\n", "executable = script /usr/bin/npanel mail-quota-warning --from postmaster@n1.example.com\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("dovecot config lacks %q", want)
		}
	}
	for _, bad := range []string{"/opt/my npanel", "/x\n}\nservice", "/x{y}", "", "/x$y", "/x%u"} {
		in.QuotaWarning = []string{bad, QuotaWarningCommand}
		if _, err := renderDovecot(in); err == nil {
			t.Errorf("program %q was rendered", bad)
		}
	}
	exim, err := renderExim(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"spf = fail\n", "set acl_m_spf = $spf_received\n", "add_header = $acl_m_spf\n"} {
		if !strings.Contains(exim, want) {
			t.Errorf("exim config lacks %q", want)
		}
	}
}

// The deny lists come before the passwd-file whose path the login name
// builds, and cover the empty, "." and ".." parts (TestLoginPathTraversal
// runs them against Dovecot).
func TestRenderLoginDeny(t *testing.T) {
	in := configInput{Node: "n1.example.com", Mailname: "n1.example.com"}
	in.Paths.UsersDir = "/var/lib/npanel/mail/users"
	for _, l := range []*listenAddr{&in.Listen.smtp, &in.Listen.submission, &in.Listen.smtps, &in.Listen.imap, &in.Listen.imaps, &in.Listen.pop3, &in.Listen.pop3s} {
		*l, _ = parseListen("x", ":143")
	}
	conf, err := renderDovecot(in)
	if err != nil {
		t.Fatal(err)
	}
	d := strings.Index(conf, "username_format=d-%d /var/lib/npanel/mail/login-deny\n  deny = yes")
	n := strings.Index(conf, "username_format=n-%n /var/lib/npanel/mail/login-deny\n  deny = yes")
	real := strings.Index(conf, "username_format=%n /var/lib/npanel/mail/users/%d/%n")
	if d < 0 || n < 0 || real < 0 || d > real || n > real {
		t.Fatalf("deny passdbs missing or after the real one:\n%s", conf)
	}
	if !strings.Contains(conf, "auth_default_realm = no-domain.invalid\n") {
		t.Fatal("no default realm")
	}
	for _, k := range []string{"d-", "d-.", "d-..", "n-", "n-.", "n-.."} {
		if !strings.Contains("\n"+loginDeny, "\n"+k+"\n") {
			t.Errorf("deny list lacks %q", k)
		}
	}
}
