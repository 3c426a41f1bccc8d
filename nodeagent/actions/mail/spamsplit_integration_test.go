package mail_test

import (
	"io"
	"strings"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

// TestSpamSettingsPerRecipientDomain: a message from another server to
// mailboxes of several local domains is judged by each domain's own spam
// settings: recipients of a second domain are deferred (452) at RCPT and
// sent again on their own, so GTUBE is tagged for the TAG domain,
// refused for the REJECT domain and untouched where the filter is off,
// whatever the order of the recipients.
func TestSpamSettingsPerRecipientDomain(t *testing.T) {
	s := startStackWith(t, false)
	const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	type box struct{ acct, dom, addr string }
	mk := func(local string, spam *agentpb.MailSpamSettings) box {
		acct := s.newAccount(t)
		b := box{acct: acct, dom: randomDomain(t)}
		b.addr = local + "@" + b.dom
		s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: b.dom, Spam: spam})
		s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: b.addr, SealedPassword: s.seal(t, b.addr, pwAlice), QuotaMb: 50})
		return b
	}
	tag := mk("tag", &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 50, Action: agentpb.MailSpamAction_MAIL_SPAM_ACTION_TAG})
	rej := mk("rej", &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 50, Action: agentpb.MailSpamAction_MAIL_SPAM_ACTION_REJECT})
	off := mk("off", nil)
	tag2 := box{acct: tag.acct, dom: tag.dom, addr: "tag2@" + tag.dom}
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: tag.acct, Address: tag2.addr, SealedPassword: s.seal(t, tag2.addr, pwAlice), QuotaMb: 50})

	// send runs one transaction as another server would and returns the
	// recipients accepted, those deferred, and the error at DATA.
	send := func(to []string, subject string) (accepted, deferred []string, dataErr error) {
		c, err := smtpDialPlain(s.p.SMTPListen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		from := "x@elsewhere.example.org"
		if err := c.Mail(from, nil); err != nil {
			t.Fatal(err)
		}
		for _, r := range to {
			err := c.Rcpt(r, nil)
			switch {
			case err == nil:
				accepted = append(accepted, r)
			case smtpCode(err) == 452:
				deferred = append(deferred, r)
			default:
				t.Fatalf("RCPT %s: %v", r, err)
			}
		}
		if len(accepted) == 0 {
			return
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(w, message(from, strings.Join(to, ", "), subject, gtube))
		dataErr = w.Close()
		_ = c.Quit()
		return
	}
	// deliverAll sends until every recipient was accepted or refused, as
	// a sending server does with 452s; it returns the DATA replies.
	deliverAll := func(to []string, subject string) map[string]error {
		res := map[string]error{}
		for len(to) > 0 {
			acc, def, err := send(to, subject)
			if len(acc) == 0 {
				t.Fatalf("no recipient of %v accepted", to)
			}
			if len(acc) > 1 && acc[0][strings.IndexByte(acc[0], '@'):] != acc[1][strings.IndexByte(acc[1], '@'):] {
				t.Fatalf("one transaction took recipients of two domains: %v", acc)
			}
			for _, r := range acc {
				res[r] = err
			}
			to = def
		}
		return res
	}

	for _, order := range [][]string{
		{rej.addr, tag.addr, off.addr, tag2.addr},
		{tag.addr, off.addr, rej.addr, tag2.addr},
		{off.addr, tag2.addr, tag.addr, rej.addr},
	} {
		subject := "gtube " + order[0]
		res := deliverAll(order, subject)
		if c := smtpCode(res[rej.addr]); c != 550 {
			t.Fatalf("order %v: REJECT domain: %v, want 550", order, res[rej.addr])
		}
		for _, b := range []box{tag, tag2, off} {
			if res[b.addr] != nil {
				t.Fatalf("order %v: %s: %v", order, b.addr, res[b.addr])
			}
		}
		find := func(b box) string {
			for _, m := range s.waitMessages(t, b.addr, pwAlice, "INBOX", 1) {
				if strings.Contains(m, "Subject: "+subject) {
					return m
				}
			}
			t.Fatalf("order %v: %s did not get %q", order, b.addr, subject)
			return ""
		}
		for _, b := range []box{tag, tag2} {
			if m := find(b); !strings.Contains(m, "X-Spam-Flag: YES") {
				t.Fatalf("order %v: %s: GTUBE not tagged:\n%s", order, b.addr, m)
			}
		}
		if m := find(off); strings.Contains(m, "X-Spam-Flag") {
			t.Fatalf("order %v: filter off for %s, yet tagged:\n%s", order, off.addr, m)
		}
	}

	t.Run("OneDomainIsOneTransaction", func(t *testing.T) {
		acc, def, err := send([]string{tag.addr, tag2.addr}, "two of one domain")
		if len(acc) != 2 || len(def) != 0 || err != nil {
			t.Fatalf("accepted %v deferred %v: %v", acc, def, err)
		}
	})
	t.Run("SubmissionNotSplit", func(t *testing.T) {
		// A mailbox's own message to several local domains is one
		// transaction (mail clients give up on a 452).
		if err := s.submit(off.addr, pwAlice, []string{tag.addr, rej.addr}, message(off.addr, tag.addr, "from a mailbox", "hello both")); err != nil {
			t.Fatalf("submission to two local domains: %v", err)
		}
	})
}

// TestSpamSplitOnlyWhenJudgedApart: recipients of two local domains share
// a message from another server when DATA would judge them alike (the
// same spam settings and account, whose Bayes database spamd uses, or the
// filter off for both); otherwise the second domain is deferred (452).
func TestSpamSplitOnlyWhenJudgedApart(t *testing.T) {
	s := startStackWith(t, false)
	tag := &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 50, Action: agentpb.MailSpamAction_MAIL_SPAM_ACTION_TAG}
	tag60 := &agentpb.MailSpamSettings{Enabled: true, ScoreTenths: 60, Action: agentpb.MailSpamAction_MAIL_SPAM_ACTION_TAG}
	acctA, acctB := s.newAccount(t), s.newAccount(t)
	mk := func(acct string, spam *agentpb.MailSpamSettings) string {
		dom := randomDomain(t)
		s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom, Spam: spam})
		addr := "box@" + dom
		s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: addr, SealedPassword: s.seal(t, addr, pwAlice), QuotaMb: 50})
		return addr
	}
	aTag1, aTag2, aTag60, aOff1, aOff2 := mk(acctA, tag), mk(acctA, tag), mk(acctA, tag60), mk(acctA, nil), mk(acctA, nil)
	bTag, bOff := mk(acctB, tag), mk(acctB, nil)
	// second reports whether the second recipient was accepted beside the
	// first (else it was deferred with 452).
	second := func(first, other string) bool {
		c, err := smtpDialPlain(s.p.SMTPListen)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Mail("x@elsewhere.example.org", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt(first, nil); err != nil {
			t.Fatalf("RCPT %s: %v", first, err)
		}
		rcptErr := c.Rcpt(other, nil)
		if rcptErr != nil && smtpCode(rcptErr) != 452 {
			t.Fatalf("RCPT %s: %v", other, rcptErr)
		}
		w, err := c.Data()
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(message("x@elsewhere.example.org", first, "split", "hello")))
		if err := w.Close(); err != nil {
			t.Fatalf("DATA: %v", err)
		}
		return rcptErr == nil
	}
	for _, c := range []struct {
		name         string
		first, other string
		together     bool
	}{
		{"SameAccountSameSettings", aTag1, aTag2, true},
		{"BothOffSameAccount", aOff1, aOff2, true},
		{"BothOffTwoAccounts", aOff1, bOff, true},
		{"SameAccountOtherScore", aTag1, aTag60, false},
		{"SameAccountFilterOff", aTag1, aOff1, false},
		{"TwoAccountsSameSettings", aTag1, bTag, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := second(c.first, c.other); got != c.together {
				t.Fatalf("%s and %s in one message: %v, want %v", c.first, c.other, got, c.together)
			}
		})
	}
}
