package cpanel

import (
	"archive/tar"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// selfSigned returns a combined PEM (key, then a self-signed leaf for
// names, valid from nb to na).
func selfSigned(t *testing.T, nb, na time.Time, names ...string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names, NotBefore: nb, NotAfter: na,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalPKCS8PrivateKey(key)
	return append(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
}

// TestAnalyzeCertificates: each certificate of an archive is checked on
// the node as installCertificate checks one; a trusted one is reported
// with its chain and its key sealed for installCertificate's record path
// (PKCS#8 DER, CertificateKeySealContext), anything else is skipped with
// the reason and nothing sealed.
func TestAnalyzeCertificates(t *testing.T) {
	t.Cleanup(validate.SetCertificateRoots(cpaneltest.CertificateRoots()))
	now := time.Now()
	good, err := cpaneltest.CertificatePEM("shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := cpaneltest.CertificatePEM("other.example.com")
	otherKey, _ := pem.Decode(other)
	var goodCerts []byte
	for rest := good; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			goodCerts = append(goodCerts, pem.EncodeToMemory(b)...)
		}
	}
	for _, c := range []struct {
		name, domain string
		pem          []byte
		want         agentpb.ImportDisposition
		note         string
	}{
		{"trusted", "shop.example.com", good, dImport, "valid until"},
		{"www of it", "www.shop.example.com", good, dImport, "installed as it is"},
		{"self-signed", "shop.example.com", selfSigned(t, now.Add(-time.Hour), now.Add(time.Hour), "shop.example.com"), dSkip, "not trusted"},
		{"expired", "shop.example.com", selfSigned(t, now.Add(-48*time.Hour), now.Add(-time.Hour), "shop.example.com"), dSkip, "expired"},
		{"other name", "blog.example.com", good, dSkip, "does not cover blog.example.com"},
		{"stray key", "shop.example.com", append(pem.EncodeToMemory(otherKey), goodCerts...), dSkip, "does not match"},
		{"no key", "shop.example.com", goodCerts, dSkip, "no private key"},
		{"bad name", "Shop..example.com", good, dSkip, "valid domain"},
	} {
		parts, err := SplitPEM(c.pem)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		col := newCollector()
		col.certs[c.domain] = &certInfo{entry: "apache_tls/" + c.domain, parts: parts}
		r := &agentpb.CpanelReport{}
		if err := col.certificates(r, testSeal, now); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(col.items) != 1 || col.items[0].Disposition != c.want || !strings.Contains(col.items[0].Note, c.note) {
			t.Errorf("%s: items %v, want %v with %q", c.name, col.items, c.want, c.note)
			continue
		}
		if strings.Contains(col.items[0].Note, "PRIVATE KEY") {
			t.Errorf("%s: the note quotes the key: %q", c.name, col.items[0].Note)
		}
		if c.want == dSkip {
			if len(r.Certificates) != 0 {
				t.Errorf("%s: skipped but reported: %v", c.name, r.Certificates)
			}
			continue
		}
		if len(r.Certificates) != 1 {
			t.Fatalf("%s: certificates %v", c.name, r.Certificates)
		}
		crt := r.Certificates[0]
		if crt.Domain != c.domain || strings.Contains(crt.CertificatePem, "KEY") || strings.Count(crt.CertificatePem, "BEGIN CERTIFICATE") != 2 {
			t.Errorf("%s: %s %q", c.name, crt.Domain, crt.CertificatePem)
		}
		// The key opens with installCertificate's context, for this
		// domain only, as the PKCS#8 key of the leaf.
		der, err := pki.Unseal(testKey, crt.SealedPrivateKey, agentpb.CertificateKeySealContext(c.domain))
		if err != nil {
			t.Fatalf("%s: unseal: %v", c.name, err)
		}
		key, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			t.Fatalf("%s: not PKCS#8: %v", c.name, err)
		}
		b, _ := pem.Decode([]byte(crt.CertificatePem))
		leaf, _ := x509.ParseCertificate(b.Bytes)
		if !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
			t.Errorf("%s: the sealed key is not the leaf's", c.name)
		}
		if _, err := pki.Unseal(testKey, crt.SealedPrivateKey, agentpb.CertificateKeySealContext("other.example.com")); err == nil {
			t.Errorf("%s: the key opens for another domain", c.name)
		}
	}
}

