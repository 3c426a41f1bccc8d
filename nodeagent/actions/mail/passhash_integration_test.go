package mail_test

import (
	"bytes"
	"crypto/x509"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions/credentials"
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

	// Backups keep such hashes with their scheme and restore them; a
	// restored hash of a scheme not given here is refused.
	home := filepath.Join(s.p.HomeBase, acct)
	hs, err := s.mod.MailboxHashes(s.env, home)
	if err != nil || hs["cpanel@"+dom] != "{SHA512-CRYPT}"+sha512 {
		t.Fatalf("backup hashes: %v, %v", hs, err)
	}
	if ok, err := s.mod.RestoreMailboxHash(testenv.Context(t), s.env, home, "cpanel@"+dom, hs["cpanel@"+dom]); !ok || err != nil {
		t.Fatalf("restore: %v, %v", ok, err)
	}
	if _, err := s.mod.RestoreMailboxHash(testenv.Context(t), s.env, home, "cpanel@"+dom, "{PLAIN}"+pw); err == nil {
		t.Fatal("restore of a {PLAIN} hash accepted")
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

// A migration's credentials step: export_credentials on the node the
// mailbox leaves, sealed to the new node's key; the new node creates the
// mailbox from it and the password logs in over IMAP. (One stack plays
// both nodes: the mailbox is deleted in between.)
func TestExportCredentialsRoundTrip(t *testing.T) {
	s := startStack(t)
	acct := s.newAccount(t)
	dom := randomDomain(t)
	addr := "move@" + dom
	s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom})
	const pw = "Saffron-Kettle-3187"
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: addr, SealedPassword: s.seal(t, addr, pw), QuotaMb: 50})
	der, err := x509.MarshalPKIXPublicKey(&s.key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	out := s.must(t, credentials.NewModule(s.mod, nil, nil).NewExport(&agentpb.ExportCredentialsAction{
		Username: acct, Mailboxes: []string{addr, "gone@" + dom}, SealTo: der,
	})).(*agentpb.ExportCredentialsResult)
	if len(out.Mailboxes) != 1 || len(out.Failed) != 1 || out.Failed[0].Item != "mailbox:gone@"+dom {
		t.Fatalf("export: %v", out)
	}
	s.must(t, s.mod.NewDeleteMailbox(&agentpb.DeleteMailboxAction{Username: acct, Address: addr}))
	if ic, err := s.imapLogin(addr, pw); err == nil {
		ic.close()
		t.Fatal("deleted mailbox logs in")
	}
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: addr, SealedPasswordHash: out.Mailboxes[0].SealedHash, QuotaMb: 50})
	ic, err := s.imapLogin(addr, pw)
	if err != nil {
		t.Fatalf("IMAP login after the move: %v", err)
	}
	ic.close()
}
