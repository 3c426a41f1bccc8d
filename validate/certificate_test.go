package validate

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

func (ca *testCA) leaf(t testing.TB, nb, na time.Time, names ...string) (certPEM, keyPEM string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names, NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalPKCS8PrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}))
}

// TestCheckCertificateChain: the key-less check the API runs on a
// certificate whose key is sealed to a node. The installCertificate cases
// (with keys) are graph's TestCertInstallCheck.
func TestCheckCertificateChain(t *testing.T) {
	ca, other := newTestCA(t, "Test Root"), newTestCA(t, "Other Root")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	now := time.Now()
	day := 24 * time.Hour
	good, goodKey := ca.leaf(t, now.Add(-day), now.Add(30*day), "shop.example.com", "www.shop.example.com")
	expired, _ := ca.leaf(t, now.Add(-60*day), now.Add(-day), "shop.example.com")
	untrusted, _ := other.leaf(t, now.Add(-day), now.Add(30*day), "shop.example.com")
	for _, c := range []struct {
		name, domain, cert, chain string
		untrusted                 bool
		want                      string // "": accepted
		trusted                   bool
	}{
		{"good", "shop.example.com", good, "", false, "", true},
		{"good with root", "www.shop.example.com", good + ca.pem, "", false, "", true},
		{"root as chain", "shop.example.com", good, ca.pem, false, "", true},
		{"expired", "shop.example.com", expired, "", false, "expired", false},
		{"wrong name", "other.example.com", good, "", false, "does not cover", false},
		{"untrusted", "shop.example.com", untrusted, "", false, "does not verify", false},
		{"untrusted allowed", "shop.example.com", untrusted + other.pem, "", true, "", false},
		{"ca first", "shop.example.com", ca.pem + good, "", false, "CA certificate", false},
		{"key in chain", "shop.example.com", good, goodKey, false, "give it in privateKeyPEM", false},
		{"key with certificate", "shop.example.com", good + goodKey, "", false, "give it in privateKeyPEM", false},
		{"nothing", "shop.example.com", "", "", false, "no CERTIFICATE", false},
		{"huge", "shop.example.com", strings.Repeat("A", MaxCertPEMBytes+1), "", false, "KiB", false},
	} {
		got, err := CheckCertificateChain(c.domain, c.cert, c.chain, c.untrusted, roots, now)
		if c.want != "" {
			var ve *Error
			if !errors.As(err, &ve) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v, want a validate.Error with %q", c.name, err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("%s: the error quotes key material: %v", c.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: refused: %v", c.name, err)
			continue
		}
		if got.Trusted != c.trusted || (got.VerifyError == "") != c.trusted {
			t.Errorf("%s: trusted %v (%q), want %v", c.name, got.Trusted, got.VerifyError, c.trusted)
		}
		if !strings.HasPrefix(got.ChainPEM, good[:40]) && c.name != "untrusted allowed" {
			t.Errorf("%s: the chain does not start with the leaf: %q", c.name, got.ChainPEM)
		}
	}
	// The roots hook: what SetCertificateRoots sets, CertificateRoots
	// returns, until restored.
	restore := SetCertificateRoots(roots)
	if p, err := CertificateRoots(); err != nil || !p.Equal(roots) {
		t.Errorf("CertificateRoots after SetCertificateRoots: %v", err)
	}
	restore()
	if p, err := CertificateRoots(); err == nil && p.Equal(roots) {
		t.Error("CertificateRoots not restored")
	}
}

// FuzzCheckCertificateChain: arbitrary PEM never panics, and whatever is
// accepted is re-encoded certificates only, leaf first, covering the name.
func FuzzCheckCertificateChain(f *testing.F) {
	ca := newTestCA(f, "Fuzz Root")
	now := time.Now()
	good, key := ca.leaf(f, now.Add(-time.Hour), now.Add(time.Hour), "fuzz.example.com")
	f.Add(good, "")
	f.Add(good, ca.pem)
	f.Add(good+key, "")
	f.Add(ca.pem, good)
	f.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	f.Fuzz(func(t *testing.T, certPEM, chainPEM string) {
		got, err := CheckCertificateChain("fuzz.example.com", certPEM, chainPEM, true, roots, now)
		if err != nil {
			var ve *Error
			if !errors.As(err, &ve) {
				t.Fatalf("not a validate.Error: %v", err)
			}
			return
		}
		if strings.Contains(got.ChainPEM, "KEY") || got.Leaf.VerifyHostname("fuzz.example.com") != nil {
			t.Fatalf("accepted %q", got.ChainPEM)
		}
		if b, _ := pem.Decode([]byte(got.ChainPEM)); b == nil || string(b.Bytes) != string(got.Leaf.Raw) {
			t.Fatal("the chain does not start with the leaf")
		}
	})
}
