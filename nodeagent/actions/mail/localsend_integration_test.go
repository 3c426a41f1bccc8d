package mail_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// A hosting account's program submits through the node's sendmail: the
// setuid Exim with its default configuration. The stack's Exim runs with
// -C, which Exim honours for an ordinary caller only by giving up root
// (it would then run as that user and could not write the spool). So the
// test binary re-runs itself (sendmailChildEnv set) in a new mount
// namespace, mounts a tmpfs over /etc/exim4 holding the stack's
// configuration as exim4.conf (Debian's default path), and runs exim as
// the account's user there: the real setuid path, with that user as
// $caller_uid. The namespace disappears with the child.
const (
	sendmailChildEnv  = "NPANEL_TEST_SENDMAIL_CHILD"
	sendmailConfigEnv = "NPANEL_TEST_SENDMAIL_CONFIG" // the stack's Exim configuration
	sendmailArgsEnv   = "NPANEL_TEST_SENDMAIL_ARGS"   // JSON: exim argv, binary first
	sendmailUserEnv   = "NPANEL_TEST_SENDMAIL_USER"   // uid:gid, empty for root
)

// eximDefaultConfig is the first file of Debian's exim4 configuration
// search path (exim4 -bV).
const eximDefaultConfig = "/etc/exim4/exim4.conf"

// sendmailChild is the re-run test binary inside the new namespace; it
// exits with exim's status.
func sendmailChild() int {
	fail := func(f string, a ...any) int {
		fmt.Fprintf(os.Stderr, "sendmail child: "+f+"\n", a...)
		return 111
	}
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fail("make / private: %v", err)
	}
	conf, err := os.ReadFile(os.Getenv(sendmailConfigEnv))
	if err != nil {
		return fail("%v", err)
	}
	dir := filepath.Dir(eximDefaultConfig)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755"); err != nil {
		return fail("tmpfs on %s: %v", dir, err)
	}
	if err := os.WriteFile(eximDefaultConfig, conf, 0o644); err != nil {
		return fail("%v", err)
	}
	var args []string
	if err := json.Unmarshal([]byte(os.Getenv(sendmailArgsEnv)), &args); err != nil || len(args) < 1 {
		return fail("args: %v", err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	if ug := os.Getenv(sendmailUserEnv); ug != "" {
		var uid, gid uint32
		if _, err := fmt.Sscanf(ug, "%d:%d", &uid, &gid); err != nil {
			return fail("user %q: %v", ug, err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	}
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		return fail("exim: %v", err)
	}
	return 0
}

// sendmailAs runs the node's sendmail as the Linux user name ("" for
// root) with args, msg on stdin, and returns its output (stdout and
// stderr) and its exit error.
func (s *stack) sendmailAs(t testing.TB, name string, msg string, args ...string) (string, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ug := ""
	if name != "" {
		u, err := user.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		ug = u.Uid + ":" + u.Gid
	}
	aj, _ := json.Marshal(append([]string{s.p.Mail().Exim}, args...))
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), sendmailChildEnv+"=1", sendmailConfigEnv+"="+s.p.Mail().EximConfig,
		sendmailArgsEnv+"="+string(aj), sendmailUserEnv+"="+ug)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	cmd.Stdin = strings.NewReader(msg)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("exim %v did not end: %s", args, out.String())
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 111 {
		t.Fatalf("sendmail child: %s", out.String())
	}
	return out.String(), err
}

