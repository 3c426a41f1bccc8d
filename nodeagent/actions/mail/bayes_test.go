package mail

import (
	"os"
	"path/filepath"
	"testing"
)

// An account's Bayes databases go with it, and only its own.
func TestRemoveBayes(t *testing.T) {
	dir := t.TempDir()
	for _, u := range []string{"alice", "bob"} {
		if err := os.MkdirAll(filepath.Join(dir, u), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, u, "bayes_toks"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := removeBayes(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "alice")); !os.IsNotExist(err) {
		t.Errorf("alice's databases stay: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bob", "bayes_toks")); err != nil {
		t.Errorf("bob's databases: %v", err)
	}
	if err := removeBayes(dir, "alice"); err != nil {
		t.Errorf("again: %v", err)
	}
	if err := removeBayes(filepath.Join(dir, "none"), "alice"); err != nil {
		t.Errorf("no Bayes directory: %v", err)
	}
	for _, bad := range []string{"", ".", "..", "../bob", "a/b"} {
		if err := removeBayes(dir, bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bob", "bayes_toks")); err != nil {
		t.Errorf("bob's databases after the refusals: %v", err)
	}
}
