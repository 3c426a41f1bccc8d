package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"
)

func TestGenerateMaterial(t *testing.T) {
	m := newTestMaterial(t)

	// The control plane stores Material as JSON in etcd.
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var m2 Material
	if err := json.Unmarshal(b, &m2); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"rootCert"`, `"rootKey"`, `"intermediateCert"`, `"intermediateKey"`, `"provisionerKey"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON lacks %s", key)
		}
	}

	now := time.Now()
	root, err := parseOneCert(m2.RootCert, "root")
	if err != nil {
		t.Fatal(err)
	}
	inter, err := parseOneCert(m2.IntermediateCert, "intermediate")
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, c *x509.Certificate, years int, pathLen int) {
		t.Helper()
		if !c.IsCA || !c.BasicConstraintsValid {
			t.Errorf("%s is not a CA", name)
		}
		if c.MaxPathLen != pathLen || (pathLen == 0 && !c.MaxPathLenZero) {
			t.Errorf("%s path length = %d (zero=%v), want %d", name, c.MaxPathLen, c.MaxPathLenZero, pathLen)
		}
		if c.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("%s cannot sign certificates", name)
		}
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s key is %T, want ECDSA P-256", name, c.PublicKey)
		}
		life := c.NotAfter.Sub(now)
		want := time.Duration(years) * 365 * 24 * time.Hour
		if life < want-time.Hour || life > want+time.Hour {
			t.Errorf("%s lives %v more, want about %v", name, life, want)
		}
	}
	check("root", root, 10, 1)
	check("intermediate", inter, 5, 0)
	if err := inter.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate not signed by root: %v", err)
	}
	if !strings.Contains(root.Subject.CommonName, "test cluster") {
		t.Errorf("root CN %q does not name the cluster", root.Subject.CommonName)
	}

	for name, data := range map[string][]byte{"root": m2.RootKey, "intermediate": m2.IntermediateKey} {
		block, _ := pem.Decode(data)
		if block == nil || block.Type != "PRIVATE KEY" {
			t.Errorf("%s key is not a PKCS#8 PEM block", name)
			continue
		}
		if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
			t.Errorf("%s key: %v", name, err)
		}
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(m2.ProvisionerKey, &jwk); err != nil {
		t.Fatalf("provisioner key: %v", err)
	}
	if jwk.IsPublic() || jwk.KeyID == "" {
		t.Errorf("provisioner key: public=%v kid=%q, want a private key with a kid", jwk.IsPublic(), jwk.KeyID)
	}

	ca := newTestCAFrom(t, &m2, 0)
	sum := sha256.Sum256(root.Raw)
	if got, want := ca.RootFingerprint(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("RootFingerprint = %s, want %s", got, want)
	}
	if ca.CertLifetime() != DefaultCertLifetime {
		t.Errorf("CertLifetime = %v, want %v", ca.CertLifetime(), DefaultCertLifetime)
	}
	if !ca.Root().Equal(root) {
		t.Error("Root differs from the material's")
	}
	if _, err := root.Verify(x509.VerifyOptions{Roots: ca.RootPool()}); err != nil {
		t.Errorf("RootPool does not hold the root: %v", err)
	}
}

func TestGenerateMaterialClusterName(t *testing.T) {
	for _, name := range []string{"", strings.Repeat("x", 41), "bad\nname", "bad\xff"} {
		if _, err := GenerateMaterial(name); err == nil {
			t.Errorf("GenerateMaterial(%q) succeeded", name)
		}
	}
}

func TestNewRejectsBadInput(t *testing.T) {
	m := newTestMaterial(t)
	other := newTestMaterial(t)

	tests := []struct {
		desc string
		mod  func(m *Material)
		opts Options
	}{
		{"lifetime below minimum", nil, Options{CertLifetime: time.Millisecond}},
		{"negative lifetime", nil, Options{CertLifetime: -time.Hour}},
		{"lifetime beyond the intermediate", nil, Options{CertLifetime: 6 * 365 * 24 * time.Hour}},
		{"intermediate from another root", func(m *Material) {
			m.IntermediateCert, m.IntermediateKey = other.IntermediateCert, other.IntermediateKey
		}, Options{}},
		{"intermediate key mismatch", func(m *Material) { m.IntermediateKey = other.IntermediateKey }, Options{}},
		{"root key mismatch", func(m *Material) { m.RootKey = other.RootKey }, Options{}},
		{"intermediate as root", func(m *Material) { m.RootCert = m.IntermediateCert }, Options{}},
		{"garbled root", func(m *Material) { m.RootCert = []byte("not pem") }, Options{}},
		{"missing provisioner key", func(m *Material) { m.ProvisionerKey = nil }, Options{}},
		{"public provisioner key", func(m *Material) {
			var jwk jose.JSONWebKey
			if err := json.Unmarshal(m.ProvisionerKey, &jwk); err != nil {
				t.Fatal(err)
			}
			pub := jwk.Public()
			b, err := json.Marshal(&pub)
			if err != nil {
				t.Fatal(err)
			}
			m.ProvisionerKey = b
		}, Options{}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			mm := *m
			if tt.mod != nil {
				tt.mod(&mm)
			}
			tt.opts.Logger = testLogger()
			if _, err := New(&mm, tt.opts); err == nil {
				t.Fatal("New succeeded")
			}
		})
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil) succeeded")
	}
	// The root key is optional: replicas only need it to re-issue the
	// intermediate.
	mm := *m
	mm.RootKey = nil
	if _, err := New(&mm, Options{Logger: testLogger()}); err != nil {
		t.Errorf("New without root key: %v", err)
	}
}
