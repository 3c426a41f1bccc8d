package store_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

func TestMirrorAndPlanRevision(t *testing.T) {
	cli := testenv.EtcdClient(t, testenv.StartEtcd(t))
	s := store.New(cli)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	audit := store.NewAuditEvent("admin", "test", "createPlan", "p", "ok")

	// Not running yet: answered from etcd.
	if err := s.CreatePlan(ctx, store.Plan{Name: "before", DiskMB: 100}, audit); err != nil {
		t.Fatal(err)
	}
	p, rev, err := s.CachedPlan(ctx, "before")
	if err != nil || p.DiskMB != 100 || rev == 0 || s.MirroredPlan("before", rev) {
		t.Fatalf("before the mirror runs: %+v rev %d err %v", p, rev, err)
	}

	s.RunMirrors(ctx, slog.New(slog.DiscardHandler))
	if err := s.CreatePlan(ctx, store.Plan{Name: "after", DiskMB: 200}, audit); err != nil {
		t.Fatal(err)
	}
	_, rev2, err := s.GetPlanRev(ctx, "after")
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "both plans mirrored", func() bool {
		return s.MirroredPlan("before", rev) && s.MirroredPlan("after", rev2)
	})
	if p, r, err := s.CachedPlan(ctx, "after"); err != nil || p.DiskMB != 200 || r != rev2 {
		t.Fatalf("mirrored plan: %+v rev %d err %v", p, r, err)
	}
	if _, _, err := s.CachedPlan(ctx, "nosuch"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing plan: %v", err)
	}

	// An account built from a plan revision that is no longer current is
	// refused and nothing is written; from the current one it is created.
	now := time.Now().UTC()
	a := &store.Account{ID: store.NewAccountID(now), Username: "mirror1", Domain: "mirror1.example.com", Plan: "after", Owner: "admin", DiskMB: 200, Generation: 1, CreatedAt: now}
	if err := s.CreateAccount(ctx, a, rev2-1, store.Limits{}, audit); !errors.Is(err, store.ErrPlanChanged) {
		t.Fatalf("stale plan revision: %v", err)
	}
	if _, _, err := s.GetAccount(ctx, a.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("account written despite the refusal: %v", err)
	}
	a.Plan = "nosuch"
	if err := s.CreateAccount(ctx, a, rev2, store.Limits{}, audit); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing plan: %v", err)
	}
	a.Plan = "after"
	if err := s.CreateAccount(ctx, a, rev2, store.Limits{}, audit); err != nil {
		t.Fatal(err)
	}
}

// storeWithNode is a store on a fresh etcd holding node n1, and the audit
// event its changes are made with; its mirrors are not running yet.
func storeWithNode(t *testing.T, roles ...string) (context.Context, *store.Store, store.AuditEvent) {
	t.Helper()
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	audit := store.NewAuditEvent("admin", "test", "node", "n1", "ok")
	if err := s.CreateNode(ctx, store.Node{Name: "n1", Address: "192.0.2.1", Roles: roles}, audit); err != nil {
		t.Fatal(err)
	}
	return ctx, s, audit
}

func TestCachedServices(t *testing.T) {
	ctx, s, audit := storeWithNode(t, "dns")
	report := func(state string) store.NodeServices {
		return store.NodeServices{Node: "n1", ReportedAt: time.Now().UTC(),
			Services: []store.ServiceStatus{{Name: "pdns", State: state, Listen: []string{"127.0.0.1:5300"}}}}
	}
	if err := s.PutServices(ctx, report("running")); err != nil {
		t.Fatal(err)
	}
	// Not running yet: answered from etcd.
	if r, err := s.CachedServices(ctx, "n1"); err != nil || len(r.Services) != 1 || r.Services[0].State != "running" {
		t.Fatalf("before the mirror runs: %+v %v", r, err)
	}

	s.RunMirrors(ctx, slog.New(slog.DiscardHandler))
	if err := s.PutServices(ctx, report("failed")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the new report mirrored", func() bool {
		r := s.MirroredServices("n1")
		return r != nil && r.Services[0].State == "failed"
	})
	if r, err := s.CachedServices(ctx, "n1"); err != nil || r.Services[0].State != "failed" {
		t.Fatalf("mirrored report: %+v %v", r, err)
	}

	// A removed node's report leaves the mirror; the node reads as one
	// that never reported.
	if err := s.RemoveNode(ctx, "n1", audit); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the report gone from the mirror", func() bool {
		return s.MirroredServices("n1") == nil
	})
	if r, err := s.CachedServices(ctx, "n1"); err != nil || r.Node != "n1" || len(r.Services) != 0 {
		t.Fatalf("removed node: %+v %v", r, err)
	}
}

// CachedNode answers from the mirror once it runs, follows a change of the
// spec, and says ErrNotFound for a removed node as GetNode does.
func TestCachedNode(t *testing.T) {
	ctx, s, audit := storeWithNode(t, "web")
	if n, err := s.CachedNode(ctx, "n1"); err != nil || n.Address != "192.0.2.1" {
		t.Fatalf("before the mirror runs: %+v %v", n, err)
	}

	s.RunMirrors(ctx, slog.New(slog.DiscardHandler))
	if _, err := s.UpdateNode(ctx, "n1", func(n *store.Node) error { n.Roles = []string{"web", "dns"}; return nil }, audit); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the new spec mirrored", func() bool {
		n := s.MirroredNode("n1")
		return n != nil && len(n.Roles) == 2
	})
	if n, err := s.CachedNode(ctx, "n1"); err != nil || len(n.Roles) != 2 {
		t.Fatalf("mirrored spec: %+v %v", n, err)
	}

	if err := s.RemoveNode(ctx, "n1", audit); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the node gone from the mirror", func() bool {
		return s.MirroredNode("n1") == nil
	})
	if n, err := s.CachedNode(ctx, "n1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed node: %+v %v", n, err)
	}
}
