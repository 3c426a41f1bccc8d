package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// FakeNode declares a node and makes the control plane see it as READY
// without an agent: its state says enrolled and its liveness key is held by
// a long lease. Tasks queued for it are never run. It is for tests of
// scheduling and the API, where executing tasks on the host is beside the
// point; the lifecycle tests use real agents.
func (s *Server) FakeNode(t testing.TB, name string, labels map[string]string, maxAccounts int, diskMB int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Admin.CreateJoinToken(ctx, name, "127.0.0.1", []string{"WEB", "DNS", "MAIL", "DB"}, labels); err != nil {
		t.Fatalf("declare %s: %v", name, err)
	}
	st := s.Store()
	_, err := st.UpdateNode(ctx, name, func(n *store.Node) error {
		n.MaxAccounts, n.DiskMB = maxAccounts, diskMB
		return nil
	}, store.NewAuditEvent("test", "", "fakeNode", name, "ok"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	err = st.UpdateNodeState(ctx, name, func(ns *store.NodeState) bool {
		ns.EnrolledAt, ns.LastSeen, ns.AgentVersion = now, now, "fake"
		ns.Facts = store.NodeFacts{OS: "fake", CPUs: 8, MemoryBytes: 32 << 30, DiskBytes: diskMB << 20}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	lease, err := st.GrantLease(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.MarkAlive(ctx, name, "test", lease); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second, name+" READY", func() bool {
		v, err := st.GetNode(ctx, name)
		return err == nil && v.State.Status == store.NodeReady
	})
}
