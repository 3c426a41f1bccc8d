package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/protos/agentpb"
)

// ErrUnchanged, returned by an update function, leaves the record as it
// is (the update then returns the record and no error).
var ErrUnchanged = errors.New("unchanged")

// ErrNoNode: an update was asked to write a task for a node that does not
// exist (removed); nothing was written.
var ErrNoNode = errors.New("the task's node does not exist")

// ObjectTask is a task written in the same transaction as the record it
// converges. With Track, the record's status names it as the task in
// flight.
type ObjectTask struct {
	Node      string
	Spec      *agentpb.Task
	CreatedBy string
	Track     bool
	ID        string // set once written
}

// updateRecord applies fn to the record at key and writes it back, with
// the tasks fn returns (object names them for their done notices) and the
// audit event, if nobody wrote the record meanwhile; otherwise it reads
// it again and retries. track records a tracked task's id and generation
// on the record before it is written.
func updateRecord[T any](ctx context.Context, s *Store, key, object string, fn func(*T) ([]*ObjectTask, error), track func(*T, string, int64), audit AuditEvent) (*T, error) {
	return updateRecordIn(ctx, s, key, object, func(rec *T, b *Batch) ([]*ObjectTask, error) {
		if audit.Action != "" {
			b.Audit(audit)
		}
		return fn(rec)
	}, track)
}

// updateRecordIn is updateRecord whose fn also adds to a batch (audit
// events, outcomes consumed) written in the same transaction: one
// proposal instead of two. Each attempt starts a new batch; a compare the
// batch holds that fails is taken for a concurrent write, and retried.
func updateRecordIn[T any](ctx context.Context, s *Store, key, object string, fn func(*T, *Batch) ([]*ObjectTask, error), track func(*T, string, int64)) (*T, error) {
	for {
		rec, rev, err := getJSON[T](ctx, s.cli, key)
		if err != nil {
			return nil, err
		}
		b := NewBatch()
		tasks, err := fn(rec, b)
		if errors.Is(err, ErrUnchanged) {
			return rec, nil
		}
		if err != nil {
			return nil, err
		}
		now := time.Now().UTC()
		var ops []clientv3.Op
		for _, t := range tasks {
			tr, tops, err := taskOps(t.Node, t.Spec, object, t.CreatedBy, nil, now)
			if err != nil {
				return nil, err
			}
			t.ID = tr.ID
			if t.Track && track != nil {
				track(rec, tr.ID, t.Spec.GetGeneration())
			}
			ops = append(ops, tops...)
		}
		ops = append(ops, clientv3.OpPut(key, mustJSON(rec)))
		ops = append(ops, b.ops...)
		// A task for a node that was removed meanwhile would stay PENDING
		// for ever (RemoveNode deletes its queue, nobody completes it):
		// the nodes must exist when the tasks are written, compared in
		// a nested transaction so that a missing node is told apart from
		// a concurrent write of the record.
		var nodes []clientv3.Cmp
		for _, t := range tasks {
			nodes = append(nodes, present(nodeKey(t.Node)))
		}
		resp, err := s.cli.Txn(ctx).If(append([]clientv3.Cmp{unchanged(key, rev)}, b.cmps...)...).Then(clientv3.OpTxn(nodes, ops, nil)).Commit()
		if err != nil {
			return nil, fmt.Errorf("update %s: %w", object, err)
		}
		if !resp.Succeeded {
			continue
		}
		if !resp.Responses[0].GetResponseTxn().GetSucceeded() {
			return nil, fmt.Errorf("update %s: %w", object, ErrNoNode)
		}
		for _, z := range b.zones {
			s.zones.putOwned(zoneKey(z.Name), resp.Header.Revision, z)
		}
		return rec, nil
	}
}
