package mail_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

const (
	pwAlice = "Quartz-Lantern-481"
	pwBob   = "Violet-Harbor-2297"
	pwCarol = "Maple-Thunder-3310"
)

func message(from, to, subject, body string) string {
	return fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%d.%s>\r\nDate: %s\r\n\r\n%s\r\n",
		from, to, subject, time.Now().UnixNano(), from, time.Now().Format(time.RFC1123Z), body)
}

// TestMailFlow runs the whole path against real Exim and Dovecot: domains,
// mailboxes, submission, delivery over LMTP, IMAP, POP3, relaying rules,
// quota, DKIM, aliases, catch-all, autoresponder, disabled and suspended.
func TestMailFlow(t *testing.T) {
	s := startStack(t)
	acctA := s.newAccount(t)
	acctB := s.newAccount(t)
	dom := randomDomain(t)
	domB := randomDomain(t)
	alice, bob, carol := "alice@"+dom, "bob@"+dom, "carol@"+domB

	dres := s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctA, Domain: dom,
		Aliases:       []*agentpb.MailAlias{{LocalPart: "team", Targets: []string{alice, bob}}, {LocalPart: "out", Targets: []string{"someone@remote.example.net"}}},
		DkimSelectors: []*agentpb.MailDKIMSelector{{Selector: "s1", Signing: true}}})
	if len(dres.DkimKeys) != 1 || !strings.HasPrefix(dres.DkimKeys[0].Txt, "v=DKIM1; k=rsa; p=") {
		t.Fatalf("dkim keys: %v", dres.DkimKeys)
	}
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctB, Domain: domB})
	mb := s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: alice, SealedPassword: s.seal(t, alice, pwAlice), QuotaMb: 100})
	if mb.Existed || !mb.PasswordChanged {
		t.Fatalf("first ensure: %v", mb)
	}
	bobSealed := s.seal(t, bob, pwBob)
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: bob, SealedPassword: bobSealed, QuotaMb: 50})
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctB, Address: carol, SealedPassword: s.seal(t, carol, pwCarol), QuotaMb: 50})

	t.Run("RepeatedEnsureDoesNotRehash", func(t *testing.T) {
		r := s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: bob, SealedPassword: bobSealed, QuotaMb: 50})
		if !r.Existed || r.PasswordChanged {
			t.Fatalf("repeat: %v", r)
		}
		r = s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: bob, QuotaMb: 50})
		if r.PasswordChanged {
			t.Fatalf("empty sealed password changed the hash: %v", r)
		}
	})

	t.Run("SubmissionToIMAP", func(t *testing.T) {
		msg := message(alice, bob, "hello over submission", "the exact body\r\nline two")
		if err := s.submit(alice, pwAlice, []string{bob}, msg); err != nil {
			t.Fatalf("submit: %v", err)
		}
		msgs := s.waitMessages(t, bob, pwBob, "INBOX", 1)
		if !strings.HasSuffix(msgs[0], msg) {
			t.Fatalf("fetched message does not end with the one sent:\n%q\nwant suffix\n%q", msgs[0], msg)
		}
	})

	t.Run("POP3Login", func(t *testing.T) {
		if err := pop3Login(s.p.POP3Listen, bob, pwBob); err != nil {
			t.Fatal(err)
		}
		if err := pop3Login(s.p.POP3Listen, bob, "wrong-password-123"); err == nil {
			t.Fatal("POP3 accepted a wrong password")
		}
	})

	t.Run("NoOpenRelay", func(t *testing.T) {
		err := s.deliver("spammer@elsewhere.example.org", []string{"victim@remote.example.net"}, message("spammer@elsewhere.example.org", "victim@remote.example.net", "x", "y"))
		if c := smtpCode(err); c != 550 {
			t.Fatalf("relay without AUTH: %v (code %d), want 550", err, c)
		}
	})

	t.Run("UnknownRecipientRefusedAtRCPT", func(t *testing.T) {
		err := s.deliver("someone@elsewhere.example.org", []string{"nobody@" + dom}, message("someone@elsewhere.example.org", "nobody@"+dom, "x", "y"))
		if c := smtpCode(err); c != 550 {
			t.Fatalf("unknown local part: %v, want 550", err)
		}
	})

	t.Run("NoAuthWithoutTLS", func(t *testing.T) {
		c, err := smtpDialPlain(s.p.SubmissionListen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if ok, _ := c.Extension("AUTH"); ok {
			t.Fatal("AUTH offered before STARTTLS")
		}
	})

	t.Run("WrongPasswordRefused", func(t *testing.T) {
		err := s.submit(alice, "not-the-password-1", []string{bob}, message(alice, bob, "x", "y"))
		if c := smtpCode(err); c != 535 {
			t.Fatalf("wrong password: %v, want 535", err)
		}
		if _, err := s.imapLogin(alice, "not-the-password-1"); err == nil {
			t.Fatal("IMAP accepted a wrong password")
		}
	})

	t.Run("DKIMSigned", func(t *testing.T) {
		before := len(s.relay.Messages())
		msg := message(alice, "friend@remote.example.net", "signed", "dkim body")
		if err := s.submit(alice, pwAlice, []string{"friend@remote.example.net"}, msg); err != nil {
			t.Fatal(err)
		}
		var got testenv.SinkMessage
		testenv.WaitFor(t, 20*time.Second, "the relay to receive the message", func() bool {
			ms := s.relay.Messages()
			if len(ms) > before {
				got = ms[len(ms)-1]
				return true
			}
			return false
		})
		vs, err := dkim.VerifyWithOptions(bytes.NewReader(got.Data), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
			if name == "s1._domainkey."+dom {
				return []string{dres.DkimKeys[0].Txt}, nil
			}
			return nil, errors.New("no such record")
		}})
		if err != nil || len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != dom {
			t.Fatalf("dkim: %v %+v\n%s", err, vs, got.Data)
		}
	})

	t.Run("NoSendingAsAnother", func(t *testing.T) {
		err := s.submit(alice, pwAlice, []string{"friend@remote.example.net"}, message(carol, "friend@remote.example.net", "forged", "x"))
		if code := smtpCode(err); code != 550 {
			t.Fatalf("header From of another account: %v, want 550", err)
		}
		c, err := smtpSubmitAs(s, alice, pwAlice, carol, "friend@remote.example.net")
		if code := smtpCode(err); code != 550 {
			t.Fatalf("envelope sender of another account: %v (code %d, %v), want 550", err, code, c)
		}
	})

	t.Run("Alias", func(t *testing.T) {
		if err := s.deliver("x@elsewhere.example.org", []string{"team@" + dom}, message("x@elsewhere.example.org", "team@"+dom, "to the team", "hi team")); err != nil {
			t.Fatal(err)
		}
		s.waitMessages(t, alice, pwAlice, "INBOX", 1)
		s.waitMessages(t, bob, pwBob, "INBOX", 2)
	})

	t.Run("OverQuota", func(t *testing.T) {
		// Fill bob's 50 MB with one big message file; Dovecot recounts.
		md := filepath.Join(s.p.HomeBase, acctA, "mail", dom, "bob", "Maildir")
		big := filepath.Join(md, "cur", "1.big.test,S=53000000:2,S")
		if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 53_000_000), 0o600); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(md)
		sys := st.Sys().(*syscall.Stat_t)
		_ = os.Chown(big, int(sys.Uid), int(sys.Gid))
		_ = os.Remove(filepath.Join(md, "maildirsize"))
		subj := fmt.Sprintf("over quota %d", time.Now().UnixNano())
		if err := s.deliver("x@elsewhere.example.org", []string{bob}, message("x@elsewhere.example.org", bob, subj, "too much")); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 20*time.Second, "Exim to log a 552 for bob", func() bool {
			b, _ := os.ReadFile(s.p.Mail().EximMainLog)
			return bytes.Contains(b, []byte("552")) && bytes.Contains(b, []byte(bob))
		})
		// Nothing lost for the others.
		if err := s.deliver("x@elsewhere.example.org", []string{alice}, message("x@elsewhere.example.org", alice, "after quota", "fine")); err != nil {
			t.Fatal(err)
		}
		s.waitMessages(t, alice, pwAlice, "INBOX", 2)
		_ = os.Remove(big)
		_ = os.Remove(filepath.Join(md, "maildirsize"))
	})

	t.Run("CatchAll", func(t *testing.T) {
		base := &agentpb.EnsureMailDomainAction{Username: acctA, Domain: dom,
			DkimSelectors: []*agentpb.MailDKIMSelector{{Selector: "s1", Signing: true}}}
		base.CatchAll = ":fail:"
		s.ensureDomain(t, base)
		if err := s.deliver("x@elsewhere.example.org", []string{"ghost@" + dom}, message("x@elsewhere.example.org", "ghost@"+dom, "x", "y")); smtpCode(err) != 550 {
			t.Fatalf(":fail: catch-all: %v, want 550", err)
		}
		base.CatchAll = ":blackhole:"
		s.ensureDomain(t, base)
		if err := s.deliver("x@elsewhere.example.org", []string{"ghost@" + dom}, message("x@elsewhere.example.org", "ghost@"+dom, "x", "y")); err != nil {
			t.Fatalf(":blackhole: catch-all: %v", err)
		}
		base.CatchAll = "alice"
		s.ensureDomain(t, base)
		if err := s.deliver("x@elsewhere.example.org", []string{"ghost@" + dom}, message("x@elsewhere.example.org", "ghost@"+dom, "caught", "y")); err != nil {
			t.Fatalf("mailbox catch-all: %v", err)
		}
		s.waitMessages(t, alice, pwAlice, "INBOX", 3)
		base.CatchAll = ""
		s.ensureDomain(t, base)
	})

	t.Run("Autoresponder", func(t *testing.T) {
		s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: alice, QuotaMb: 100,
			Autoresponder: &agentpb.MailAutoresponder{Subject: "Away", Body: "I am away.\nBack soon."}})
		before := len(s.relay.Messages())
		for i := 0; i < 2; i++ {
			if err := s.deliver("writer@remote.example.net", []string{alice}, message("writer@remote.example.net", alice, fmt.Sprintf("question %d", i), "?")); err != nil {
				t.Fatal(err)
			}
		}
		s.waitMessages(t, alice, pwAlice, "INBOX", 5)
		testenv.WaitFor(t, 20*time.Second, "the vacation reply", func() bool { return len(s.relay.Messages()) > before })
		time.Sleep(2 * time.Second) // a second reply would come as fast as the first
		n := 0
		for _, m := range s.relay.Messages()[before:] {
			if len(m.To) == 1 && m.To[0] == "writer@remote.example.net" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d vacation replies, want 1", n)
		}
		s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: alice, QuotaMb: 100})
	})

	t.Run("DisabledMailboxReceivesButCannotLogIn", func(t *testing.T) {
		s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: bob, QuotaMb: 50, Disabled: true})
		testenv.WaitFor(t, 5*time.Second, "bob's logins to be refused", func() bool {
			ic, err := s.imapLogin(bob, pwBob)
			if err == nil {
				ic.close()
			}
			return err != nil
		})
		if err := s.submit(bob, pwBob, []string{alice}, message(bob, alice, "x", "y")); smtpCode(err) != 535 {
			t.Fatalf("SMTP AUTH of a disabled mailbox: %v, want 535", err)
		}
		if err := s.deliver("x@elsewhere.example.org", []string{bob}, message("x@elsewhere.example.org", bob, "while disabled", "y")); err != nil {
			t.Fatalf("delivery to a disabled mailbox: %v", err)
		}
		s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: bob, QuotaMb: 50})
		msgs := s.waitMessages(t, bob, pwBob, "INBOX", 3)
		if !strings.Contains(msgs[len(msgs)-1], "while disabled") {
			t.Fatal("the message sent while disabled is not the newest")
		}
	})

	t.Run("CrossAccountIsolation", func(t *testing.T) {
		if _, err := s.imapLogin(carol, pwAlice); err == nil {
			t.Fatal("logged in to B's mailbox with A's password")
		}
		if _, err := s.imapLogin(alice, pwCarol); err == nil {
			t.Fatal("logged in to A's mailbox with B's password")
		}
		// B's account cannot ensure a mailbox in A's domain.
		_, err := s.apply(t, s.mod.NewEnsureMailbox(&agentpb.EnsureMailboxAction{Username: acctB, Address: "evil@" + dom, SealedPassword: s.seal(t, "evil@"+dom, pwCarol), QuotaMb: 50}))
		if actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_CONFLICT {
			t.Fatalf("mailbox in another account's domain: %v", err)
		}
		for _, d := range []string{
			filepath.Join(s.p.HomeBase, acctA, "mail"),
			filepath.Join(s.p.HomeBase, acctA, "mail", dom, "alice"),
			filepath.Join(s.p.HomeBase, acctA, "mail", dom, "alice", "Maildir"),
		} {
			st, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o700 {
				t.Errorf("%s: mode %v, want 0700", d, st.Mode().Perm())
			}
			sys := st.Sys().(*syscall.Stat_t)
			if u := lookupName(sys.Uid); u != acctA {
				t.Errorf("%s: owner %s, want %s", d, u, acctA)
			}
		}
	})

	t.Run("TrainMail", func(t *testing.T) {
		if _, err := os.Stat(s.p.Mail().SaLearn); err != nil {
			t.Skip("sa-learn is not installed")
		}
		r := s.must(t, s.mod.NewTrainMail(&agentpb.TrainMailAction{Username: acctA, Address: alice, Uid: 1, Spam: true})).(*agentpb.TrainMailResult)
		if !r.Learned {
			t.Fatal("sa-learn learned nothing")
		}
		r = s.must(t, s.mod.NewTrainMail(&agentpb.TrainMailAction{Username: acctA, Address: alice, Uid: 1, Spam: true})).(*agentpb.TrainMailResult)
		if r.Learned {
			t.Fatal("sa-learn learned the same message twice")
		}
		if _, err := s.apply(t, s.mod.NewTrainMail(&agentpb.TrainMailAction{Username: acctA, Address: alice, Uid: 999999, Spam: true})); actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_NOT_FOUND {
			t.Fatalf("unknown uid: %v", err)
		}
	})

	t.Run("ServiceVersions", func(t *testing.T) {
		for _, sp := range s.specs {
			v, err := sp.Version(context.Background())
			if err != nil || v == "" {
				t.Errorf("%s version: %q, %v", sp.Name, v, err)
			}
			t.Logf("%s %s listen %v", sp.Name, v, sp.Listen)
		}
	})

	t.Run("Usage", func(t *testing.T) {
		r := s.must(t, s.mod.NewMailUsage(&agentpb.MailUsageAction{Username: acctA, Addresses: []string{alice, "nobody@" + dom}})).(*agentpb.MailUsageResult)
		if len(r.Mailboxes) != 2 || !r.Mailboxes[0].Exists || r.Mailboxes[0].Messages == 0 || r.Mailboxes[0].UsedBytes == 0 || r.Mailboxes[1].Exists {
			t.Fatalf("usage: %v", r.Mailboxes)
		}
	})

	t.Run("ReadMailLog", func(t *testing.T) {
		r := s.must(t, s.mod.NewReadMailLog(&agentpb.ReadMailLogAction{Username: acctA, Address: alice, Hours: 1, Lines: 1000})).(*agentpb.MailLogResult)
		if len(r.Lines) == 0 {
			t.Fatal("no log lines for alice")
		}
		for _, l := range r.Lines {
			if !strings.Contains(strings.ToLower(l), alice) {
				t.Fatalf("line without the address: %q", l)
			}
		}
	})

	t.Run("Queue", func(t *testing.T) {
		r := s.must(t, s.mod.NewMailQueue(&agentpb.MailQueueAction{Limit: 100})).(*agentpb.MailQueueResult)
		t.Logf("queue: %d messages", r.Total)
		if _, err := s.apply(t, s.mod.NewFlushMailQueue(&agentpb.FlushMailQueueAction{})); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("SpamGTUBE", func(t *testing.T) {
		if _, err := os.Stat(s.p.Mail().Spamd); err != nil {
			t.Skip("spamd is not installed")
		}
		const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
		spam := func(action agentpb.MailSpamAction) {
			s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctB, Domain: domB,
				Spam: &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 50, Action: action}})
		}
		spam(agentpb.MailSpamAction_MAIL_SPAM_ACTION_TAG)
		if err := s.deliver("x@elsewhere.example.org", []string{carol}, message("x@elsewhere.example.org", carol, "gtube tag", gtube)); err != nil {
			t.Fatal(err)
		}
		msgs := s.waitMessages(t, carol, pwCarol, "INBOX", 1)
		if !strings.Contains(msgs[len(msgs)-1], "X-Spam-Flag: YES") {
			t.Fatalf("GTUBE not tagged:\n%q", msgs)
		}
		spam(agentpb.MailSpamAction_MAIL_SPAM_ACTION_JUNK_FOLDER)
		if err := s.deliver("x@elsewhere.example.org", []string{carol}, message("x@elsewhere.example.org", carol, "gtube junk", gtube)); err != nil {
			t.Fatal(err)
		}
		junk := s.waitMessages(t, carol, pwCarol, "Junk", 1)
		if !strings.Contains(junk[0], "gtube junk") {
			t.Fatalf("Junk holds %q", junk[0])
		}
		spam(agentpb.MailSpamAction_MAIL_SPAM_ACTION_REJECT)
		err := s.deliver("x@elsewhere.example.org", []string{carol}, message("x@elsewhere.example.org", carol, "gtube reject", gtube))
		if c := smtpCode(err); c != 550 {
			t.Fatalf("GTUBE with REJECT: %v, want 550", err)
		}
		// Ham still passes.
		if err := s.deliver("x@elsewhere.example.org", []string{carol}, message("x@elsewhere.example.org", carol, "ham", "an ordinary note")); err != nil {
			t.Fatal(err)
		}
		s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctB, Domain: domB})
	})

	t.Run("EICARRejectedAndScanned", func(t *testing.T) {
		if _, err := os.Stat(s.p.Mail().ClamdSocket); err != nil {
			t.Skip("clamd does not run (not installed)")
		}
		const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`
		err := s.deliver("x@elsewhere.example.org", []string{carol}, message("x@elsewhere.example.org", carol, "eicar", eicar))
		if c := smtpCode(err); c != 550 {
			t.Fatalf("EICAR: %v, want 550", err)
		}
		// A message that was already in the maildir is found by a scan.
		md := filepath.Join(s.p.HomeBase, acctB, "mail", domB, "carol", "Maildir")
		if err := os.WriteFile(filepath.Join(md, "new", "1.eicar.test"), []byte("Subject: x\r\n\r\n"+eicar+"\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := s.must(t, s.mod.NewScanMailbox(&agentpb.ScanMailboxAction{Username: acctB, Address: carol})).(*agentpb.ScanMailboxResult)
		if r.Scanned < 2 || len(r.Infected) != 1 || r.Infected[0].Message != "1.eicar.test" || !strings.Contains(r.Infected[0].Signature, "Eicar") {
			t.Fatalf("scan: %v", r)
		}
		_ = os.Remove(filepath.Join(md, "new", "1.eicar.test"))
	})

	t.Run("SuspendedAccount", func(t *testing.T) {
		s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctB, Domain: domB, Suspended: true})
		s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctB, Address: carol, QuotaMb: 50, Suspended: true})
		// Dovecot sees a passwd-file change within a second.
		testenv.WaitFor(t, 5*time.Second, "carol's logins to be refused", func() bool {
			ic, err := s.imapLogin(carol, pwCarol)
			if err == nil {
				ic.close()
			}
			return err != nil
		})
		err := s.deliver("x@elsewhere.example.org", []string{carol}, message("x@elsewhere.example.org", carol, "x", "y"))
		if c := smtpCode(err); c < 400 || c >= 500 {
			t.Fatalf("inbound to a suspended account: %v, want 4xx", err)
		}
		s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctB, Domain: domB})
		s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctB, Address: carol, QuotaMb: 50})
		// Dovecot sees a passwd-file change within a second.
		testenv.WaitFor(t, 5*time.Second, "carol to log in after the account is unsuspended", func() bool {
			ic, err := s.imapLogin(carol, pwCarol)
			if err == nil {
				ic.close()
			}
			return err == nil
		})
	})

	t.Run("DeleteMailboxArchives", func(t *testing.T) {
		_, err := s.apply(t, s.mod.NewDeleteMailDomain(&agentpb.DeleteMailDomainAction{Username: acctA, Domain: dom}))
		if actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_CONFLICT {
			t.Fatalf("delete a domain with mailboxes: %v", err)
		}
		r := s.must(t, s.mod.NewDeleteMailbox(&agentpb.DeleteMailboxAction{Username: acctA, Address: alice})).(*agentpb.MailboxResult)
		if !r.Existed || r.Archive == "" || r.Messages == 0 {
			t.Fatalf("delete: %v", r)
		}
		if _, err := os.Stat(filepath.Join(s.p.HomeBase, acctA, "mail", dom, "alice")); !os.IsNotExist(err) {
			t.Fatalf("maildir still there: %v", err)
		}
		if _, err := s.imapLogin(alice, pwAlice); err == nil {
			t.Fatal("a deleted mailbox logged in")
		}
		if err := s.deliver("x@elsewhere.example.org", []string{alice}, message("x@elsewhere.example.org", alice, "x", "y")); smtpCode(err) != 550 {
			t.Fatalf("mail to a deleted mailbox: %v, want 550", err)
		}
		s.must(t, s.mod.NewDeleteMailbox(&agentpb.DeleteMailboxAction{Username: acctA, Address: bob}))
		s.must(t, s.mod.NewDeleteMailDomain(&agentpb.DeleteMailDomainAction{Username: acctA, Domain: dom}))
		if err := s.deliver("x@elsewhere.example.org", []string{alice}, message("x@elsewhere.example.org", alice, "x", "y")); smtpCode(err) != 550 {
			t.Fatalf("mail to a deleted domain: %v, want 550 (no relay)", err)
		}
	})
}
