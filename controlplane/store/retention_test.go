package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestPruneTasks deletes finished tasks from before the cutoff and keeps
// the pending ones, the ones a done notice or a database in flight waits
// on, and everything newer.
func TestPruneTasks(t *testing.T) {
	cli := testenv.EtcdClient(t, testenv.StartEtcd(t))
	s := store.New(cli)
	ctx := context.Background()
	audit := store.NewAuditEvent("system", "test", "enqueue", "n1", "ok")
	if err := s.CreateNode(ctx, store.Node{Name: "n1"}, audit); err != nil {
		t.Fatal(err)
	}
	spec := func() *agentpb.Task {
		return &agentpb.Task{Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: "x"}}}
	}
	enqueue := func(object string) *store.Task {
		t.Helper()
		b := store.NewBatch()
		task, err := b.Enqueue("n1", spec(), object, "test")
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Commit(ctx, b); !ok || err != nil {
			t.Fatal(ok, err)
		}
		return task
	}
	finish := func(task *store.Task) {
		t.Helper()
		r := &agentpb.TaskResult{TaskId: task.ID, Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, FinishedUnixNano: time.Now().UnixNano()}
		if ok, err := s.CompleteTask(ctx, "n1", r, audit); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	finished := enqueue("")
	finish(finished)
	pending := enqueue("")
	noticed := enqueue("account/a1") // its done notice stays unconsumed
	finish(noticed)
	dbTask := enqueue("")
	finish(dbTask)
	if _, err := cli.Put(ctx, store.DatabaseStateKey("a1", "shop"), `{"observedGeneration":0,"taskId":"`+dbTask.ID+`"}`); err != nil {
		t.Fatal(err)
	}
	cutoff := time.Now().Add(time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	newer := enqueue("")
	finish(newer)

	n, err := s.PruneTasks(ctx, cutoff, 100)
	if err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want 1", n, err)
	}
	if _, _, err := s.GetTask(ctx, finished.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("finished old task: %v", err)
	}
	for what, task := range map[string]*store.Task{"pending": pending, "noticed": noticed, "database's": dbTask, "newer": newer} {
		if _, _, err := s.GetTask(ctx, task.ID); err != nil {
			t.Errorf("%s task: %v", what, err)
		}
	}
	// Once the database settled, its task goes too.
	if _, err := cli.Put(ctx, store.DatabaseStateKey("a1", "shop"), `{"observedGeneration":1,"state":"ACTIVE"}`); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneTasks(ctx, cutoff, 100); err != nil || n != 1 {
		t.Fatalf("pruned %d (%v), want the database's task", n, err)
	}
}

// TestPruneAudit deletes events before the cutoff, oldest first, at most
// limit per call.
func TestPruneAudit(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	for range 5 {
		if err := s.AppendAudit(ctx, store.NewAuditEvent("admin", "test", "old", "x", "ok")); err != nil {
			t.Fatal(err)
		}
	}
	cutoff := time.Now().Add(time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	if err := s.AppendAudit(ctx, store.NewAuditEvent("admin", "test", "new", "x", "ok")); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneAudit(ctx, cutoff, 3); err != nil || n != 3 {
		t.Fatalf("first pass pruned %d (%v), want 3", n, err)
	}
	if n, err := s.PruneAudit(ctx, cutoff, 3); err != nil || n != 2 {
		t.Fatalf("second pass pruned %d (%v), want 2", n, err)
	}
	if n, err := s.PruneAudit(ctx, cutoff, 3); err != nil || n != 0 {
		t.Fatalf("third pass pruned %d (%v), want 0", n, err)
	}
	evs, _, _, err := s.ListAudit(ctx, store.AuditFilter{}, "", 10)
	if err != nil || len(evs) != 1 || evs[0].Action != "new" {
		t.Fatalf("left %+v (%v), want the new event", evs, err)
	}
}
