package web

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestSelfSignedIsOurs(t *testing.T) {
	now := time.Now()
	chain, key, err := selfSigned([]string{"example.com", "www.example.com"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pki.NormalizeKeyPair(chain, key); err != nil {
		t.Fatalf("self-signed pair does not match: %v", err)
	}
	leaf := leafOf(chain)
	if !isOurs(leaf) || !replaceable(chain) {
		t.Fatal("our self-signed certificate is not recognised as ours")
	}
	if leaf.VerifyHostname("www.example.com") != nil || leaf.NotAfter.Sub(now) < 89*24*time.Hour {
		t.Errorf("names %v, not after %v", leaf.DNSNames, leaf.NotAfter)
	}
	// Another self-signed certificate with our organization but not
	// signed by its own key, and one signed by a CA, are not ours.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{Organization: []string{selfSignedOrg}},
		NotBefore: now, NotAfter: now.Add(time.Hour), DNSNames: []string{"example.com"}}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: now, NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &other.PublicKey, other)
	if err != nil {
		t.Fatal(err)
	}
	issued := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if replaceable(issued) {
		t.Error("a CA-issued certificate is replaceable")
	}
	if !replaceable(nil) || !replaceable([]byte("garbage")) {
		t.Error("a missing or unreadable certificate is not replaceable")
	}
}

func TestNeedSelfSigned(t *testing.T) {
	w := platform.Debian12(t.TempDir()).Web()
	if err := ensureCertDir(w); err != nil {
		t.Fatal(err)
	}
	put := func(names []string, at time.Time) {
		c, k, err := selfSigned(names, at)
		if err != nil {
			t.Fatal(err)
		}
		cp, kp := CertFiles(w, "example.com")
		os.WriteFile(cp, c, 0o644)
		os.WriteFile(kp, k, 0o600)
	}
	now := time.Now()
	need := func() bool {
		n, err := needSelfSigned(w, "example.com", []string{"example.com", "www.example.com"}, now)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if !need() {
		t.Error("missing: not needed")
	}
	put([]string{"www.example.com", "example.com"}, now)
	if need() {
		t.Error("current, names in another order: needed")
	}
	put([]string{"example.com"}, now)
	if !need() {
		t.Error("names changed: not needed")
	}
	put([]string{"example.com", "www.example.com"}, now.Add(-70*24*time.Hour))
	if !need() {
		t.Error("20 days left: not needed")
	}
}

func TestValidateTLSFields(t *testing.T) {
	for _, tc := range []struct {
		hsts uint32
		ok   bool
	}{{0, true}, {300, true}, {MaxHSTSMaxAge, true}, {MaxHSTSMaxAge + 1, false}} {
		s := &agentpb.Site{Domain: "example.com", Docroot: "public_html", HttpsRedirect: true, HstsMaxAge: tc.hsts}
		if err := ValidateSpec("alice", &agentpb.WebSpec{Sites: []*agentpb.Site{s}}); (err == nil) != tc.ok {
			t.Errorf("hsts %d: %v", tc.hsts, err)
		}
	}
}

// FuzzValidateSpecTLS: whatever passes ValidateSpec with the TLS fields
// renders the structure of the same site with benign values.
func FuzzValidateSpecTLS(f *testing.F) {
	f.Add("example.com", "public_html", uint32(0), false, false)
	f.Add("example.com", "public_html", uint32(63072000), true, true)
	f.Add("example.com;", "x{", uint32(1<<31), true, false)
	w := platform.Debian12("/srv/np").Web()
	o := Owner{Username: "alice", UID: 1000, GID: 1000, Home: "/srv/np/home/alice"}
	f.Fuzz(func(t *testing.T, domain, docroot string, hsts uint32, redirect, suspended bool) {
		s := &agentpb.Site{Domain: domain, Docroot: docroot, HttpsRedirect: redirect, HstsMaxAge: hsts}
		if ValidateSpec("alice", &agentpb.WebSpec{Sites: []*agentpb.Site{s}}) != nil {
			return
		}
		_, conf, err := renderSite(w, []string{"80"}, o, s, suspended)
		if err != nil {
			t.Fatalf("valid spec does not render: %v", err)
		}
		ref := &agentpb.Site{Domain: "a.example.com", Docroot: "public_html", HttpsRedirect: redirect}
		if hsts > 0 {
			ref.HstsMaxAge = 1
		}
		_, want, _ := renderSite(w, []string{"80"}, o, ref, suspended)
		if !sameCounts(structural(conf), structural(want)) {
			t.Fatalf("user input changed the structure of the server block:\n%s", conf)
		}
		if strings.Count(string(conf), "acme-challenge") != strings.Count(string(want), "acme-challenge") {
			t.Fatal("challenge locations differ")
		}
	})
}