// TestLocalSubmissionSenders: a hosting account's program (sendmail -t,
// PHP's mail()) sends as its own domains and as any domain not hosted
// here, never as another account's domain (envelope or From:); root and
// local SMTP (-bs) keep to the same rules as before.
func TestLocalSubmissionSenders(t *testing.T) {
	s := startStackWith(t, false)
	acctA, acctB := s.newAccount(t), s.newAccount(t)
	domA, domA2, domB := randomDomain(t), randomDomain(t), randomDomain(t)
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctA, Domain: domA})
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctA, Domain: domA2})
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctB, Domain: domB})
	alice := "alice@" + domA
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: alice, SealedPassword: s.seal(t, alice, pwAlice), QuotaMb: 50})

	const refused = "not one of your account's domains"
	const refusedFrom = "domain hosted here for another account"
	for _, c := range []struct {
		name, user, from, header string
		wantErr                  string
	}{
		{"OwnDomain", acctA, "web@" + domA, "web@" + domA, ""},
		{"OtherDomainOfTheAccount", acctA, "web@" + domA2, "Shop <shop@" + strings.ToUpper(domA2) + ">", ""},
		{"NotHostedHere", acctA, "someone@elsewhere.example.org", "someone@elsewhere.example.org", ""},
		{"DefaultSenderOwnFrom", acctA, "", "web@" + domA, ""},
		{"NullSender", acctA, "<>", "web@" + domA, ""},
		{"EnvelopeOfAnotherAccount", acctA, "web@" + domB, "web@" + domA, refused},
		{"EnvelopeOfAnotherAccountUpperCase", acctA, "web@" + strings.ToUpper(domB), "web@" + domA, refused},
		{"FromOfAnotherAccount", acctA, "web@" + domA, "Boss <boss@" + domB + ">", refusedFrom},
		{"SecondFromOfAnotherAccount", acctA, "", "web@" + domA + ", boss@" + domB, refusedFrom},
		{"DefaultSenderFromOfAnotherAccount", acctA, "", "boss@" + domB, refusedFrom},
		{"OwnerOfTheOtherDomain", acctB, "web@" + domB, "web@" + domB, ""},
		{"Root", "", "web@" + domB, "boss@" + domB, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			subject := "local " + c.name
			msg := fmt.Sprintf("From: %s\nTo: %s\nSubject: %s\n\nbody\n", c.header, alice, subject)
			// -oep: the refusal on stderr rather than mailed (and dropped).
			args := []string{"-oi", "-oep", "-t"}
			if c.from != "" {
				args = append(args, "-f", c.from)
			}
			out, err := s.sendmailAs(t, c.user, msg, args...)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("sendmail as %q: %v: %s", c.user, err, out)
				}
				return
			}
			if err == nil || !strings.Contains(strings.Join(strings.Fields(out), " "), c.wantErr) {
				t.Fatalf("sendmail as %q: %v %q, want a refusal %q", c.user, err, out, c.wantErr)
			}
			if strings.Contains(out, acctB) {
				t.Fatalf("the refusal names the other account: %q", out)
			}
		})
	}
	t.Run("Delivered", func(t *testing.T) {
		// The seven accepted ones arrive; -f set the envelope sender.
		msgs := s.waitMessages(t, alice, pwAlice, "INBOX", 7)
		found := false
		for _, m := range msgs {
			if strings.Contains(m, "Subject: local OwnDomain") {
				found = true
				if !strings.Contains(m, "Return-Path: <web@"+domA+">") {
					t.Fatalf("envelope sender of -f not kept:\n%s", m)
				}
			}
		}
		if !found {
			t.Fatal("the OwnDomain message did not arrive")
		}
	})
	t.Run("RefusalNotMailedToTheSender", func(t *testing.T) {
		// By default (-oem) Exim mails a refusal to the envelope sender,
		// the refused message attached: here another account's address.
		msg := fmt.Sprintf("From: web@%s\nTo: %s\nSubject: forged\n\nforged body\n", domA, alice)
		if out, err := s.sendmailAs(t, acctA, msg, "-oi", "-t", "-f", "web@"+domB); err == nil {
			t.Fatalf("refused sender accepted: %s", out)
		}
		testenv.WaitFor(t, 10*time.Second, "the refusal report to be dropped", func() bool {
			b, _ := os.ReadFile(s.p.Mail().EximMainLog)
			return strings.Contains(string(b), "report of a refused local submission dropped")
		})
		b, _ := os.ReadFile(s.p.Mail().EximMainLog)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, " => ") && strings.Contains(l, "web@"+domB) {
				t.Fatalf("delivered to the refused sender: %s", l)
			}
		}
	})
	t.Run("LocalSMTP", func(t *testing.T) {
		// -bs speaks SMTP on stdin: the sender rule holds there too.
		smtp := func(from, header string) string {
			out, _ := s.sendmailAs(t, acctA, fmt.Sprintf("HELO x\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\nFrom: %s\r\nSubject: bs\r\n\r\nbody\r\n.\r\nQUIT\r\n", from, alice, header), "-bs")
			return out
		}
		// Exim folds a long reply into 550- lines.
		unfold := func(s string) string {
			return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n550 ", " "), "\r\n550-", " ")
		}
		if out := smtp("web@"+domB, "web@"+domA); !strings.Contains(out, "550") || !strings.Contains(unfold(out), refused) {
			t.Fatalf("-bs as another account's domain:\n%s", out)
		}
		if out := smtp("web@"+domA, "boss@"+domB); !strings.Contains(out, "550") || !strings.Contains(unfold(out), refusedFrom) {
			t.Fatalf("-bs with From: of another account's domain:\n%s", out)
		}
		if out := smtp("web@"+domA, "web@"+domA); strings.Contains(out, "550") || !strings.Contains(out, "250 OK id=") {
			t.Fatalf("-bs as its own domain:\n%s", out)
		}
	})
}

