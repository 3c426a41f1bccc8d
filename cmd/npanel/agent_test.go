package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
)

// The join token reaches the agent from a file or the environment, never
// through the command line other users can read (issue 23, finding 11).
func TestAgentJoinTokenFileAndEnv(t *testing.T) {
	s := startServer(t)
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=http://" + s.api}
	pw, _ := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
	if out, code := run(t, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	token := func(node string) string {
		out, code := run(t, env, "", "ctl", "node", "add", node, "--address", "127.0.0.1", "--roles", "web", "-o", "json")
		tok := between(out, `"token":"`, `"`)
		if code != 0 || tok == "" {
			t.Fatalf("node add %s: exit %d: %s", node, code, out)
		}
		return tok
	}
	agentArgs := func(extra ...string) []string {
		return append([]string{"agent", "--server", s.gateway, "--data-dir", t.TempDir(), "--gossip-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--modules", "none"}, extra...)
	}

	fileTok := token("tok-file")
	file := filepath.Join(t.TempDir(), "join-token")
	if err := os.WriteFile(file, []byte(fileTok+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Refused before anything is read or sent: a file others may read, two
	// sources, an empty file.
	if out, code := run(t, nil, "", agentArgs("--join-token-file", file)...); code != 2 || !strings.Contains(out, "lets other users read the token") {
		t.Errorf("world-readable token file: exit %d: %s", code, out)
	}
	if err := os.Chmod(file, 0o640); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, nil, "", agentArgs("--join-token-file", file)...); code != 2 || !strings.Contains(out, "lets other users read the token") {
		t.Errorf("group-readable token file: exit %d: %s", code, out)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, nil, "", agentArgs("--join-token-file", file, "--join-token", fileTok)...); code != 2 || !strings.Contains(out, "not both") {
		t.Errorf("two token sources: exit %d: %s", code, out)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := run(t, nil, "", agentArgs("--join-token-file", empty)...); code != 2 || !strings.Contains(out, "is empty") {
		t.Errorf("empty token file: exit %d: %s", code, out)
	}

	// A missing token file is a mistake until the node is enrolled; then
	// the spent token may be deleted (below).
	gone := filepath.Join(t.TempDir(), "gone")
	if out, code := run(t, nil, "", agentArgs("--join-token-file", gone)...); code != 2 || !strings.Contains(out, "--join-token-file") {
		t.Errorf("missing token file, not enrolled: exit %d: %s", code, out)
	}

	envTok := token("tok-env")
	procs := []*proc{
		start(t, nil, agentArgs("--join-token-file", file)...),
		start(t, []string{"NPANEL_JOIN_TOKEN=" + envTok}, agentArgs()...),
	}
	testenv.WaitFor(t, 30*time.Second, "both agents READY", func() bool {
		out, code := run(t, env, "", "ctl", "node", "list")
		return code == 0 && strings.Count(out, "READY") == 2
	})
	for _, p := range procs {
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/cmdline")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(cmdline), fileTok) || strings.Contains(string(cmdline), envTok) {
			t.Errorf("join token in the agent's command line: %q", cmdline)
		}
	}
}
