package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
)

type clusterStatusJSON struct {
	Replicas []struct {
		ID           string
		APIAddress   string
		AgentAddress string
		Leader       bool
		Version      *string
	}
	Leader *string
	Etcd   struct {
		Embedded bool
		Members  []struct {
			Name        string
			Healthy     bool
			Leader      bool
			DBSizeBytes *int64
		}
	}
}

// ctl cluster status and snapshot through the real binary, then
// server restore of that snapshot into a new data dir and a server started
// on it with the old key-encryption key: the data is the snapshot's.
func TestCLIClusterSnapshotRestore(t *testing.T) {
	s := startServer(t)
	home := t.TempDir()
	env := []string{"XDG_CONFIG_HOME=" + home, "NPANEL_SERVER=http://" + s.api}
	pw, _ := os.ReadFile(filepath.Join(s.dataDir, "initial-admin-password"))
	if out, code := run(t, env, string(pw), "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}

	out, code := run(t, env, "", "ctl", "cluster", "status")
	if code != 0 {
		t.Fatalf("cluster status: exit %d: %s", code, out)
	}
	for _, want := range []string{"REPLICA", "LEADER", "ETCD (embedded)", "npanel", "yes", "KiB"} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster status lacks %q:\n%s", want, out)
		}
	}
	st := clusterStatus(t, env)
	if len(st.Replicas) != 1 || !st.Replicas[0].Leader || st.Replicas[0].AgentAddress != s.gateway || st.Replicas[0].Version == nil ||
		st.Leader == nil || *st.Leader != st.Replicas[0].ID {
		t.Fatalf("cluster status -o json replicas: %+v", st)
	}
	if !st.Etcd.Embedded || len(st.Etcd.Members) != 1 || !st.Etcd.Members[0].Healthy || !st.Etcd.Members[0].Leader ||
		st.Etcd.Members[0].DBSizeBytes == nil || *st.Etcd.Members[0].DBSizeBytes <= 0 {
		t.Fatalf("cluster status -o json etcd: %+v", st.Etcd)
	}
	oldID := st.Replicas[0].ID

	if out, code := run(t, env, "", "ctl", "plan", "create", "kept"); code != 0 {
		t.Fatalf("plan create: exit %d: %s", code, out)
	}
	dir := t.TempDir()
	for _, args := range [][]string{
		{"ctl", "cluster", "snapshot"},
		{"ctl", "cluster", "snapshot", "a", "b"},
		{"ctl", "cluster", "snapshot", dir},
	} {
		if out, code := run(t, env, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, code, out)
		}
	}
	snap := filepath.Join(dir, "cluster.snap")
	out, code = run(t, env, "", "ctl", "cluster", "snapshot", snap, "-o", "json")
	if code != 0 {
		t.Fatalf("cluster snapshot: exit %d: %s", code, out)
	}
	var saved struct {
		File   string
		Bytes  int64
		SHA256 string
	}
	if err := json.Unmarshal([]byte(out), &saved); err != nil {
		t.Fatalf("cluster snapshot -o json: %v: %s", err, out)
	}
	raw, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if saved.File != snap || saved.Bytes != int64(len(raw)) || saved.SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("snapshot reported %+v; file has %d bytes, sha256 %x", saved, len(raw), sum)
	}
	if fi, _ := os.Stat(snap); fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(snap), ".*.tmp")); len(left) > 0 {
		t.Errorf("temporary file left behind: %v", left)
	}
	if out, code := run(t, env, "", "ctl", "plan", "create", "lost"); code != 0 {
		t.Fatalf("plan create: exit %d: %s", code, out)
	}

	// The old server goes; the new one takes its addresses.
	if err := s.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "old server gone", func() bool {
		resp, err := http.Get("http://" + s.api + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})

	busy := t.TempDir()
	if err := os.WriteFile(filepath.Join(busy, "something"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	newDir := filepath.Join(t.TempDir(), "server")
	for _, args := range [][]string{
		{"server", "restore", "--data-dir", newDir},
		{"server", "restore", "--snapshot", snap},
		{"server", "restore", "--snapshot", snap, "--data-dir", "relative/dir"},
		{"server", "restore", "--snapshot", filepath.Join(dir, "missing"), "--data-dir", newDir},
		{"server", "restore", "--snapshot", snap, "--data-dir", busy},
	} {
		if out, code := run(t, nil, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2: %s", args, code, out)
		}
	}
	out, code = run(t, nil, "", "server", "restore", "--snapshot", snap, "--data-dir", newDir)
	if code != 0 {
		t.Fatalf("server restore: exit %d: %s", code, out)
	}
	kek, err := os.ReadFile(filepath.Join(s.dataDir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(newDir, "kek"), kek, 0o600); err != nil {
		t.Fatal(err)
	}
	start(t, nil, "server", "--data-dir", newDir, "--api-listen", s.api, "--api-insecure-http",
		"--agent-listen", s.gateway, "--gossip-listen", "127.0.0.1:0")
	testenv.WaitFor(t, 60*time.Second, "restored server /readyz", func() bool {
		resp, err := http.Get("http://" + s.api + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// The admin's saved token is still good: the token key came back with
	// the snapshot.
	out, code = run(t, env, "", "ctl", "plan", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("plan list on the restored server: exit %d: %s", code, out)
	}
	var plans []struct{ Name string }
	if err := json.Unmarshal([]byte(out), &plans); err != nil {
		t.Fatalf("plan list: %v: %s", err, out)
	}
	if len(plans) != 1 || plans[0].Name != "kept" {
		t.Fatalf("plans on the restored server: %s, want only kept", out)
	}
	testenv.WaitFor(t, 60*time.Second, "restored server leads alone", func() bool {
		st := clusterStatus(t, env)
		return len(st.Replicas) == 1 && st.Replicas[0].ID != oldID && st.Leader != nil && *st.Leader == st.Replicas[0].ID
	})
}

func clusterStatus(t *testing.T, env []string) clusterStatusJSON {
	t.Helper()
	out, code := run(t, env, "", "ctl", "cluster", "status", "-o", "json")
	if code != 0 {
		t.Fatalf("cluster status -o json: exit %d: %s", code, out)
	}
	var st clusterStatusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("cluster status -o json: %v: %s", err, out)
	}
	return st
}
