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

func keyPair(t testing.TB) (*ecdsa.PrivateKey, []byte) {
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
		fakeDB{"mariadb alice alice_app": native, "postgresql alice alice_pg": scram}, nil)
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
	m := NewModule(fakeMail{}, fakeDB{}, nil)
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
		"certificate path": func(r *agentpb.ExportCredentialsAction) {
			r.Certificates = []*agentpb.ExportCertificate{{Id: "../example.com", ChainPem: []byte("x")}}
		},
		"certificate without chain": func(r *agentpb.ExportCredentialsAction) {
			r.Certificates = []*agentpb.ExportCertificate{{Id: "example.com"}}
		},
		"certificate twice": func(r *agentpb.ExportCredentialsAction) {
			c := &agentpb.ExportCertificate{Id: "example.com", ChainPem: []byte("x")}
			r.Certificates = []*agentpb.ExportCertificate{c, c}
		},
		"chain too large": func(r *agentpb.ExportCredentialsAction) {
			r.Certificates = []*agentpb.ExportCertificate{{Id: "example.com", ChainPem: make([]byte, maxChainPEM+1)}}
		},
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

// fakeCerts serves one key per site, for the chain "chain:SITE" only.
type fakeCerts map[string][]byte

func (f fakeCerts) CertificateKey(_ context.Context, _ *actions.Env, site string, chainPEM []byte) ([]byte, error) {
	k, ok := f[site]
	if !ok || string(chainPEM) != "chain:"+site {
		return nil, errors.New(site + " serves another certificate")
	}
	return append([]byte(nil), k...), nil
}

// Installed certificates' keys are exported sealed to the target under
// their certificate's context; one that cannot be read is reported, and
// the rest still go.
func TestExportCertificateKeys(t *testing.T) {
	target, der := keyPair(t)
	key := []byte("pkcs8-der-of-example.com")
	m := NewModule(nil, nil, fakeCerts{"example.com": key})
	a := m.NewExport(&agentpb.ExportCredentialsAction{Username: "alice", SealTo: der, Certificates: []*agentpb.ExportCertificate{
		{Id: "example.com", ChainPem: []byte("chain:example.com")},
		{Id: "example.net", ChainPem: []byte("chain:example.net")},
	}})
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	out, err := a.Apply(context.Background(), &actions.Env{})
	if err != nil {
		t.Fatal(err)
	}
	res := out.(*agentpb.ExportCredentialsResult)
	if len(res.Certificates) != 1 || res.Certificates[0].Id != "example.com" {
		t.Fatalf("certificates: %v", res.Certificates)
	}
	got, err := pki.Unseal(target, res.Certificates[0].SealedPrivateKey, agentpb.CertificateKeySealContext("example.com"))
	if err != nil || string(got) != string(key) {
		t.Fatalf("unsealed %q, %v", got, err)
	}
	if _, err := pki.Unseal(target, res.Certificates[0].SealedPrivateKey, agentpb.MailPasswordHashSealContext("example.com")); err == nil {
		t.Fatal("a certificate key opens under another context")
	}
	if len(res.Failed) != 1 || res.Failed[0].Item != "certificate:example.net" {
		t.Fatalf("failed: %v", res.Failed)
	}
	if strings.Contains(res.String(), string(key)) {
		t.Fatal("result holds a clear key")
	}
	// No tls module: every certificate is reported, none silently dropped.
	res2, err := NewModule(nil, nil, nil).NewExport(&agentpb.ExportCredentialsAction{Username: "alice", SealTo: der,
		Certificates: []*agentpb.ExportCertificate{{Id: "example.com", ChainPem: []byte("chain:example.com")}}}).Apply(context.Background(), &actions.Env{})
	if err != nil || len(res2.(*agentpb.ExportCredentialsResult).Failed) != 1 {
		t.Fatalf("without a tls module: %v, %v", res2, err)
	}
}

// FuzzExportCertificatesValidate: Validate never panics on a certificate
// entry, and accepts only canonical domains with a bounded chain.
func FuzzExportCertificatesValidate(f *testing.F) {
	_, der := keyPair(f)
	f.Add("example.com", []byte("chain"))
	f.Add("../etc/passwd", []byte("x"))
	f.Add("", []byte(nil))
	m := NewModule(nil, nil, nil)
	f.Fuzz(func(t *testing.T, id string, chain []byte) {
		r := &agentpb.ExportCredentialsAction{Username: "alice", SealTo: der,
			Certificates: []*agentpb.ExportCertificate{{Id: id, ChainPem: chain}}}
		if m.NewExport(r).Validate() == nil {
			if strings.ContainsAny(id, "/\\\x00") || len(chain) == 0 || len(chain) > maxChainPEM {
				t.Fatalf("accepted %q with a %d-byte chain", id, len(chain))
			}
		}
	})
}
