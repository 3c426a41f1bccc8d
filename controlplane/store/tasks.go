package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/protos/agentpb"
)

// TaskStatus is where a task is in its life.
type TaskStatus string

const (
	TaskPending   TaskStatus = "PENDING"
	TaskSucceeded TaskStatus = "SUCCEEDED"
	TaskFailed    TaskStatus = "FAILED"
)

// Task is the record of one unit of work for one node. The wire form the
// agent receives (agentpb.Task) is kept verbatim in Spec so that every resend
// is byte-for-byte the task that was first written.
type Task struct {
	ID     string     `json:"id"`
	Node   string     `json:"node"`
	Action string     `json:"action"`
	Spec   []byte     `json:"spec"`
	Status TaskStatus `json:"status"`
	Error  string     `json:"error,omitempty"`
	// Reason classifies a failure; UNSPECIFIED when the task succeeded.
	Reason agentpb.ErrorReason `json:"reason,omitempty"`
	// Result is the agent's typed result: an agentpb.TaskResult holding
	// only its oneof result, in protobuf wire form. Read it with the typed
	// accessors (ZoneResult, ...). Records written before results were
	// typed kept JSON under "result"; that key is no longer read.
	Result []byte `json:"resultProto,omitempty"`
	// Object is the record the task converges ("account/<id>"), if any; its
	// controller is told when the task finishes.
	Object     string `json:"object,omitempty"`
	Generation int64  `json:"generation,omitempty"`
	// Refresh names the secondaries that transfer the task's zone the
	// moment it succeeds with a new serial: their refresh tasks are
	// written in the transaction that records the result, so they start
	// without waiting a commit for the zone controller to read it.
	Refresh []string `json:"refresh,omitempty"`
	// Query marks a read-only task (a listing): its record expires and its
	// completion is not audited.
	Query      bool      `json:"query,omitempty"`
	CreatedBy  string    `json:"createdBy"`
	CreatedAt  time.Time `json:"createdAt"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

func taskKey(id string) string        { return prefixTasks + id }
func queuePrefix(node string) string  { return prefixQueue + node + "/" }
func queueKey(node, id string) string { return queuePrefix(node) + id }

// newTaskID returns a ULID: unique, and sorting by key sorts by creation
// time, so a node's queue is read back in the order tasks were written.
func newTaskID(now time.Time) string {
	return ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String()
}

func taskActionName(t *agentpb.Task) string {
	m := t.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("action"))
	if fd == nil {
		return "unknown"
	}
	return fd.JSONName() // the oneof field in lowerCamelCase: ensureAccount, ensureZone, ...
}

// EnqueueTask assigns an id to spec, then writes the task record and its queue
// entry in one transaction, before anything is sent: a task that was
// acknowledged to the caller survives any crash. The node must exist.
func (s *Store) EnqueueTask(ctx context.Context, node string, spec *agentpb.Task, createdBy string, audit AuditEvent) (*Task, error) {
	t, ops, err := taskOps(node, spec, "", createdBy, nil, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	audit.Target = node + "/" + t.ID
	resp, err := s.cli.Txn(ctx).If(present(nodeKey(node))).Then(append(ops, auditPut(audit))...).Commit()
	if err != nil {
		return nil, fmt.Errorf("enqueue task for %q: %w", node, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("node %q: %w", node, ErrNotFound)
	}
	return t, nil
}

// taskOps builds the writes that create a task: its record and its queue
// entry. object names the record a controller waits on ("" for none);
// refresh is the task's Refresh.
func taskOps(node string, spec *agentpb.Task, object, createdBy string, refresh []string, now time.Time) (*Task, []clientv3.Op, error) {
	spec.Id = newTaskID(now)
	spec.CreatedUnixNano = now.UnixNano()
	wire, err := proto.Marshal(spec)
	if err != nil {
		return nil, nil, fmt.Errorf("encode task: %w", err)
	}
	t := &Task{
		ID:         spec.Id,
		Node:       node,
		Action:     taskActionName(spec),
		Spec:       wire,
		Status:     TaskPending,
		Object:     object,
		Generation: spec.Generation,
		Refresh:    refresh,
		CreatedBy:  createdBy,
		CreatedAt:  now,
	}
	return t, []clientv3.Op{
		clientv3.OpPut(taskKey(t.ID), mustJSON(t)),
		clientv3.OpPut(queueKey(node, t.ID), string(wire)),
	}, nil
}

// GetTask returns a task record.
func (s *Store) GetTask(ctx context.Context, id string) (*Task, int64, error) {
	t, rev, err := getJSON[Task](ctx, s.cli, taskKey(id))
	if err == ErrNotFound {
		return nil, 0, fmt.Errorf("task %q: %w", id, ErrNotFound)
	}
	return t, rev, err
}

// PendingTasks returns the node's unacknowledged tasks in creation order and
// the revision they were read at, from which a watch picks up new ones.
func (s *Store) PendingTasks(ctx context.Context, node string) ([]*agentpb.Task, int64, error) {
	resp, err := s.cli.Get(ctx, queuePrefix(node), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("read queue of %q: %w", node, err)
	}
	out := make([]*agentpb.Task, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		t, err := DecodeQueued(kv.Value)
		if err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, t)
	}
	return out, resp.Header.Revision, nil
}

// DecodeQueued decodes a queue entry.
func DecodeQueued(b []byte) (*agentpb.Task, error) {
	t := &agentpb.Task{}
	if err := proto.Unmarshal(b, t); err != nil {
		return nil, err
	}
	return t, nil
}

// CompleteTask records the agent's result if the task is still queued for
// that node, and dequeues it in the same transaction. It reports false when
// the task was already completed (a re-sent result) or belongs to another
// node: at-least-once delivery means the first result wins and later copies
// change nothing.
//
// The task is read serializably first: a linearizable read waits until
// etcd has applied everything committed before it, which under load costs
// as much as the write. The transaction compares the record's revision, so
// a stale read changes nothing; then, and when the read finds no task
// (a member that has not applied its creation yet), it is read again
// linearizably.
func (s *Store) CompleteTask(ctx context.Context, node string, r *agentpb.TaskResult, audit AuditEvent) (bool, error) {
	for _, serializable := range []bool{true, false} {
		done, retry, err := s.completeTask(ctx, node, r, audit, serializable)
		if err != nil || !retry {
			return done, err
		}
	}
	return false, nil
}

func (s *Store) completeTask(ctx context.Context, node string, r *agentpb.TaskResult, audit AuditEvent, serializable bool) (done, retry bool, err error) {
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	t, rev, err := getJSON[Task](ctx, s.cli, taskKey(r.GetTaskId()), opts...)
	if errors.Is(err, ErrNotFound) {
		return false, serializable, nil
	}
	if err != nil {
		return false, false, err
	}
	if t.Node != node {
		return false, false, nil
	}
	switch r.GetStatus() {
	case agentpb.TaskStatus_TASK_STATUS_SUCCEEDED:
		t.Status = TaskSucceeded
	default:
		t.Status = TaskFailed
	}
	t.Error = r.GetError()
	t.Reason = r.GetReason()
	if t.Result, err = encodeResult(r); err != nil {
		return false, false, fmt.Errorf("complete task %s: %w", t.ID, err)
	}
	t.FinishedAt = time.Unix(0, r.GetFinishedUnixNano()).UTC()
	if r.GetFinishedUnixNano() == 0 {
		t.FinishedAt = time.Now().UTC()
	}
	audit.Action = "task." + t.Action
	audit.Target = node + "/" + t.ID
	audit.Result = "ok"
	if t.Status == TaskFailed {
		audit.Result = "failed: " + t.Error
	}
	q := queueKey(node, t.ID)
	// A query's record keeps the lease it was written with, so that it
	// expires even when its reader never forgets it.
	put := clientv3.OpPut(taskKey(t.ID), mustJSON(t))
	if t.Query {
		put = clientv3.OpPut(taskKey(t.ID), mustJSON(t), clientv3.WithIgnoreLease())
	}
	ops := []clientv3.Op{clientv3.OpDelete(q), put}
	if !t.Query {
		ops = append(ops, auditPut(audit))
	}
	if kind, id, ok := strings.Cut(t.Object, "/"); ok {
		// The controller that owns the object learns of the result from
		// this notice, written atomically with the result itself.
		ops = append(ops, clientv3.OpPut(doneKey(kind, id, t.ID), t.ID))
	}
	if t.Status == TaskSucceeded && len(t.Refresh) > 0 {
		refresh, err := refreshOps(t, time.Now().UTC())
		if err != nil {
			return false, false, err
		}
		ops = append(ops, refresh...)
	}
	tresp, err := s.cli.Txn(ctx).If(present(q), unchanged(taskKey(t.ID), rev)).Then(ops...).Commit()
	if err != nil {
		return false, false, fmt.Errorf("complete task %s: %w", t.ID, err)
	}
	return tresp.Succeeded, !tresp.Succeeded && serializable, nil
}

// refreshOps enqueues a refresh of t's zone on each of t.Refresh when t
// published a new serial. The tasks name no object: a secondary that
// misses one still gets the primary's NOTIFY, and so does one whose
// primary sent no zone result (the result is recorded all the same, and
// the zone controller treats it as a failed attempt). Their ids take the control plane's clock, not the
// agent's (t.FinishedAt), so that they sort after the tasks queued before
// them.
func refreshOps(t *Task, now time.Time) ([]clientv3.Op, error) {
	zone, ok := strings.CutPrefix(t.Object, "zone/")
	if !ok {
		return nil, nil
	}
	res, err := t.ZoneResult()
	if err != nil || !res.GetChanged() || res.GetSerial() == 0 {
		return nil, nil
	}
	var ops []clientv3.Op
	for _, node := range t.Refresh {
		spec := &agentpb.Task{Action: &agentpb.Task_RefreshSecondaryZone{RefreshSecondaryZone: &agentpb.RefreshSecondaryZoneAction{Zone: zone, Serial: res.GetSerial()}}}
		_, add, err := taskOps(node, spec, "", t.CreatedBy, nil, now)
		if err != nil {
			return nil, err
		}
		ops = append(ops, add...)
	}
	return ops, nil
}

// QueueLen counts a node's unacknowledged tasks.
func (s *Store) QueueLen(ctx context.Context, node string) (int64, error) {
	resp, err := s.cli.Get(ctx, queuePrefix(node), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

// QueuedTaskIDs lists every node's unacknowledged task ids, oldest first,
// in one keys-only read (the gateway's delivery check).
func (s *Store) QueuedTaskIDs(ctx context.Context) (map[string][]string, error) {
	resp, err := s.cli.Get(ctx, prefixQueue, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("read task queues: %w", err)
	}
	out := map[string][]string{}
	for _, kv := range resp.Kvs {
		node, id, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), prefixQueue), "/")
		if ok {
			out[node] = append(out[node], id)
		}
	}
	return out, nil
}

// TaskCreatedAt reads a task's creation time from its id (a ULID); ok is
// false for an id that is not one.
func TaskCreatedAt(id string) (time.Time, bool) {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return time.Time{}, false
	}
	return ulid.Time(u.Time()), true
}

// CountTasksBy counts the task records createdBy wrote (tests: what a
// user's requests wrote).
func (s *Store) CountTasksBy(ctx context.Context, createdBy string) (int, error) {
	resp, err := s.cli.Get(ctx, prefixTasks, clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, kv := range resp.Kvs {
		if t, err := decodeJSON[Task](kv.Key, kv.Value); err == nil && t.CreatedBy == createdBy {
			n++
		}
	}
	return n, nil
}
