package credentials

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// fakeMail and fakeDB are the installed hashes of one node.
type fakeMail map[string]string // "username address" -> hash

func (f fakeMail) MailboxPasswordHash(_ *actions.Env, username, address string) (string, bool, error) {
	h, ok := f[username+" "+address]
	if h == "broken" {
		return "", true, errors.New("installed hash is not one Dovecot reads")
	}
	return h, ok, nil
}

type fakeDB map[string]string // "engine owner user" -> hash

func (f fakeDB) UserPasswordHash(_ context.Context, _ *actions.Env, engine, owner, user string) (string, bool, error) {
	h, ok := f[engine+" "+owner+" "+user]
	return h, ok, nil
}

const (
	sha512 = "{SHA512-CRYPT}$6$szaxOBCB0Ngf8MV5$1J.nLnsnhNuILGGHJ/.KFqhdcurnt0EM3q81.IzvDVXCtcykYQIKEZesOnNZ8dM67zSdwFYJ1gg4yawUk8Vrs/"
	native = "*6BB4837EB74329105EE4568DDA7DC67ED2CA2AD9"
	scram  = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$Jnr2sQVzH2B8PNyaD7c3bB6yY1d2m5LhJbQpTKtYI8A=:s8XoQ3pGn4gXUjGQ0y4iHEgx9bU5rSL1g3hmKxBzYDk="
)

func keyPair(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return k, der
}

// Export from one node's state, unseal with the target's key: the hashes
// match; what is missing is reported as failed, not fatal.
func TestExportRoundTrip(t *testing.T) {
	target, der := keyPair(t)
	m := NewModule(
		fakeMail{"alice alice@example.com": sha512, "alice bob@example.com": "broken", "bob carol@example.com": sha512},
		fakeDB{"mariadb alice alice_app": native, "postgresql alice alice_pg": scram})
	a := m.NewExport(&agentpb.ExportCredentialsAction{
		Username:  "alice",
		Mailboxes: []string{"alice@example.com", "bob@example.com", "carol@example.com"},
		DatabaseUsers: []*agentpb.ExportDatabaseUser{
			{Name: "alice_app", Engine: agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB},
			{Name: "alice_pg", Engine: agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL},
			{Name: "alice_gone"},
		},
		SealTo: der,
	})
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	out, err := a.Apply(context.Background(), &actions.Env{})
	if err != nil {
		t.Fatal(err)
	}
	res := out.(*agentpb.ExportCredentialsResult)
	open := func(s *agentpb.SealedHash, ctx string) string {
		b, err := pki.Unseal(target, s.SealedHash, ctx)
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		return string(b)
	}
	if len(res.Mailboxes) != 1 || res.Mailboxes[0].Name != "alice@example.com" ||
		open(res.Mailboxes[0], agentpb.MailPasswordHashSealContext("alice@example.com")) != sha512 {
		t.Fatalf("mailboxes: %v", res.Mailboxes)
	}
	if len(res.DatabaseUsers) != 2 || open(res.DatabaseUsers[0], agentpb.DatabasePasswordHashSealContext("alice_app")) != native ||
		open(res.DatabaseUsers[1], agentpb.DatabasePasswordHashSealContext("alice_pg")) != scram {
		t.Fatalf("database users: %v", res.DatabaseUsers)
	}
	// Sealed for one item only: the context binds it.
	if _, err := pki.Unseal(target, res.DatabaseUsers[0].SealedHash, agentpb.DatabasePasswordHashSealContext("alice_pg")); err == nil {
		t.Fatal("a hash opens under another user's context")
	}
	var failed []string
	for _, f := range res.Failed {
		failed = append(failed, f.Item)
		if strings.Contains(f.Error, "$6$") {
			t.Fatalf("failure shows a hash: %v", f)
		}
	}
	if strings.Join(failed, ",") != "mailbox:bob@example.com,mailbox:carol@example.com,database_user:alice_gone" {
		t.Fatalf("failed: %v", res.Failed)
	}
	// Clear hashes never appear in the result.
	if s := res.String(); strings.Contains(s, "$6$") || strings.Contains(s, native) || strings.Contains(s, "SCRAM") {
		t.Fatal("result holds a clear hash")
	}
}

func TestExportValidate(t *testing.T) {
	_, der := keyPair(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edDER, _ := x509.MarshalPKIXPublicKey(edPub)
	ok := func() *agentpb.ExportCredentialsAction {
		return &agentpb.ExportCredentialsAction{Username: "alice", Mailboxes: []string{"a@example.com"},
			DatabaseUsers: []*agentpb.ExportDatabaseUser{{Name: "alice_app"}}, SealTo: der}
	}
	m := NewModule(fakeMail{}, fakeDB{})
	if err := m.NewExport(ok()).Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(r *agentpb.ExportCredentialsAction){
		"bad username":    func(r *agentpb.ExportCredentialsAction) { r.Username = "Alice;" },
		"no key":          func(r *agentpb.ExportCredentialsAction) { r.SealTo = nil },
		"garbage key":     func(r *agentpb.ExportCredentialsAction) { r.SealTo = []byte("not a key") },
		"ed25519 key":     func(r *agentpb.ExportCredentialsAction) { r.SealTo = edDER },
		"bad address":     func(r *agentpb.ExportCredentialsAction) { r.Mailboxes = []string{"a@b@example.com"} },
		"non-canonical":   func(r *agentpb.ExportCredentialsAction) { r.Mailboxes = []string{"A@Example.com"} },
		"address twice":   func(r *agentpb.ExportCredentialsAction) { r.Mailboxes = []string{"a@example.com", "a@example.com"} },
		"foreign db user": func(r *agentpb.ExportCredentialsAction) { r.DatabaseUsers[0].Name = "bob_app" },
		"bad db user":     func(r *agentpb.ExportCredentialsAction) { r.DatabaseUsers[0].Name = "alice_`x`" },
		"unknown engine":  func(r *agentpb.ExportCredentialsAction) { r.DatabaseUsers[0].Engine = 9 },
		"db user twice": func(r *agentpb.ExportCredentialsAction) {
			r.DatabaseUsers = append(r.DatabaseUsers, r.DatabaseUsers[0])
		},
		"too many mailboxes": func(r *agentpb.ExportCredentialsAction) { r.Mailboxes = make([]string, MaxMailboxes+1) },
	} {
		r := ok()
		mod(r)
		if err := m.NewExport(r).Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := m.NewExport(nil).Validate(); err == nil {
		t.Error("nil request accepted")
	}
}
