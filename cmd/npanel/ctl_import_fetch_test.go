package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestImportFetchUsage: bad flags are usage errors (exit 2) before any
// request, and a secret never goes in argv: the password comes from a
// file or stdin.
func TestImportFetchUsage(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fp := "SHA256:" + strings.Repeat("A", 43)
	base := []string{"--node", "n1", "--password-file", pw}
	for _, bad := range []struct {
		scan bool
		args []string
		want string
	}{
		{true, []string{"--host", "old example.com"}, "--host"},
		{true, []string{"--host", "old.example.com", "--user", "../x"}, "--user"},
		{true, []string{"--host", "old.example.com", "--port", "0"}, "--port"},
		{true, []string{"--host", "old.example.com", "--host-key", "MD5:aa"}, "--host-key"},
		{false, []string{"--host", "old.example.com", "--account", "bob"}, "--host-key"},
		{false, []string{"--host", "old.example.com", "--host-key", fp, "--remote-path", "home/x.tar.gz"}, "--remote-path"},
		{false, []string{"--host", "old.example.com", "--host-key", fp, "--remote-path", "/home/../x.tar.gz"}, "--remote-path"},
		{false, []string{"--host", "old.example.com", "--host-key", fp}, "exactly one"},
		{false, []string{"--host", "old.example.com", "--host-key", fp, "--account", "bob;id"}, "--account"},
	} {
		cmd := importFetchCmd(&ctlOptions{})
		if bad.scan {
			cmd = importScanCmd(&ctlOptions{})
		}
		cmd.SetArgs(append(append([]string{}, base...), bad.args...))
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		err := cmd.Execute()
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want a usage error about %s", bad.args, err, bad.want)
		}
	}
	if got, err := readSecret(strings.NewReader("from-stdin\nrest"), "-"); err != nil || got != "from-stdin" {
		t.Errorf("stdin secret: %q %v", got, err)
	}
}
