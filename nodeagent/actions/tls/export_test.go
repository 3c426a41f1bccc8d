package tls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// servedEnv is a node whose vhost for site serves chain with key (DER).
func servedEnv(t *testing.T, site string, chain, keyDER []byte) *actions.Env {
	t.Helper()
	env := &actions.Env{Logger: testLogger(), Profile: platform.Debian12(t.TempDir())}
	cp, kp := web.CertFiles(env.Profile.Web(), site)
	if err := os.MkdirAll(env.Profile.Web().CertDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cp, chain, 0o644); err != nil {
		t.Fatal(err)
	}
	return env
}

// The source reads the key its vhost serves only for the certificate the
// control plane names, seals it to the target, and the target's install
// action unseals and serves it: the key never crosses in clear.
func TestCertificateKeyMovesSealed(t *testing.T) {
	ca := newTestCA(t)
	now := time.Now()
	chain, keyDER := ca.leaf(t, []string{"example.com", "www.example.com"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	other, _ := ca.leaf(t, []string{"example.com"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	_, strayKey := ca.leaf(t, []string{"example.com"}, now.Add(-time.Hour), now.Add(24*time.Hour))
	ctx := context.Background()

	src := NewModule(&recorder{}, nil)
	env := servedEnv(t, "example.com", chain, keyDER)
	der, err := src.CertificateKey(ctx, env, "example.com", chain)
	if err != nil || !bytes.Equal(der, keyDER) {
		t.Fatalf("exported key differs (%v)", err)
	}
	// Refusals: another certificate than the one served, a key that is
	// not the leaf's, nothing served, a name that is not a domain.
	for _, c := range []struct {
		name  string
		env   *actions.Env
		site  string
		chain []byte
		want  string
	}{
		{"another certificate", env, "example.com", other, "serves another certificate"},
		{"mismatched served key", servedEnv(t, "example.com", chain, strayKey), "example.com", chain, "does not match"},
		{"nothing served", env, "example.net", chain, "no such file"},
		{"path in the name", env, "../example.com", chain, "domain"},
		{"no chain", env, "example.com", nil, "no certificate chain"},
	} {
		_, err := src.CertificateKey(ctx, c.env, c.site, c.chain)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%s: the error shows a key", c.name)
		}
	}

	// Sealed to the target's node key, installed there.
	target, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sealed, err := pki.Seal(&target.PublicKey, der, agentpb.CertificateKeySealContext("example.com"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, keyDER[len(keyDER)-32:]) {
		t.Fatal("sealed key holds the key's bytes")
	}
	rec := &recorder{}
	dst := NewModule(rec, nil)
	denv := &actions.Env{Logger: testLogger(), Unseal: func(b []byte, c string) ([]byte, error) { return pki.Unseal(target, b, c) }}
	a := dst.NewInstall(&agentpb.InstallCertificateAction{Id: "example.com", Username: "alice", Site: "example.com",
		ChainPem: chain, SealedPrivateKey: sealed, AllowUntrusted: true})
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, denv); err != nil {
		t.Fatal(err)
	}
	got := rec.last(t)
	blk, _ := pem.Decode(got.key)
	if got.host != "example.com" || blk == nil || !bytes.Equal(blk.Bytes, keyDER) || !bytes.Equal(got.chain, chain) {
		t.Fatalf("target installed %s", got.host)
	}
	k, _ := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if _, ok := k.(*ecdsa.PrivateKey); !ok {
		t.Fatalf("installed key %T", k)
	}
}
