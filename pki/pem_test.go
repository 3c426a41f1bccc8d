package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"testing"
)

func TestCertsPEMRoundTrip(t *testing.T) {
	t.Parallel()
	leaf, root := certWithURIs(t, NodeURI("n1").String()), certWithURIs(t)
	chain := []*x509.Certificate{leaf, root}
	got, err := ParseCertsPEM(EncodeCertsPEM(chain))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(leaf) || !got[1].Equal(root) {
		t.Fatalf("round trip changed the chain")
	}
	// Whitespace around blocks is fine.
	if _, err := ParseCertsPEM(append(append([]byte("\n\n"), EncodeCertsPEM(chain)...), "\n  \n"...)); err != nil {
		t.Errorf("surrounding whitespace: %v", err)
	}

	key, _ := NewKey()
	keyPEM, _ := EncodeKeyPEM(key)
	for desc, data := range map[string][]byte{
		"empty":          nil,
		"not PEM":        []byte("hello"),
		"trailing junk":  append(EncodeCertsPEM(chain), "junk"...),
		"key among them": append(EncodeCertsPEM(chain), keyPEM...),
		"bad DER":        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := ParseCertsPEM(data); err == nil {
			t.Errorf("ParseCertsPEM(%s) succeeded", desc)
		}
	}
}

func TestKeyPEMRoundTrip(t *testing.T) {
	t.Parallel()
	p256, _ := NewKey()
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"p256": p256, "p384": p384, "ed25519": ed, "rsa": rsaKey} {
		data, err := EncodeKeyPEM(key)
		if err != nil {
			t.Fatalf("%s: EncodeKeyPEM: %v", name, err)
		}
		if b, _ := pem.Decode(data); b == nil || b.Type != "PRIVATE KEY" {
			t.Errorf("%s: not a PKCS#8 block", name)
		}
		got, err := ParseKeyPEM(data)
		if err != nil {
			t.Fatalf("%s: ParseKeyPEM: %v", name, err)
		}
		if !publicKeysEqual(got.Public(), key.Public()) {
			t.Errorf("%s: round trip changed the key", name)
		}
	}

	// Keys written by openssl or step in the older formats.
	sec1, _ := x509.MarshalECPrivateKey(p384)
	if k, err := ParseKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})); err != nil || !publicKeysEqual(k.Public(), p384.Public()) {
		t.Errorf("SEC 1 key: %v", err)
	}
	pkcs1 := x509.MarshalPKCS1PrivateKey(rsaKey)
	if k, err := ParseKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: pkcs1})); err != nil || !publicKeysEqual(k.Public(), rsaKey.Public()) {
		t.Errorf("PKCS#1 key: %v", err)
	}

	for desc, data := range map[string][]byte{
		"empty":       nil,
		"certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"bad DER":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
	} {
		if _, err := ParseKeyPEM(data); err == nil {
			t.Errorf("ParseKeyPEM(%s) succeeded", desc)
		}
	}
}
