package store_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestCompleteTaskFirstResultWins: the first result is recorded and
// dequeues the task; a re-sent result, a result from another node and a
// result for an unknown task change nothing.
func TestCompleteTaskFirstResultWins(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	audit := store.NewAuditEvent("system", "test", "enqueue", "n1", "ok")
	for _, n := range []string{"n1", "n2"} {
		if err := s.CreateNode(ctx, store.Node{Name: n}, audit); err != nil {
			t.Fatal(err)
		}
	}
	task, err := s.EnqueueTask(ctx, "n1", &agentpb.Task{Action: &agentpb.Task_DeleteAccount{DeleteAccount: &agentpb.DeleteAccountAction{Username: "gone"}}}, "test", audit)
	if err != nil {
		t.Fatal(err)
	}
	result := func(status agentpb.TaskStatus, errText string) *agentpb.TaskResult {
		return &agentpb.TaskResult{TaskId: task.ID, Status: status, Error: errText}
	}

	if ok, err := s.CompleteTask(ctx, "n2", result(agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, ""), audit); ok || err != nil {
		t.Fatalf("result from another node: %v %v", ok, err)
	}
	if ok, err := s.CompleteTask(ctx, "n1", result(agentpb.TaskStatus_TASK_STATUS_FAILED, "boom"), audit); !ok || err != nil {
		t.Fatalf("first result: %v %v", ok, err)
	}
	if ok, err := s.CompleteTask(ctx, "n1", result(agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, ""), audit); ok || err != nil {
		t.Fatalf("re-sent result: %v %v", ok, err)
	}
	if ok, err := s.CompleteTask(ctx, "n1", &agentpb.TaskResult{TaskId: "nosuch", Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED}, audit); ok || err != nil {
		t.Fatalf("unknown task: %v %v", ok, err)
	}
	got, _, err := s.GetTask(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.TaskFailed || got.Error != "boom" {
		t.Fatalf("recorded %s %q, want the first result", got.Status, got.Error)
	}
	if n, err := s.QueueLen(ctx, "n1"); err != nil || n != 0 {
		t.Fatalf("queue after the result: %d %v", n, err)
	}
}

// TestDoneTaskWithoutSpec: a done notice's task carries everything of the
// record but its spec.
func TestDoneTaskWithoutSpec(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	audit := store.NewAuditEvent("system", "test", "enqueue", "n1", "ok")
	if err := s.CreateNode(ctx, store.Node{Name: "n1"}, audit); err != nil {
		t.Fatal(err)
	}
	b := store.NewBatch()
	task, err := b.Enqueue("n1", &agentpb.Task{Generation: 3, Action: &agentpb.Task_DeleteZone{DeleteZone: &agentpb.DeleteZoneAction{Zone: "example.com"}}}, "zone/example.com", "controller")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Commit(ctx, b); !ok || err != nil {
		t.Fatal(ok, err)
	}
	r := &agentpb.TaskResult{TaskId: task.ID, Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "boom", ResultJson: `{"zone":"example.com"}`}
	if ok, err := s.CompleteTask(ctx, "n1", r, audit); !ok || err != nil {
		t.Fatal(ok, err)
	}
	done, err := s.ZoneDone(ctx, "example.com")
	if err != nil || len(done) != 1 || done[0].Task == nil {
		t.Fatalf("done %+v %v", done, err)
	}
	full, _, err := s.GetTask(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := done[0].Task
	if len(full.Spec) == 0 || got.Spec != nil {
		t.Errorf("spec: record %d bytes, done notice's task %d", len(full.Spec), len(got.Spec))
	}
	full.Spec = nil
	if !reflect.DeepEqual(got, full) {
		t.Errorf("done notice's task %+v, record %+v", got, full)
	}
}
