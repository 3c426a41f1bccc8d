package pki

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKEKSealOpen(t *testing.T) {
	dir := t.TempDir()
	k, err := CreateKEK(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte(`{"tokenKey":"secret"}`)
	s, err := k.Seal("/npanel/cluster/secrets", plain)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s.Ciphertext, plain) {
		t.Fatal("ciphertext holds the plaintext")
	}
	got, err := k.Open("/npanel/cluster/secrets", s)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %v", got, err)
	}

	// Bound to its etcd key: a sealed value moved to another does not open.
	if _, err := k.Open("/npanel/cluster/ca", s); err == nil || !strings.Contains(err.Error(), "does not authenticate") {
		t.Errorf("Open under another name: %v", err)
	}
	tampered := *s
	tampered.Ciphertext = append([]byte(nil), s.Ciphertext...)
	tampered.Ciphertext[0] ^= 1
	if _, err := k.Open("/npanel/cluster/secrets", &tampered); err == nil {
		t.Error("tampered value opened")
	}

	// Another KEK says so, naming both ids and neither key.
	other, err := CreateKEK(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.Open("/npanel/cluster/secrets", s)
	if !errors.Is(err, ErrKEKMismatch) || !strings.Contains(err.Error(), k.ID()) || !strings.Contains(err.Error(), other.ID()) {
		t.Errorf("Open with another KEK: %v", err)
	}
	for _, f := range []string{"kek", "other"} {
		raw, _ := os.ReadFile(filepath.Join(dir, f))
		if strings.Contains(err.Error(), strings.TrimSpace(string(raw))) {
			t.Error("error shows a key")
		}
	}

	// The same file loads the same key.
	again, err := LoadKEK(filepath.Join(dir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.Open("/npanel/cluster/secrets", s); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("Open with the reloaded KEK: %q, %v", got, err)
	}
}

func TestKEKFileChecks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	if _, err := LoadKEK(path); !KEKMissing(err) {
		t.Errorf("LoadKEK of a missing file: %v", err)
	}
	if _, err := CreateKEK(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created KEK file: %v, %v", fi.Mode(), err)
	}
	if _, err := CreateKEK(path); err == nil {
		t.Error("CreateKEK overwrote an existing key file")
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKEK(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("LoadKEK of a group-readable file: %v", err)
	}
	for _, content := range []string{"", "not hex\n", strings.Repeat("ab", 16) + "\n"} {
		bad := filepath.Join(dir, "bad")
		if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKEK(bad); err == nil || !strings.Contains(err.Error(), "hex digits") {
			t.Errorf("LoadKEK of %q: %v", content, err)
		}
	}
}
