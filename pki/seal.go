package pki

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
)

// Sealing lets the control plane hand a node a secret (a database user's
// password) that only that node can read: the secret travels through etcd,
// the task queue and the audit trail of the task path, all of which keep
// what they carry, so it must not travel in the clear.
//
// The scheme is ECIES over the node's own certificate key: an ephemeral
// ECDH key on the node key's curve, HKDF-SHA256 over the shared secret, and
// AES-256-GCM with the caller's context string as additional data, so a
// sealed value cannot be replayed into another field or action.
//
//	sealed = version(1) || ephemeral public key || nonce(12) || ciphertext+tag

const sealVersion = 1

// ErrUnseal is returned for a sealed value that is malformed, sealed for
// another key or context, or tampered with.
var ErrUnseal = errors.New("cannot unseal: not sealed for this node and purpose")

// Seal encrypts plaintext for the holder of the private key of pub (an
// ECDSA P-256 or P-384 public key, as node certificates carry). context
// binds the result to one purpose; Unseal must be given the same.
func Seal(pub crypto.PublicKey, plaintext []byte, context string) ([]byte, error) {
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("seal: key type %T cannot be sealed to (want ECDSA)", pub)
	}
	recipient, err := ek.ECDH()
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	eph, err := recipient.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	shared, err := eph.ECDH(recipient)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := sealAEAD(shared, eph.PublicKey().Bytes(), recipient.Bytes())
	if err != nil {
		return nil, err
	}
	out := append([]byte{sealVersion}, eph.PublicKey().Bytes()...)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, []byte(context)), nil
}

// SealDER is Seal to a public key in PKIX DER form, as the control plane
// stores each node's.
func SealDER(pubDER []byte, plaintext []byte, context string) ([]byte, error) {
	pub, err := x509.ParsePKIXPublicKey(pubDER)
	if err != nil {
		return nil, fmt.Errorf("seal: node public key: %w", err)
	}
	return Seal(pub, plaintext, context)
}

// Unseal decrypts what Seal sealed to key's public half with the same
// context.
func Unseal(key crypto.Signer, sealed []byte, context string) ([]byte, error) {
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, ErrUnseal
	}
	priv, err := ek.ECDH()
	if err != nil {
		return nil, ErrUnseal
	}
	n := len(priv.PublicKey().Bytes())
	if len(sealed) < 1+n+12+16 || sealed[0] != sealVersion {
		return nil, ErrUnseal
	}
	ephPub, err := priv.Curve().NewPublicKey(sealed[1 : 1+n])
	if err != nil {
		return nil, ErrUnseal
	}
	shared, err := priv.ECDH(ephPub)
	if err != nil {
		return nil, ErrUnseal
	}
	aead, err := sealAEAD(shared, ephPub.Bytes(), priv.PublicKey().Bytes())
	if err != nil {
		return nil, ErrUnseal
	}
	nonce := sealed[1+n : 1+n+aead.NonceSize()]
	pt, err := aead.Open(nil, nonce, sealed[1+n+aead.NonceSize():], []byte(context))
	if err != nil {
		return nil, ErrUnseal
	}
	return pt, nil
}

func sealAEAD(shared, ephPub, recipient []byte) (cipher.AEAD, error) {
	salt := append(append([]byte(nil), ephPub...), recipient...)
	key, err := hkdf.Key(sha256.New, shared, salt, "npanel seal v1", 32)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return cipher.NewGCM(block)
}
