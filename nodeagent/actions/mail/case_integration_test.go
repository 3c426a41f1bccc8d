package mail_test

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestLoginCaseInsensitive: mail clients and users type addresses in any
// case. IMAPS, POP3 and SMTP AUTH accept the mailbox's address in upper
// or mixed case with its password (and refuse a wrong one), and an SMTP
// login in another case still counts as the mailbox itself for the
// sender check.
func TestLoginCaseInsensitive(t *testing.T) {
	s := startStackWith(t, false)
	acct := s.newAccount(t)
	dom := randomDomain(t)
	alice, bob := "alice@"+dom, "bob@"+dom
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: alice, SealedPassword: s.seal(t, alice, pwAlice), QuotaMb: 50})
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: bob, SealedPassword: s.seal(t, bob, pwBob), QuotaMb: 50})

	logins := []string{strings.ToUpper(alice), "Alice@" + strings.ToUpper(dom[:1]) + dom[1:], "aLiCe@" + strings.ToUpper(dom)}

	t.Run("IMAPS", func(t *testing.T) {
		for i, login := range logins {
			ic, err := s.imapLogin(login, pwAlice)
			if err != nil {
				t.Errorf("IMAPS login %s: %v", login, err)
				continue
			}
			// The session is alice's own mailbox, not a new one named
			// in upper case.
			out, err := ic.cmd("NAMESPACE")
			ic.close()
			if err != nil {
				t.Errorf("IMAPS %s NAMESPACE: %v %s", login, err, out)
			}
			// Failed logins from their own addresses: Dovecot's penalty
			// grows per client address.
			if ic, err := s.imapLoginFrom(&net.TCPAddr{IP: net.IPv4(127, 0, 4, byte(1+i))}, login, pwBob); err == nil {
				ic.close()
				t.Errorf("IMAPS login %s with bob's password succeeded", login)
			}
		}
	})

	t.Run("POP3", func(t *testing.T) {
		if err := pop3Login(s.p.POP3Listen, logins[0], pwAlice); err != nil {
			t.Errorf("POP3 login %s: %v", logins[0], err)
		}
		if err := pop3Login(s.p.POP3Listen, logins[0], pwBob); err == nil {
			t.Errorf("POP3 login %s with bob's password succeeded", logins[0])
		}
	})

	t.Run("SubmissionToIMAP", func(t *testing.T) {
		for i, login := range logins[:2] {
			subject := "mixed case login " + login
			msg := message(alice, bob, subject, "body")
			c, err := smtp.DialStartTLS(s.p.SubmissionListen, insecureTLS)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Auth(sasl.NewPlainClient("", login, pwAlice)); err != nil {
				c.Close()
				t.Fatalf("SMTP AUTH as %s: %v", login, err)
			}
			err = sendOn(c, alice, []string{bob}, msg)
			c.Close()
			if err != nil {
				t.Fatalf("send as %s after AUTH as %s: %v", alice, login, err)
			}
			msgs := s.waitMessages(t, bob, pwBob, "INBOX", i+1)
			if !strings.Contains(msgs[len(msgs)-1], subject) {
				t.Fatalf("last message is not the one sent: %q", msgs[len(msgs)-1])
			}
		}
		if step, err := smtpSubmitAs(s, logins[0], pwBob, alice, bob); err == nil || step != "auth" {
			t.Fatalf("SMTP AUTH as %s with bob's password: step %s, %v", logins[0], step, err)
		}
		// Logged in as ALICE, sending as bob is still someone else.
		if step, err := smtpSubmitAs(s, logins[0], pwAlice, bob, alice); err == nil || step != "rcpt" {
			t.Fatalf("AUTH as %s, MAIL FROM %s: step %s, %v", logins[0], bob, step, err)
		}
		// Exim's $authenticated_id is the name Dovecot returns, lower
		// case: the per-sender rate limit and DKIM signing key on it, so
		// a login in another case is the same sender, not a new bucket.
		log, err := os.ReadFile(s.p.Mail().EximMainLog)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(log), "A=dovecot_plain:"+alice+" "); n < 2 {
			t.Errorf("Exim logged %d submissions authenticated as %s, want 2:\n%s", n, alice, log)
		}
	})

	// Disabling a mailbox or suspending its account refuses its logins
	// in every case: the checks (Dovecot's passwd-file, Exim's nologin
	// and suspended lookups) see the lower-cased name.
	for _, state := range []string{"disabled", "suspended"} {
		t.Run(state, func(t *testing.T) {
			ip := byte(10)
			if state == "suspended" {
				ip = 20
				s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom, Suspended: true})
			}
			s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: alice, QuotaMb: 50, Disabled: state == "disabled", Suspended: state == "suspended"})
			testenv.WaitFor(t, 5*time.Second, "alice's logins to be refused", func() bool {
				ip++
				ic, err := s.imapLoginFrom(&net.TCPAddr{IP: net.IPv4(127, 0, 5, ip)}, alice, pwAlice)
				if err == nil {
					ic.close()
				}
				return err != nil
			})
			for i, login := range logins {
				if ic, err := s.imapLoginFrom(&net.TCPAddr{IP: net.IPv4(127, 0, 6, ip+byte(i))}, login, pwAlice); err == nil {
					ic.close()
					t.Errorf("IMAPS login %s of a %s mailbox succeeded", login, state)
				}
			}
			if step, err := smtpSubmitAs(s, logins[0], pwAlice, alice, bob); step != "auth" || smtpCode(err) != 535 {
				t.Errorf("SMTP AUTH as %s of a %s mailbox: step %s, %v; want 535 at AUTH", logins[0], state, step, err)
			}
			if state == "suspended" {
				s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
			}
			s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: alice, QuotaMb: 50})
			testenv.WaitFor(t, 5*time.Second, "alice to log in again", func() bool {
				ic, err := s.imapLogin(logins[1], pwAlice)
				if err == nil {
					ic.close()
				}
				return err == nil
			})
		})
	}
}