// TestLocalSubmissionRate: an account's Linux user sends to at most as
// many recipients an hour as a mailbox; another user is not affected.
func TestLocalSubmissionRate(t *testing.T) {
	s := startStackWith(t, false)
	acctA, acctB := s.newAccount(t), s.newAccount(t)
	dom := randomDomain(t)
	// The recipients go nowhere: every local part is blackholed.
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctA, Domain: dom, CatchAll: ":blackhole:"})
	rcpts := func(prefix string, n int) []string {
		var r []string
		for i := range n {
			r = append(r, fmt.Sprintf("%s%d@%s", prefix, i, dom))
		}
		return r
	}
	send := func(name, from string, to []string) (string, error) {
		msg := fmt.Sprintf("From: %s\nSubject: many\n\nbody\n", from)
		return s.sendmailAs(t, name, msg, append([]string{"-oi", "-oep", "-f", from}, to...)...)
	}
	own, other := "web@"+dom, "web@elsewhere.example.org"
	if out, err := send(acctA, own, rcpts("a", 200)); err != nil {
		t.Fatalf("200 recipients: %v: %s", err, out)
	}
	out, err := send(acctA, own, rcpts("b", 200))
	if err == nil || !strings.Contains(out, "sending rate limit exceeded") {
		t.Fatalf("400 recipients within the hour: %v %q, want the rate limit", err, out)
	}
	if out, err := send(acctB, other, rcpts("c", 200)); err != nil {
		t.Fatalf("another user's 200 recipients: %v: %s", err, out)
	}
	if out, err := send("", own, rcpts("d", 400)); err != nil {
		t.Fatalf("root: %v: %s", err, out)
	}
}

