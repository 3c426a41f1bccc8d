package store_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

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
	r := &agentpb.TaskResult{TaskId: task.ID, Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "boom", Reason: agentpb.ErrorReason_ERROR_REASON_INTERNAL,
		Result: &agentpb.TaskResult_Zone{Zone: &agentpb.ZoneResult{Zone: "example.com"}}}
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

// TestCompleteTaskRefreshesSecondaries: a zone change that succeeds with a
// new serial queues a refresh of that serial for each of its secondaries,
// in the transaction that records it; one that changed nothing or failed
// queues none, and a result of another kind is recorded all the same.
func TestCompleteTaskRefreshesSecondaries(t *testing.T) {
	zoneResult := func(serial uint32, changed bool) *agentpb.TaskResult {
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Zone{Zone: &agentpb.ZoneResult{Zone: "example.com", Serial: serial, Changed: changed}}}
	}
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	audit := store.NewAuditEvent("system", "test", "enqueue", "n1", "ok")
	for _, n := range []string{"n1", "n2", "n3"} {
		if err := s.CreateNode(ctx, store.Node{Name: n}, audit); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		status agentpb.TaskStatus
		result *agentpb.TaskResult // its oneof result only
		want   uint32              // serial refreshed; 0: none
	}{
		{"new serial", agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, zoneResult(2026112401, true), 2026112401},
		{"unchanged", agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, zoneResult(2026112401, false), 0},
		{"failed", agentpb.TaskStatus_TASK_STATUS_FAILED, zoneResult(2026112402, true), 0},
		{"result of another kind", agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, &agentpb.TaskResult{Result: &agentpb.TaskResult_Ping{Ping: &agentpb.PingResult{Payload: "2026112403"}}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := store.NewBatch()
			spec := &agentpb.Task{Generation: 2, Action: &agentpb.Task_EnsureZone{EnsureZone: &agentpb.EnsureZoneAction{Zone: "example.com"}}}
			task, err := b.EnqueueRefreshing("n1", spec, "zone/example.com", "controller", []string{"n2", "n3"})
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := s.Commit(ctx, b); !ok || err != nil {
				t.Fatal(ok, err)
			}
			r := &agentpb.TaskResult{TaskId: task.ID, Status: tc.status, Result: tc.result.GetResult()}
			if ok, err := s.CompleteTask(ctx, "n1", r, audit); !ok || err != nil {
				t.Fatal(ok, err)
			}
			_, resultRev, err := s.GetTask(ctx, task.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range []string{"n2", "n3"} {
				queued, _, err := s.PendingTasks(ctx, n)
				if err != nil {
					t.Fatal(err)
				}
				var got []uint32
				for _, q := range queued {
					rs := q.GetRefreshSecondaryZone()
					if rs == nil || rs.GetZone() != "example.com" {
						t.Fatalf("%s: queued %v", n, q)
					}
					got = append(got, rs.GetSerial())
					if _, rev, err := s.GetTask(ctx, q.Id); err != nil || rev != resultRev {
						t.Errorf("%s: refresh written at revision %d, the result at %d (%v)", n, rev, resultRev, err)
					}
					// Done, as the secondary's agent would report it.
					if ok, err := s.CompleteTask(ctx, n, &agentpb.TaskResult{TaskId: q.Id, Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED}, audit); !ok || err != nil {
						t.Fatal(ok, err)
					}
				}
				var want []uint32
				if tc.want != 0 {
					want = append(want, tc.want)
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s refreshes serials %v, want %v", n, got, want)
				}
			}
			if n, err := s.QueueLen(ctx, "n1"); err != nil || n != 0 {
				t.Fatalf("primary's queue: %d %v", n, err)
			}
		})
	}
}

