package main

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/npanel/npanel/internal/cmdline"
	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/internal/sshdtest"
	"github.com/npanel/npanel/internal/testenv"
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
		var ue *cmdline.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want a usage error about %s", bad.args, err, bad.want)
		}
	}
	if got, err := readSecret(strings.NewReader("from-stdin\nrest"), "-"); err != nil || got != "from-stdin" {
		t.Errorf("stdin secret: %q %v", got, err)
	}
}

// npanel ctl import scan/fetch through the real binary, a server and a
// real agent in the test process, and a real sshd as the old server: the
// scan names the unknown host key (non-zero exit), fetch --wait ends DONE
// with the path import cpanel takes, fetches lists it.
func TestImportFetchCLI(t *testing.T) {
	srv := sshdtest.Start(t)
	s := testenv.StartServer(t)
	s.StartAgent(t, "old-fetch")
	keyFile := filepath.Join(t.TempDir(), "id")
	if err := os.WriteFile(keyFile, srv.ClientKey, 0o600); err != nil {
		t.Fatal(err)
	}
	arch := cpaneltest.Build(t, t.TempDir(), cpaneltest.Default(cpaneltest.LayoutCpmove))
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=" + s.URL()}
	if out, code := run(t, env, testenv.AdminPassword, "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	server := []string{"--node", "old-fetch", "--host", "127.0.0.1", "--port", strconv.Itoa(srv.Port), "--key-file", keyFile}
	out, code := run(t, env, "", append([]string{"ctl", "import", "scan"}, server...)...)
	if code == 0 || !strings.Contains(out, "HOST_KEY_UNKNOWN") || !strings.Contains(out, srv.Fingerprint) {
		t.Fatalf("scan without --host-key: exit %d: %s", code, out)
	}
	server = append(server, "--host-key", srv.Fingerprint)
	out, code = run(t, env, "", append(append([]string{"ctl", "import", "fetch"}, server...), "--remote-path", arch, "--wait", "--timeout", "1m")...)
	if code != 0 || !strings.Contains(out, "DONE") || !strings.Contains(out, "fetched/") || !strings.Contains(out, "import cpanel") {
		t.Fatalf("fetch: exit %d: %s", code, out)
	}
	out, code = run(t, env, "", "ctl", "import", "fetches")
	if code != 0 || !strings.Contains(out, "DONE") || !strings.Contains(out, "root@127.0.0.1") {
		t.Fatalf("fetches: exit %d: %s", code, out)
	}
}