// TestLocalSubmissionDKIMSigned: what an account's program sends as its
// own domain (sendmail -t, PHP's mail()) leaves DKIM-signed by that
// domain, as a mailbox's submission does; what it sends as a domain not
// hosted here is not signed.
func TestLocalSubmissionDKIMSigned(t *testing.T) {
	s := startStackWith(t, false)
	acct := s.newAccount(t)
	dom := randomDomain(t)
	dres := s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom,
		DkimSelectors: []*agentpb.MailDKIMSelector{{Selector: "s1", Signing: true}}})
	if len(dres.DkimKeys) != 1 {
		t.Fatalf("dkim keys: %v", dres.DkimKeys)
	}
	lookup := func(name string) ([]string, error) {
		if name == "s1._domainkey."+dom {
			return []string{dres.DkimKeys[0].Txt}, nil
		}
		return nil, errors.New("no such record")
	}
	// relayed sends msg as acct (root when acct is "") and returns what
	// the remote relay received.
	relayed := func(t *testing.T, user, from, subject string, args ...string) []byte {
		t.Helper()
		before := len(s.relay.Messages())
		msg := fmt.Sprintf("From: %s\nTo: friend@remote.example.net\nSubject: %s\n\nbody\n", from, subject)
		if out, err := s.sendmailAs(t, user, msg, append([]string{"-oi", "-oep", "-t", "-f", from}, args...)...); err != nil {
			t.Fatalf("sendmail: %v: %s", err, out)
		}
		var got []byte
		testenv.WaitFor(t, 20*time.Second, "the relay to receive "+subject, func() bool {
			for _, m := range s.relay.Messages()[before:] {
				if bytes.Contains(m.Data, []byte("Subject: "+subject)) {
					got = m.Data
					return true
				}
			}
			return false
		})
		return got
	}
	t.Run("OwnDomain", func(t *testing.T) {
		got := relayed(t, acct, "web@"+dom, "local signed")
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(got), &dkim.VerifyOptions{LookupTXT: lookup})
		if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != dom {
			t.Fatalf("dkim: %v %+v\n%s", err, vs, got)
		}
	})
	t.Run("NotHostedHere", func(t *testing.T) {
		if got := relayed(t, acct, "someone@elsewhere.example.org", "local foreign"); bytes.Contains(got, []byte("DKIM-Signature:")) {
			t.Fatalf("signed as a domain not hosted here:\n%s", got)
		}
	})
}

// TestLocalSubmissionBatchedSMTP: batched SMTP on stdin (exim -bS), which
// answers nothing, keeps to the same sender rules as sendmail and -bs: an
// account's program sends as its own domain, never as another account's.
func TestLocalSubmissionBatchedSMTP(t *testing.T) {
	s := startStackWith(t, false)
	acctA, acctB := s.newAccount(t), s.newAccount(t)
	domA, domB := randomDomain(t), randomDomain(t)
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctA, Domain: domA})
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctB, Domain: domB})
	alice := "alice@" + domA
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: alice, SealedPassword: s.seal(t, alice, pwAlice), QuotaMb: 50})
	batch := func(from, header, subject string) string {
		return fmt.Sprintf("MAIL FROM:<%s>\nRCPT TO:<%s>\nDATA\nFrom: %s\nSubject: %s\n\nbody\n.\nQUIT\n", from, alice, header, subject)
	}
	_, _ = s.sendmailAs(t, acctA, batch("web@"+domB, "web@"+domA, "bS envelope of another account"), "-bS")
	_, _ = s.sendmailAs(t, acctA, batch("web@"+domA, "boss@"+domB, "bS From of another account"), "-bS")
	if out, err := s.sendmailAs(t, acctA, batch("web@"+domA, "web@"+domA, "bS own domain"), "-bS"); err != nil {
		t.Fatalf("-bS as its own domain: %v: %s", err, out)
	}
	msgs := s.waitMessages(t, alice, pwAlice, "INBOX", 1)
	// Whatever else comes is late: give the refused ones the time the
	// accepted one took, then look again.
	time.Sleep(2 * time.Second)
	msgs = s.waitMessages(t, alice, pwAlice, "INBOX", len(msgs))
	own := false
	for _, m := range msgs {
		if strings.Contains(m, "of another account") {
			t.Fatalf("-bS delivered a message as another account's domain:\n%s", m)
		}
		own = own || strings.Contains(m, "Subject: bS own domain")
	}
	if !own {
		t.Fatal("the -bS message as its own domain did not arrive")
	}
}
