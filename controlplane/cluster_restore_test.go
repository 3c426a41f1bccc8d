package controlplane_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/testenv"
)

// The control plane is restored from a snapshot taken through the API onto
// a new server (new data dir, the old key-encryption key, the agents' known
// address): what the snapshot held is there, what came after is not, and
// the agent reconnects by itself and takes new work.
func TestClusterSnapshotRestore(t *testing.T) {
	old := testenv.StartServer(t)
	ag := old.StartAgent(t, "node-r")
	ctx := testenv.Context(t)
	testenv.WaitFor(t, 20*time.Second, "node-r READY", func() bool { return nodeStatus(t, old, "node-r") == "READY" })
	plan := client.Plan{Name: "before-snapshot", DiskMB: 100, BandwidthMB: 100, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}
	if _, err := old.Admin.CreatePlan(ctx, plan); err != nil {
		t.Fatal(err)
	}

	st, err := old.Admin.ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Etcd.Embedded || len(st.Etcd.Members) != 1 || !st.Etcd.Members[0].Healthy || !st.Etcd.Members[0].Leader ||
		st.Etcd.Members[0].DBSizeBytes == nil || *st.Etcd.Members[0].DBSizeBytes <= 0 || st.Etcd.Members[0].Name != "npanel" {
		t.Fatalf("etcd status = %+v", st.Etcd)
	}
	if len(st.Replicas) != 1 || st.Leader == nil || *st.Leader != old.ID() || !st.Replicas[0].Leader ||
		st.Replicas[0].Version == nil || *st.Replicas[0].Version != "test" {
		t.Fatalf("replicas = %+v, leader %v", st.Replicas, st.Leader)
	}

	snapPath := filepath.Join(t.TempDir(), "etcd.snapshot")
	f, err := os.Create(snapPath)
	if err != nil {
		t.Fatal(err)
	}
	n, sum, err := old.Admin.ClusterSnapshot(ctx, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	raw, err := os.ReadFile(snapPath)
	if err != nil {
		t.Fatal(err)
	}
	fileSum := sha256.Sum256(raw)
	if int64(len(raw)) != n || hex.EncodeToString(fileSum[:]) != sum {
		t.Fatalf("snapshot: %d bytes with sha256 %s reported, file has %d bytes with %x", n, sum, len(raw), fileSum)
	}
	evs, _, err := old.Admin.AuditEvents(ctx, client.AuditFilter{Action: "clusterSnapshot"}, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	// One event before the download and one with its size and checksum.
	results := map[string]bool{}
	for _, ev := range evs {
		results[ev.Result] = ev.Actor == "admin"
	}
	if len(evs) != 2 || !results["started"] || !results["ok"] {
		t.Fatalf("audit of the snapshot = %+v", evs)
	}

	// Written after the snapshot: the restored cluster must not have it.
	after := plan
	after.Name = "after-snapshot"
	if _, err := old.Admin.CreatePlan(ctx, after); err != nil {
		t.Fatal(err)
	}
	agentAddr := old.Config.AgentListen
	kek, err := os.ReadFile(filepath.Join(old.Config.DataDir, "kek"))
	if err != nil {
		t.Fatal(err)
	}
	old.Stop()
	testenv.WaitFor(t, 20*time.Second, "agent sees the server gone", func() bool { return !ag.Connected() })

	// Into a directory that holds anything: refused, and left as it was.
	busy := testenv.DataDir(t)
	if err := os.WriteFile(filepath.Join(busy, "kek"), kek, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := controlplane.RestoreEmbeddedEtcd(snapPath, busy, testenv.Logger()); !errors.Is(err, controlplane.ErrRestoreTargetNotEmpty) {
		t.Fatalf("restore into a non-empty dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(busy, "etcd")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused restore wrote into the dir: %v", err)
	}

	dir := filepath.Join(testenv.DataDir(t), "restored")
	if err := controlplane.RestoreEmbeddedEtcd(snapPath, dir, testenv.Logger()); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("restored data dir: %v, %v", fi, err)
	}

	// Without the old key-encryption key the server refuses to start: the
	// CA's keys in the snapshot are sealed with it.
	cfg := old.Config
	cfg.DataDir, cfg.APIListen, cfg.AgentListen = dir, testenv.FreeAddr(t), testenv.FreeAddr(t)
	srv, err := controlplane.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = srv.Run(rctx)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "key-encryption key") {
		t.Fatalf("start without the kek: %v", err)
	}

	if err := os.WriteFile(filepath.Join(dir, "kek"), kek, 0o600); err != nil {
		t.Fatal(err)
	}
	restored := testenv.StartServer(t, testenv.WithDataDir(dir), testenv.WithAgentListen(agentAddr))
	if restored.Config.AgentListen != agentAddr {
		t.Fatalf("agent address %s was taken meanwhile; the agent cannot find the new server", agentAddr)
	}
	if p, err := restored.Admin.Plan(ctx, "before-snapshot"); err != nil || p == nil || p.DiskMB != 100 {
		t.Fatalf("plan from before the snapshot: %+v, %v", p, err)
	}
	if p, err := restored.Admin.Plan(ctx, "after-snapshot"); err != nil || p != nil {
		t.Fatalf("plan from after the snapshot: %+v, %v; want none", p, err)
	}

	testenv.WaitFor(t, 60*time.Second, "agent reconnects to the restored server", ag.Connected)
	testenv.WaitFor(t, 30*time.Second, "node-r READY again", func() bool { return nodeStatus(t, restored, "node-r") == "READY" })
	task, err := restored.Admin.Ping(ctx, "node-r", "after restore", 20)
	if err != nil || task.Status != "SUCCEEDED" {
		t.Fatalf("ping after restore: %+v, %v", task, err)
	}
	// The old replica's registration and election key came back with the
	// snapshot; they go when their lease, not renewed by anyone, expires.
	testenv.WaitFor(t, 30*time.Second, "the restored server leads alone", func() bool {
		st, err := restored.Admin.ClusterStatus(ctx)
		return err == nil && st.Leader != nil && *st.Leader == restored.ID() && len(st.Replicas) == 1 &&
			st.Replicas[0].ID == restored.ID() && st.Etcd.Members[0].Healthy
	})
}

// A snapshot is for admins: the endpoint refuses others with the API's
// codes and audits the refusal; so does the cluster query.
func TestClusterSnapshotRefused(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	if _, err := s.Admin.CreateReseller(ctx, "snapres", "reseller-password-0123", 1, 100, nil, ""); err != nil {
		t.Fatal(err)
	}
	res, _, err := s.Client("").Login(ctx, "snapres", "reseller-password-0123")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := res.ClusterSnapshot(ctx, io.Discard); client.CodeOf(err) != "FORBIDDEN" {
		t.Fatalf("reseller snapshot: %v, want FORBIDDEN", err)
	}
	if _, _, err := s.Client("").ClusterSnapshot(ctx, io.Discard); client.CodeOf(err) != "UNAUTHENTICATED" {
		t.Fatalf("anonymous snapshot: %v, want UNAUTHENTICATED", err)
	}
	if _, _, err := s.Client("not-a-token").ClusterSnapshot(ctx, io.Discard); client.CodeOf(err) != "UNAUTHENTICATED" {
		t.Fatalf("bad-token snapshot: %v, want UNAUTHENTICATED", err)
	}
	if err := res.Do(ctx, `{cluster{leader}}`, nil, nil); client.CodeOf(err) != "FORBIDDEN" {
		t.Fatalf("reseller cluster query: %v, want FORBIDDEN", err)
	}
	evs, _, err := s.Admin.AuditEvents(ctx, client.AuditFilter{Action: "clusterSnapshot", FailedOnly: true}, 10, "")
	if err != nil {
		t.Fatal(err)
	}
	var refusedReseller, refusedAnon bool
	for _, ev := range evs {
		refusedReseller = refusedReseller || (ev.Actor == "snapres" && ev.Result == "FORBIDDEN")
		refusedAnon = refusedAnon || (ev.Actor == "anonymous" && ev.Result == "UNAUTHENTICATED")
	}
	if !refusedReseller || !refusedAnon {
		t.Fatalf("refusals not audited: %+v", evs)
	}
}
