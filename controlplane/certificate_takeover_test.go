package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestCertImportedTakenOverByACME: an installed certificate with autoRenew
// on (what a cPanel import installs) is served until its renewal time,
// then becomes the site's automatic certificate and is ordered from the
// ACME server before it expires; one without autoRenew is left to expire
// (TestCertInstallCustom).
func TestCertImportedTakenOverByACME(t *testing.T) {
	e := startCertEnv(t, "certo", "certo.example.com")
	ctx := context.Background()
	const id = "certo.example.com"
	e.waitCert(t, id, "issued", issuedState)
	// The imported certificate: 24 s of validity, renewal time 8 to 10 s
	// before it expires (room for a loaded machine on either side).
	e.node.lifetime.Store(int64(24 * time.Second))
	leaf := e.node.issue(t, []string{id, "www." + id})
	e.node.lifetime.Store(int64(time.Hour))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	ns, _, err := e.st.GetNodeState(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := pki.SealDER(ns.PublicKey, der, agentpb.CertificateKeySealContext(id))
	if err != nil {
		t.Fatal(err)
	}
	e.change(t, id, func(c *store.Certificate) {
		c.Auto, c.AutoRenew, c.Custom = false, true, true
		c.CustomChainPEM, c.SealedKey = string(leaf.GetChainPem()), sealed
	})
	c := e.waitCert(t, id, "installed", func(c *store.Certificate) bool { return c.Status.Serial == leaf.GetSerial() && issuedState(c) })
	if !c.Custom || c.Auto {
		t.Fatalf("taken over at once: %+v", c)
	}
	orders := len(e.node.tasks("issue_certificate"))
	testenv.WaitFor(t, 40*time.Second, id+": taken over by ACME", func() bool {
		got, err := e.st.GetCertificate(ctx, id)
		if err != nil {
			return false
		}
		c = got
		return c.Status.Serial != leaf.GetSerial() && issuedState(c)
	})
	if c.Custom || !c.Auto || !c.AutoRenew || c.CustomChainPEM != "" || len(c.SealedKey) != 0 || !hasEvent(c, "acme-takeover", leaf.GetSerial()) {
		t.Fatalf("after the takeover: %+v", c)
	}
	if len(e.node.tasks("issue_certificate")) <= orders {
		t.Fatal("no order sent for the takeover")
	}
	if !c.Status.NotBefore.Before(time.Unix(leaf.GetNotAfterUnix(), 0)) {
		t.Fatalf("ordered at %s, after the imported certificate expired at %s", c.Status.NotBefore, time.Unix(leaf.GetNotAfterUnix(), 0))
	}
}
