package mail_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// cryptHash makes a SHA-crypt hash of pw with openssl (-6 SHA-512, -5
// SHA-256), the password on stdin, as cPanel's shadow file holds them.
func cryptHash(t *testing.T, flag, pw string) string {
	t.Helper()
	c := exec.Command("/usr/bin/openssl", "passwd", flag, "-stdin")
	c.Stdin = strings.NewReader(pw)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		t.Skipf("openssl passwd %s: %v: %s", flag, err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

func (s *stack) sealHash(t *testing.T, address, hash string) []byte {
	t.Helper()
	b, err := pki.Seal(&s.key.PublicKey, []byte(hash), agentpb.MailPasswordHashSealContext(address))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A mailbox created from a password hash made elsewhere (cPanel's bare
// SHA512-CRYPT, a {SHA256-CRYPT} or a {BLF-CRYPT} one) logs in over IMAP
// with the password the hash was made from, and hands the hash back for
// export with its scheme.
func TestMailboxFromPasswordHash(t *testing.T) {
	s := startStack(t)
	acct := s.newAccount(t)
	dom := randomDomain(t)
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
	const pw = "Copper-Meadow-5521"
	bc, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	sha512 := cryptHash(t, "-6", pw)
	for _, c := range []struct{ local, hash, want string }{
		{"cpanel", sha512, "{SHA512-CRYPT}" + sha512},
		{"sha256", "{SHA256-CRYPT}" + cryptHash(t, "-5", pw), ""},
		{"blf", "{BLF-CRYPT}" + string(bc), ""},
	} {
		addr := c.local + "@" + dom
		if c.want == "" {
			c.want = c.hash
		}
		sealed := s.sealHash(t, addr, c.hash)
		r := s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: addr, SealedPasswordHash: sealed, QuotaMb: 50})
		if r.Existed || !r.PasswordChanged {
			t.Fatalf("%s: first ensure: %v", addr, r)
		}
		ic, err := s.imapLogin(addr, pw)
		if err != nil {
			t.Fatalf("%s: IMAP login with the hashed password: %v", addr, err)
		}
		ic.close()
		if ic, err := s.imapLogin(addr, pw+"x"); err == nil {
			ic.close()
			t.Fatalf("%s: IMAP accepted a wrong password", addr)
		}
		r = s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: addr, SealedPasswordHash: sealed, QuotaMb: 50})
		if !r.Existed || r.PasswordChanged {
			t.Fatalf("%s: repeated ensure: %v", addr, r)
		}
		got, ok, err := s.mod.MailboxPasswordHash(s.env, acct, addr)
		if err != nil || !ok || got != c.want {
			t.Fatalf("%s: exported hash %q, %v, %v; want %q", addr, got, ok, err, c.want)
		}
		if _, ok, err := s.mod.MailboxPasswordHash(s.env, acct+"x", addr); ok || err != nil {
			t.Fatalf("%s: another account's export: %v, %v", addr, ok, err)
		}
	}

	// A hash of another scheme is refused before anything changes, and
	// the error does not show it.
	addr := "plain@" + dom
	_, err = s.apply(t, s.mod.NewEnsureMailbox(&agentpb.EnsureMailboxAction{Username: acct, Address: addr, SealedPasswordHash: s.sealHash(t, addr, "{PLAIN}"+pw), QuotaMb: 50}))
	if err == nil || strings.Contains(err.Error(), pw) {
		t.Fatalf("plain hash: %v", err)
	}
	if _, ok, _ := s.mod.MailboxPasswordHash(s.env, acct, addr); ok {
		t.Fatal("a refused hash made a mailbox")
	}
	// Both a password and a hash: refused by Validate.
	if err := s.mod.NewEnsureMailbox(&agentpb.EnsureMailboxAction{Username: "alice", Address: addr, SealedPassword: s.seal(t, addr, pw), SealedPasswordHash: s.sealHash(t, addr, sha512)}).Validate(); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Fatalf("password and hash together: %v", err)
	}
}
