package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// A KEK (key-encryption key) seals the cluster's own secrets — the CA's
// private keys, the API token signing key — before they are written to
// etcd, so that a copy of the etcd data, or of a backup of it, does not
// hand out the CA. It lives outside etcd, in a 0600 file that every
// replica of the cluster holds a copy of.
//
// A sealed record is AES-256-GCM under a key derived from the KEK, with the
// etcd key the record is stored at as additional data: a sealed value
// copied to another key does not open there.
type KEK struct {
	aead cipher.AEAD
	id   string
}

const (
	kekSize = 32
	// kekSealVersion names the derivation and layout below.
	kekSealVersion = 1
)

// ErrKEKMismatch is returned by Open for a value sealed under another KEK.
var ErrKEKMismatch = errors.New("sealed with another key-encryption key")

// Sealed is a value sealed under a KEK, as it is stored in etcd.
type Sealed struct {
	Version int `json:"v"`
	// KEK identifies the key that sealed the value (a one-way derivation,
	// safe to show), so that a replica holding another key says so instead
	// of failing to authenticate.
	KEK        string `json:"kek"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ct"`
}

// NewKEK returns the KEK for raw, which must be 32 bytes.
func NewKEK(raw []byte) (*KEK, error) {
	if len(raw) != kekSize {
		return nil, fmt.Errorf("key-encryption key: want %d bytes, got %d", kekSize, len(raw))
	}
	enc, err := hkdf.Key(sha256.New, raw, nil, "npanel kek seal v1", 32)
	if err != nil {
		return nil, err
	}
	idb, err := hkdf.Key(sha256.New, raw, nil, "npanel kek id v1", 8)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(enc)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &KEK{aead: aead, id: hex.EncodeToString(idb)}, nil
}

// ID identifies the key without revealing it.
func (k *KEK) ID() string { return k.id }

// Seal encrypts plaintext for storage at the etcd key name.
func (k *KEK) Seal(name string, plaintext []byte) (*Sealed, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &Sealed{Version: kekSealVersion, KEK: k.id, Nonce: nonce,
		Ciphertext: k.aead.Seal(nil, nonce, plaintext, []byte(name))}, nil
}

// Open decrypts a value Seal made for the etcd key name. A value sealed
// under another KEK gives ErrKEKMismatch; one moved from another key or
// tampered with gives an error naming neither key nor content.
func (k *KEK) Open(name string, s *Sealed) ([]byte, error) {
	if s.Version != kekSealVersion {
		return nil, fmt.Errorf("%s: sealed value version %d is not supported", name, s.Version)
	}
	if s.KEK != k.id {
		return nil, fmt.Errorf("%s: %w %s, not with this replica's %s", name, ErrKEKMismatch, s.KEK, k.id)
	}
	if len(s.Nonce) != k.aead.NonceSize() {
		return nil, fmt.Errorf("%s: sealed value is malformed", name)
	}
	plain, err := k.aead.Open(nil, s.Nonce, s.Ciphertext, []byte(name))
	if err != nil {
		return nil, fmt.Errorf("%s: sealed value does not authenticate (corrupted, or moved from another key)", name)
	}
	return plain, nil
}

// LoadKEK reads the KEK file at path (64 hex digits). It refuses a file
// other users can read or write: the key opens the CA. A missing file
// gives an error that wraps fs.ErrNotExist.
func LoadKEK(path string) (*KEK, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key-encryption key %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key-encryption key %s: mode %#o lets other users read it; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := io.ReadAll(io.LimitReader(f, 4*kekSize))
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != kekSize {
		return nil, fmt.Errorf("key-encryption key %s: want %d hex digits", path, 2*kekSize)
	}
	return NewKEK(raw)
}

// CreateKEK writes a new random KEK to path, mode 0600. It fails if the
// file exists: a key that seals a cluster is never overwritten.
func CreateKEK(path string) (*KEK, error) {
	raw := make([]byte, kekSize)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create key-encryption key: %w", err)
	}
	_, err = f.WriteString(hex.EncodeToString(raw) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create key-encryption key: %w", err)
	}
	return NewKEK(raw)
}

// KEKMissing reports whether err is LoadKEK's for a file that does not exist.
func KEKMissing(err error) bool { return errors.Is(err, fs.ErrNotExist) }
