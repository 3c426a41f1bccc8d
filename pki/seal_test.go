package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"testing"
)

func TestSealRoundTrip(t *testing.T) {
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("correct horse battery staple")
	sealed, err := SealDER(der, secret, "db-password")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret) {
		t.Fatal("sealed value contains the plaintext")
	}
	got, err := Unseal(key, sealed, "db-password")
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	again, _ := SealDER(der, secret, "db-password")
	if bytes.Equal(again, sealed) {
		t.Error("two seals of one secret are equal; the ephemeral key or nonce is not fresh")
	}

	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	for name, c := range map[string]struct {
		key     *ecdsa.PrivateKey
		sealed  []byte
		context string
	}{
		"other key":       {other, sealed, "db-password"},
		"other curve":     {p384, sealed, "db-password"},
		"other context":   {key.(*ecdsa.PrivateKey), sealed, "mail-password"},
		"tampered":        {key.(*ecdsa.PrivateKey), tampered, "db-password"},
		"truncated":       {key.(*ecdsa.PrivateKey), sealed[:40], "db-password"},
		"empty":           {key.(*ecdsa.PrivateKey), nil, "db-password"},
		"unknown version": {key.(*ecdsa.PrivateKey), append([]byte{9}, sealed[1:]...), "db-password"},
	} {
		if _, err := Unseal(c.key, c.sealed, c.context); !errors.Is(err, ErrUnseal) {
			t.Errorf("%s: Unseal err = %v, want ErrUnseal", name, err)
		}
	}
}

func FuzzUnseal(f *testing.F) {
	key, _ := NewKey()
	good, _ := Seal(key.Public(), []byte("pw"), "c")
	f.Add(good)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		pt, err := Unseal(key, b, "c")
		if err == nil && !bytes.Equal(b, good) && len(pt) > len(b) {
			t.Fatalf("unsealed %d bytes from %d", len(pt), len(b))
		}
	})
}
