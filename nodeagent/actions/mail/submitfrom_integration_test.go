package mail_test

import (
	"strings"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

// TestSubmissionHeaderFrom: a mailbox's authenticated submission carries
// a From: header in a domain of the mailbox's own account (its domain or
// another of the account's); any other From: is refused at DATA with a
// 550 that names the rule, not the account holding the domain.
func TestSubmissionHeaderFrom(t *testing.T) {
	s := startStackWith(t, false)
	acctA, acctB := s.newAccount(t), s.newAccount(t)
	domA, domA2, domB := randomDomain(t), randomDomain(t), randomDomain(t)
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctA, Domain: domA})
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctA, Domain: domA2})
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acctB, Domain: domB})
	alice := "alice@" + domA
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acctA, Address: alice, SealedPassword: s.seal(t, alice, pwAlice), QuotaMb: 50})
	const to = "friend@remote.example.net"
	for _, c := range []struct {
		name, from string
		ok         bool
	}{
		{"Itself", "Alice <" + alice + ">", true},
		{"UpperCase", strings.ToUpper(alice), true},
		{"OtherMailboxSameDomain", "sales@" + domA, true},
		{"OtherDomainOfTheAccount", "Shop <shop@" + domA2 + ">", true},
		{"AnotherAccount", "Boss <boss@" + domB + ">", false},
		{"SecondAddressOfAnotherAccount", alice + ", boss@" + domB, false},
		{"NotHostedHere", "someone@elsewhere.example.org", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := "From: " + c.from + "\r\nTo: <" + to + ">\r\nSubject: " + c.name + "\r\n\r\nbody\r\n"
			err := s.submit(alice, pwAlice, []string{to}, msg)
			if c.ok {
				if err != nil {
					t.Fatalf("From: %s: %v", c.from, err)
				}
				return
			}
			if smtpCode(err) != 550 || !strings.Contains(err.Error(), "From: header") {
				t.Fatalf("From: %s: %v, want a 550 naming the From: rule", c.from, err)
			}
			if strings.Contains(err.Error(), acctB) {
				t.Fatalf("the refusal names the other account: %v", err)
			}
		})
	}
}
