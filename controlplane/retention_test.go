package controlplane_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestPruneHistory: the leader deletes audit events and finished tasks past
// their retention, keeps a task still queued for a node that is away, and
// records what it deleted in the audit log.
func TestPruneHistory(t *testing.T) {
	s := testenv.StartServer(t, func(c *controlplane.Config) {
		c.AuditRetention, c.TaskRetention, c.PruneInterval = 3*time.Second, 2*time.Second, 200*time.Millisecond
	})
	s.StartAgent(t, "n1")
	ctx := testenv.Context(t)
	done, err := s.Admin.Ping(ctx, "n1", "hello", 10)
	if err != nil || done.Status != "SUCCEEDED" {
		t.Fatalf("ping: %+v %v", done, err)
	}
	audit := store.NewAuditEvent("test", "test", "createNode", "away", "ok")
	if err := s.Store().CreateNode(ctx, store.Node{Name: "away"}, audit); err != nil {
		t.Fatal(err)
	}
	queued, err := s.Store().EnqueueTask(ctx, "away", &agentpb.Task{Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: "later"}}}, "test", audit)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testenv.WaitFor(t, 30*time.Second, "the finished task pruned", func() bool {
		_, _, err := s.Store().GetTask(ctx, done.ID)
		return errors.Is(err, store.ErrNotFound)
	})
	if time.Since(start) < time.Second {
		t.Errorf("task pruned %s after it finished, retention is 2s", time.Since(start))
	}
	if _, _, err := s.Store().GetTask(context.Background(), queued.ID); err != nil {
		t.Errorf("queued task of an absent node: %v", err)
	}
	testenv.WaitFor(t, 30*time.Second, "old audit events pruned", func() bool {
		evs, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{}, "", 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Action == "createNode" && ev.Target == "away" {
				return false
			}
		}
		return true
	})
	evs, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{Action: "pruneHistory"}, "", 100)
	if err != nil || len(evs) == 0 {
		t.Fatalf("no pruneHistory audit event (%v)", err)
	}
	if ev := evs[len(evs)-1]; ev.Actor != "controller" || !strings.HasPrefix(ev.Result, "ok: ") {
		t.Errorf("pruneHistory event %+v", ev)
	}
}
