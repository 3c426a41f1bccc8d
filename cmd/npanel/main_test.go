package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
)

// binary is the npanel binary built once for this package's tests: they run
// the real program as an operator would, in its own processes.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "npanel-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "npanel")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		panic("build npanel: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a daemon started from the binary, killed by PID and waited for at
// cleanup even when the test fails.
type proc struct {
	cmd    *exec.Cmd
	output *bytes.Buffer
}

func start(t testing.TB, env []string, args ...string) *proc {
	t.Helper()
	return startFrom(t, binary, env, args...)
}

// startFrom starts bin as a daemon with env added to this process's
// environment; it is stopped (SIGTERM, then kill after 15 s) and waited
// for at cleanup, and its output logged when the test failed.
func startFrom(t testing.TB, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("output of %s %v:\n%s", filepath.Base(bin), args, buf.String())
		}
	})
	return &proc{cmd: cmd, output: &buf}
}

// run runs the CLI to completion and returns its output and exit code.
func run(t testing.TB, env []string, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return string(out), 0
}

type testServer struct {
	api, gateway string
	dataDir      string
	proc         *proc
}

// startServer starts a server whose API speaks plain HTTP on loopback, as
// the CLI tests' commands are the subject, not the transport (the HTTPS
// API and ctl's pinning have tests of their own in ctl_tls_test.go).
func startServer(t testing.TB) *testServer {
	t.Helper()
	s := &testServer{api: testenv.FreeAddr(t), gateway: testenv.FreeAddr(t), dataDir: t.TempDir()}
	s.proc = start(t, nil, "server", "--data-dir", s.dataDir, "--api-listen", s.api, "--api-insecure-http",
		"--agent-listen", s.gateway, "--gossip-listen", "127.0.0.1:0")
	testenv.WaitFor(t, 60*time.Second, "server /readyz", func() bool {
		resp, err := http.Get("http://" + s.api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return s
}

// The README's operator workflow, through the real binary: log in, add a
// node, start its agent with the token, list, ping, remove.
func TestCLIWorkflow(t *testing.T) {
	s := startServer(t)
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=http://" + s.api}

	pwFile := filepath.Join(s.dataDir, "initial-admin-password")
	if fi, err := os.Stat(pwFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("initial admin password file: %v, %v", fi, err)
	}
	pw, _ := os.ReadFile(pwFile)
	if out, code := run(t, env, "wrong\n", "ctl", "login", "--password-stdin"); code != 1 || !strings.Contains(out, "UNAUTHENTICATED") {
		t.Fatalf("login with wrong password: exit %d: %s", code, out)
	}
	if out, code := run(t, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}

	out, code := run(t, env, "", "ctl", "node", "add", "web-1", "--address", "127.0.0.1", "--roles", "web,dns", "-o", "json")
	if code != 0 {
		t.Fatalf("node add: exit %d: %s", code, out)
	}
	token := between(out, `"token":"`, `"`)
	if token == "" {
		t.Fatalf("no token in %s", out)
	}
	agentDir := t.TempDir()
	start(t, nil, "agent", "--server", s.gateway, "--join-token", token, "--data-dir", agentDir, "--gossip-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	testenv.WaitFor(t, 20*time.Second, "web-1 READY in node list", func() bool {
		out, code := run(t, env, "", "ctl", "node", "list")
		return code == 0 && strings.Contains(out, "web-1") && strings.Contains(out, "READY")
	})
	if out, code := run(t, env, "", "ctl", "node", "ping", "web-1", "--payload", "hi"); code != 0 || !strings.Contains(out, "SUCCEEDED") {
		t.Fatalf("node ping: exit %d: %s", code, out)
	}

	// A drained node says so; an unknown one is NOT_FOUND with exit 1.
	if out, code := run(t, env, "", "ctl", "node", "drain", "web-1"); code != 0 || !strings.Contains(out, "DRAINING") {
		t.Fatalf("node drain: exit %d: %s", code, out)
	}
	if out, _ := run(t, env, "", "ctl", "node", "list"); !strings.Contains(out, "READY,DRAINING") {
		t.Errorf("node list does not show the drained node: %s", out)
	}
	if out, code := run(t, env, "", "ctl", "node", "undrain", "web-1"); code != 0 || strings.Contains(out, "DRAINING") {
		t.Fatalf("node undrain: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "node", "services", "no-such-node"); code != 1 || !strings.Contains(out, "NOT_FOUND") {
		t.Errorf("services of an unknown node: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "version"); code != 0 || !strings.HasPrefix(out, "npanel ") {
		t.Errorf("version: exit %d: %s", code, out)
	}
	// Completion asks the server for names.
	if out, code := run(t, env, "", "__complete", "ctl", "node", "ping", "we"); code != 0 || !strings.Contains(out, "web-1") {
		t.Errorf("node name completion: exit %d: %s", code, out)
	}

	// Bad input: exit 2 with a message, and nothing changes.
	for _, args := range [][]string{
		{"ctl", "node", "add", "Bad_Name", "--address", "127.0.0.1", "--roles", "web"},
		{"ctl", "node", "add", "web-2", "--address", "not-an-ip", "--roles", "web"},
		{"ctl", "node", "add", "web-2", "--address", "127.0.0.1"},
		{"ctl", "node", "add", "web-2", "--address", "127.0.0.1", "--roles", "web", "--label", "novalue"},
		{"ctl", "node", "add"},
		{"ctl", "node", "frobnicate"},
		{"ctl", "node", "list", "--no-such-flag"},
	} {
		out, code := run(t, env, "", args...)
		if code != 2 || len(strings.TrimSpace(out)) == 0 {
			t.Errorf("%v: exit %d, want 2 with a message: %s", args, code, out)
		}
	}
	if out, _ := run(t, env, "", "ctl", "node", "list"); strings.Contains(out, "web-2") {
		t.Fatalf("refused node was written: %s", out)
	}

	if out, code := run(t, env, "", "ctl", "node", "remove", "web-1"); code != 0 {
		t.Fatalf("node remove: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "node", "remove", "web-1"); code != 1 || !strings.Contains(out, "NOT_FOUND") {
		t.Fatalf("second remove: exit %d: %s", code, out)
	}

	// passwd: a weak new password is refused; a good one revokes the
	// tokens issued before it and saves the new one.
	credsFile := filepath.Join(strings.TrimPrefix(env[0], "XDG_CONFIG_HOME="), "npanel", "credentials.json")
	before, _ := os.ReadFile(credsFile)
	if out, code := run(t, env, strings.TrimSpace(string(pw))+"\npasswordpassword\n", "ctl", "passwd", "--password-stdin"); code != 2 || !strings.Contains(out, "INVALID_INPUT") {
		t.Fatalf("passwd to a weak password: exit %d: %s", code, out)
	}
	const newPW = "Kx7-ferry-lamp-92"
	if out, code := run(t, env, strings.TrimSpace(string(pw))+"\n"+newPW+"\n", "ctl", "passwd", "--password-stdin"); code != 0 {
		t.Fatalf("passwd: exit %d: %s", code, out)
	}
	var prev map[string]string
	if json.Unmarshal(before, &prev) != nil || prev["http://"+s.api] == "" {
		t.Fatalf("saved credentials before passwd: %s", before)
	}
	if out, code := run(t, append([]string{"NPANEL_TOKEN=" + prev["http://"+s.api]}, env...), "", "ctl", "node", "list"); code != 1 || !strings.Contains(out, "UNAUTHENTICATED") {
		t.Fatalf("node list with the token from before passwd: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "node", "list"); code != 0 {
		t.Fatalf("node list with the token passwd saved: exit %d: %s", code, out)
	}
	// revoke-sessions (admin) ends the admin's own login tokens too.
	if out, code := run(t, env, "", "ctl", "user", "revoke-sessions", "admin"); code != 0 {
		t.Fatalf("revoke-sessions: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "node", "list"); code != 1 || !strings.Contains(out, "UNAUTHENTICATED") {
		t.Fatalf("node list after revoke-sessions: exit %d: %s", code, out)
	}
	if out, code := run(t, env, newPW+"\n", "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login with the new password: exit %d: %s", code, out)
	}

	// logout revokes the token (wherever it was copied to) and forgets it.
	var creds map[string]string
	raw, err := os.ReadFile(credsFile)
	if err != nil || json.Unmarshal(raw, &creds) != nil || creds["http://"+s.api] == "" {
		t.Fatalf("saved credentials: %s, %v", raw, err)
	}
	if out, code := run(t, env, "", "ctl", "logout"); code != 0 {
		t.Fatalf("logout: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "node", "list"); code == 0 || !strings.Contains(out, "not logged in") {
		t.Fatalf("node list after logout: exit %d: %s", code, out)
	}
	old := append([]string{"NPANEL_TOKEN=" + creds["http://"+s.api]}, env...)
	if out, code := run(t, old, "", "ctl", "node", "list"); code != 1 || !strings.Contains(out, "UNAUTHENTICATED") {
		t.Fatalf("node list with the token from before logout: exit %d: %s", code, out)
	}
}

func TestServerNeedsDataDir(t *testing.T) {
	if out, code := run(t, nil, "", "server"); code != 2 || !strings.Contains(out, "--data-dir") {
		t.Fatalf("server without --data-dir: exit %d: %s", code, out)
	}
	if out, code := run(t, nil, "", "agent", "--data-dir", t.TempDir()); code != 2 || !strings.Contains(out, "--server") {
		t.Fatalf("agent without --server: exit %d: %s", code, out)
	}
}

// An external etcd without TLS is refused before anything is dialled or
// written, unless the operator accepts it with --etcd-insecure.
func TestServerRefusesPlainEtcd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out, code := run(t, nil, "", "server", "--data-dir", dir, "--etcd-endpoints", "http://127.0.0.1:2379")
	if code != 2 || !strings.Contains(out, "has no TLS") || !strings.Contains(out, "--etcd-insecure") {
		t.Fatalf("server with an http etcd: exit %d: %s", code, out)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("refused server created its data dir (%v)", err)
	}
}

func between(s, from, to string) string {
	_, rest, ok := strings.Cut(s, from)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, to)
	return v
}

// --etcd-max-txn-ops is the external etcd's own setting: below etcd's
// default, or without an external etcd, it is a usage error.
func TestServerEtcdMaxTxnOps(t *testing.T) {
	for _, args := range [][]string{
		{"server", "--data-dir", t.TempDir(), "--etcd-max-txn-ops", "1024"},
		{"server", "--data-dir", t.TempDir(), "--etcd-endpoints", "https://127.0.0.1:1", "--etcd-insecure", "--etcd-max-txn-ops", "50"},
	} {
		if out, code := run(t, nil, "", args...); code != 2 || !strings.Contains(out, "--etcd-max-txn-ops") {
			t.Errorf("%v: exit %d: %s", args, code, out)
		}
	}
}
