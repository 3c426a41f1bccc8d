package mail_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestQuotaWarning fills a 50 MB mailbox past 90% through real deliveries
// and expects Dovecot's quota-warning service to run the agent's program
// (here the test binary, dispatching in TestMain as npanel does), which
// delivers the warning to the INBOX: read back over IMAP.
func TestQuotaWarning(t *testing.T) {
	s := startStackWith(t, false)
	acct := s.newAccount(t)
	dom := randomDomain(t)
	user := "full@" + dom
	other := "roomy@" + dom
	const pw = "Copper-Meadow-5521"
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: user, SealedPassword: s.seal(t, user, pw), QuotaMb: 50})
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: other, SealedPassword: s.seal(t, other, pw), QuotaMb: 50})

	from := "sender@elsewhere.example.org"
	if err := s.deliver(from, []string{user}, message(from, user, "first", "small")); err != nil {
		t.Fatal(err)
	}
	s.waitMessages(t, user, pw, "INBOX", 1)

	// 44 MB (84% of 50 MiB) as one message file; Dovecot recounts without maildirsize.
	md := filepath.Join(s.p.HomeBase, acct, "mail", dom, "full", "Maildir")
	big := filepath.Join(md, "cur", "1.big.test,S=44000000:2,S")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 44_000_000), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(md)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if err := os.Chown(big, int(sys.Uid), int(sys.Gid)); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(md, "maildirsize"))
	if err := s.deliver(from, []string{user}, message(from, user, "second", "small")); err != nil {
		t.Fatal(err)
	}
	s.waitMessages(t, user, pw, "INBOX", 3)

	t.Run("BelowThresholdNoWarning", func(t *testing.T) {
		// The program re-checks the quota: a caller of the open socket
		// cannot send a warning to a mailbox that is not that full.
		args := []string{"--lda", s.p.Mail().DovecotLDA, "--doveadm", s.p.Mail().Doveadm, "--config", s.p.Mail().DovecotConfig,
			"--from", "postmaster@" + dom, "--", "90", other}
		var stderr bytes.Buffer
		if code := mail.QuotaWarningMain(args, &stderr); code == 0 || !strings.Contains(stderr.String(), "no warning") {
			t.Fatalf("warning for a mailbox below 90%%: exit %d: %s", code, stderr.String())
		}
	})
	t.Run("HostileArgumentsRefused", func(t *testing.T) {
		base := []string{"--lda", s.p.Mail().DovecotLDA, "--doveadm", s.p.Mail().Doveadm, "--config", s.p.Mail().DovecotConfig, "--from", "postmaster@" + dom, "--"}
		for _, tail := range [][]string{
			{"90", user + "\r\nBcc: victim@example.net"},
			{"90", "../../etc@" + dom},
			{"90; rm", user},
			{"0", user},
			{"101", user},
			{"90"},
			{"90", user, "extra"},
			{"--from", "x@y.example\r\nBcc: victim@example.net", "90", user},
			// What a client of the socket appends comes after the fixed
			// flags' "--": a flag there is an argument, not a new path.
			{"--doveadm", "/tmp/evil", "90", user},
			{"-", "--doveadm", "/tmp/evil", "90", user},
		} {
			var stderr bytes.Buffer
			if code := mail.QuotaWarningMain(append(append([]string(nil), base...), tail...), &stderr); code == 0 {
				t.Errorf("accepted %q", tail)
			}
		}
		// Without the fixed part's "--", nothing runs.
		var stderr bytes.Buffer
		if code := mail.QuotaWarningMain(append(base[:len(base)-1:len(base)-1], "90", user), &stderr); code != 2 {
			t.Errorf("flags without -- accepted: exit %d", code)
		}
	})

	// Crossing 90%: 44 MB + 4 MB of 50 MiB.
	body := strings.Repeat(strings.Repeat("y", 998)+"\r\n", 4000)
	if err := s.deliver(from, []string{user}, message(from, user, "crossing", body)); err != nil {
		t.Fatal(err)
	}
	msgs := s.waitMessages(t, user, pw, "INBOX", 5)
	var warning string
	for _, m := range msgs {
		if strings.Contains(m, "Subject: Your mailbox is 90% full") {
			warning = m
		}
	}
	if warning == "" {
		t.Fatalf("no quota warning among %d messages", len(msgs))
	}
	for _, want := range []string{"To: <" + user + ">", "Auto-Submitted: auto-generated", "has used 90% or more"} {
		if !strings.Contains(warning, want) {
			t.Errorf("warning lacks %q:\n%s", want, warning)
		}
	}
	if n := strings.Count(strings.Join(msgs, "\n"), "Subject: Your mailbox is 90% full"); n != 1 {
		t.Errorf("%d warnings, want 1", n)
	}
	// dovecot-lda ran as root and wrote as the account's user.
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(md, sub))
		for _, e := range ents {
			fi, err := os.Stat(filepath.Join(md, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if fs := fi.Sys().(*syscall.Stat_t); fs.Uid != sys.Uid {
				t.Errorf("%s/%s owned by uid %d, want %d", sub, e.Name(), fs.Uid, sys.Uid)
			}
		}
	}
}
