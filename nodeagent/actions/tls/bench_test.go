package tls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/lego"
	"github.com/go-acme/lego/v5/registration"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// The issue benchmarks order one name per operation from Pebble with its
// real validation authority, through the whole action (account on disk,
// challenge provider, key, installer double); the Bare ones do the same
// order with lego alone, so the difference is nPanel's overhead. Run with
// -benchtime=Nx: one operation takes seconds. The account is registered
// before the timer starts in both.

func benchIssue(b *testing.B, ch agentpb.AcmeChallenge) {
	e := newACMEEnv(b, "example.com")
	req := issueReq(e, ch, "example.com")
	if _, err := e.m.client(context.Background(), e.env, req.Acme); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := applyIssue(b, e, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssueHTTP01(b *testing.B) { benchIssue(b, agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01) }
func BenchmarkIssueDNS01(b *testing.B)  { benchIssue(b, agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01) }

// bareHTTP writes tokens where the test's file server serves them.
type bareHTTP struct{ dir string }

func (p bareHTTP) Present(_ context.Context, _, token, keyAuth string) error {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(p.dir, token), []byte(keyAuth), 0o644)
}

func (p bareHTTP) CleanUp(_ context.Context, _, token, _ string) error {
	return os.Remove(filepath.Join(p.dir, token))
}

// bareDNS writes the TXT straight into PowerDNS.
type bareDNS struct{ e *acmeEnv }

func (p bareDNS) Present(ctx context.Context, domain, _, keyAuth string) error {
	return p.e.publish(ctx, &agentpb.PublishChallengeRequest{Fqdn: challengeFQDN(domain), Value: txtValue(keyAuth)})
}

func (p bareDNS) CleanUp(ctx context.Context, domain, _, keyAuth string) error {
	return p.e.publish(ctx, &agentpb.PublishChallengeRequest{Fqdn: challengeFQDN(domain), Value: txtValue(keyAuth), Remove: true})
}

func benchBare(b *testing.B, ch agentpb.AcmeChallenge) {
	e := newACMEEnv(b, "example.com")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	user := &account{email: "admin@example.com", key: key}
	cfg := lego.NewConfig(user)
	cfg.CADirURL = e.pebble.DirectoryURL
	cfg.HTTPClient = e.pebble.HTTPClient
	ctx := context.Background()
	cl, err := lego.NewClient(cfg)
	if err != nil {
		b.Fatal(err)
	}
	if user.reg, err = cl.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true}); err != nil {
		b.Fatal(err)
	}
	if cl, err = lego.NewClient(cfg); err != nil {
		b.Fatal(err)
	}
	if ch == agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01 {
		err = cl.Challenge.SetHTTP01Provider(bareHTTP{e.chalDir})
	} else {
		// No propagation check at all: PowerDNS serves a change at once.
		// This is the floor; the action checks every nameserver.
		err = cl.Challenge.SetDNS01Provider(bareDNS{e}, dns01.PropagationWait(0, true))
	}
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := cl.Certificate.Obtain(ctx, certificate.ObtainRequest{Domains: []string{"example.com"}, KeyType: certcrypto.EC256, Bundle: true}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBareLegoHTTP01(b *testing.B) { benchBare(b, agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01) }
func BenchmarkBareLegoDNS01(b *testing.B)  { benchBare(b, agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01) }

// BenchmarkIssueLocalWork is what the action adds around the ACME round
// trip on the node, without the network: the account read from disk,
// the certificate key, its PEM, parsing the chain, the result and the
// installer call.
func BenchmarkIssueLocalWork(b *testing.B) {
	ca := newTestCA(b)
	now := time.Now()
	chain, _ := ca.leaf(b, []string{"example.com", "www.example.com"}, now.Add(-time.Hour), now.Add(time.Hour))
	dir := b.TempDir()
	if _, err := loadAccount(dir, "admin@example.com"); err != nil {
		b.Fatal(err)
	}
	web := &recorder{}
	m := NewModule(web, nil)
	env := &actions.Env{Logger: testLogger()}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := loadAccount(dir, "admin@example.com"); err != nil {
			b.Fatal(err)
		}
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		kp, err := keyPEM(key)
		if err != nil {
			b.Fatal(err)
		}
		certs, err := validChain(chain)
		if err != nil {
			b.Fatal(err)
		}
		_ = result(chain, certs[0])
		if _, err := m.install(ctx, env, "example.com", false, chain, kp, certs[0]); err != nil {
			b.Fatal(err)
		}
		web.installs = web.installs[:0]
	}
}