// TestQueryTaskNotAuditedAndExpires: a listing's result writes no audit
// event (the leader lists every account's databases every few minutes) and
// its record keeps the lease it was written with.
func TestQueryTaskNotAuditedAndExpires(t *testing.T) {
	cli := testenv.EtcdClient(t, testenv.StartEtcd(t))
	s := store.New(cli)
	ctx := context.Background()
	audit := store.NewAuditEvent("system", "test", "enqueue", "n1", "ok")
	if err := s.CreateNode(ctx, store.Node{Name: "n1"}, audit); err != nil {
		t.Fatal(err)
	}
	task, err := s.EnqueueQueryTask(ctx, "n1", &agentpb.Task{Action: &agentpb.Task_ListDatabases{ListDatabases: &agentpb.ListDatabasesAction{Username: "alice"}}},
		"listDatabases", "controller", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.CompleteTask(ctx, "n1", &agentpb.TaskResult{TaskId: task.ID, Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED},
		store.NewAuditEvent("node:n1", "node", "", "", "")); !ok || err != nil {
		t.Fatalf("complete: %v %v", ok, err)
	}
	evs, _, _, err := s.ListAudit(ctx, store.AuditFilter{Action: "task.listDatabases"}, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 0 {
		t.Fatalf("a query's result was audited: %+v", evs)
	}
	resp, err := cli.Get(ctx, store.TaskKey(task.ID))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("task record: %v %v", resp, err)
	}
	if resp.Kvs[0].Lease == 0 {
		t.Fatal("the completed query's record lost its lease: it would never expire")
	}
}

// TestTaskTypedResult: the agent's typed result and reason are recorded
// with the task, and the accessors return them, or an error, never a zero
// value, for a failed task, a task without a result or one of another kind.
func TestTaskTypedResult(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	audit := store.NewAuditEvent("system", "test", "enqueue", "n1", "ok")
	if err := s.CreateNode(ctx, store.Node{Name: "n1"}, audit); err != nil {
		t.Fatal(err)
	}
	complete := func(r *agentpb.TaskResult) *store.Task {
		t.Helper()
		task, err := s.EnqueueTask(ctx, "n1", &agentpb.Task{Action: &agentpb.Task_EnsureZone{EnsureZone: &agentpb.EnsureZoneAction{Zone: "example.com"}}}, "test", audit)
		if err != nil {
			t.Fatal(err)
		}
		r.TaskId = task.ID
		if ok, err := s.CompleteTask(ctx, "n1", r, audit); !ok || err != nil {
			t.Fatal(ok, err)
		}
		got, _, err := s.GetTask(ctx, task.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}

	want := &agentpb.ZoneResult{Zone: "example.com", Serial: 2026120501, Ds: []string{"example.com. IN DS 1 13 2 ab"}, Changed: true}
	ok := complete(&agentpb.TaskResult{Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, Result: &agentpb.TaskResult_Zone{Zone: want}})
	if got, err := ok.ZoneResult(); err != nil || !proto.Equal(got, want) {
		t.Fatalf("ZoneResult = %v, %v; want %v", got, err, want)
	}
	if m, err := ok.ResultMessage(); err != nil || !proto.Equal(m, want) {
		t.Fatalf("ResultMessage = %v, %v", m, err)
	}
	if ok.Err() != nil {
		t.Fatalf("Err of a succeeded task: %v", ok.Err())
	}
	if got, err := ok.PingResult(); err == nil || got != nil || !strings.Contains(err.Error(), "result is zone, want PingResult") {
		t.Fatalf("PingResult of a zone result = %v, %v", got, err)
	}

	failed := complete(&agentpb.TaskResult{Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "rollover step too early", Reason: agentpb.ErrorReason_ERROR_REASON_TOO_EARLY})
	var te *store.TaskError
	if got, err := failed.ZoneResult(); got != nil || !errors.As(err, &te) || te.Reason != agentpb.ErrorReason_ERROR_REASON_TOO_EARLY || err.Error() != "rollover step too early" {
		t.Fatalf("ZoneResult of a failed task = %v, %v", got, err)
	}
	if failed.Reason != agentpb.ErrorReason_ERROR_REASON_TOO_EARLY {
		t.Fatalf("reason %v", failed.Reason)
	}

	none := complete(&agentpb.TaskResult{Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED})
	if got, err := none.ZoneResult(); err == nil || got != nil {
		t.Fatalf("ZoneResult without a result = %v, %v", got, err)
	}
	if m, err := none.ResultMessage(); m != nil || err != nil {
		t.Fatalf("ResultMessage without a result = %v, %v", m, err)
	}

	// A record whose result bytes are damaged is an error too.
	bad := *ok
	bad.Result = []byte{0xff}
	if got, err := bad.ZoneResult(); err == nil || got != nil {
		t.Fatalf("ZoneResult of damaged bytes = %v, %v", got, err)
	}
}