// TestAnalyzeCertificateFiles: cPanel's ssl/ keeps a domain's key,
// certificate and CA bundle in files of their own, apache_tls/ one
// combined file; either way the certificate is imported, the combined file
// winning over loose ones.
func TestAnalyzeCertificateFiles(t *testing.T) {
	t.Cleanup(validate.SetCertificateRoots(cpaneltest.CertificateRoots()))
	split := func(domain string) (key, leaf, ca []byte) {
		all, err := cpaneltest.CertificatePEM(domain)
		if err != nil {
			t.Fatal(err)
		}
		var blocks [][]byte
		for rest := all; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			blocks = append(blocks, pem.EncodeToMemory(b))
		}
		return blocks[0], blocks[1], blocks[2]
	}
	visit := func(c *collector, path string, b []byte) {
		t.Helper()
		e := &Entry{Raw: "backup-x/" + path, Path: path, Header: &tar.Header{Typeflag: tar.TypeReg, Size: int64(len(b))}, R: bytes.NewReader(b)}
		if err := c.visit(e); err != nil {
			t.Fatal(err)
		}
	}
	key, leaf, ca := split("loose.example.com")
	key2, leaf2, ca2 := split("both.example.com")
	strayKey, _, _ := split("both.example.com")
	c := newCollector()
	visit(c, "ssl/loose.example.com.crt", leaf)
	visit(c, "ssl/loose.example.com.cabundle", ca)
	visit(c, "ssl/loose.example.com.key", key)
	visit(c, "ssl/both.example.com.key", strayKey)
	visit(c, "apache_tls/both.example.com", append(append(key2, leaf2...), ca2...))
	visit(c, "ssl/both.example.com.crt", leaf2)
	r := &agentpb.CpanelReport{}
	if err := c.certificates(r, testSeal, time.Now()); err != nil {
		t.Fatal(err)
	}
	if len(r.Certificates) != 2 || r.Certificates[0].Domain != "both.example.com" || r.Certificates[1].Domain != "loose.example.com" {
		t.Fatalf("certificates %v, items %v", r.Certificates, c.items)
	}
	for _, it := range c.items {
		if it.Disposition != dImport {
			t.Errorf("item %v", it)
		}
	}
}

// FuzzAnalyzeCertificate: whatever an archive's certificate files hold,
// the analysis never panics, reports each domain once, and never puts key
// material in clear into the report.
func FuzzAnalyzeCertificate(f *testing.F) {
	good, err := cpaneltest.CertificatePEM("fuzz.example.com")
	if err != nil {
		f.Fatal(err)
	}
	f.Add("apache_tls/fuzz.example.com", good)
	f.Add("ssl/fuzz.example.com.crt", good[200:])
	f.Add("ssl/fuzz.example.com.key", good[:300])
	f.Add("ssl/Bad..name", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	roots := cpaneltest.CertificateRoots()
	f.Fuzz(func(t *testing.T, path string, b []byte) {
		restore := validate.SetCertificateRoots(roots)
		defer restore()
		c := newCollector()
		e := &Entry{Raw: path, Path: path, Header: &tar.Header{Typeflag: tar.TypeReg, Size: int64(len(b))}, R: bytes.NewReader(b)}
		if err := c.visit(e); err != nil {
			return
		}
		e2 := &Entry{Raw: path, Path: path, Header: &tar.Header{Typeflag: tar.TypeReg, Size: int64(len(good))}, R: bytes.NewReader(good)}
		_ = c.visit(e2)
		r := &agentpb.CpanelReport{}
		if err := c.certificates(r, testSeal, time.Now()); err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, it := range c.items {
			if seen[it.Name] {
				t.Fatalf("%s reported twice", it.Name)
			}
			seen[it.Name] = true
			if strings.Contains(it.Note, "PRIVATE KEY") {
				t.Fatalf("note quotes a key: %q", it.Note)
			}
		}
		for _, crt := range r.Certificates {
			if strings.Contains(crt.CertificatePem, "KEY") || len(crt.SealedPrivateKey) == 0 {
				t.Fatalf("certificate %s: %q", crt.Domain, crt.CertificatePem)
			}
		}
	})
}
