package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Audit events and finished tasks are history: nothing in the cluster's
// desired state depends on them once their controllers have acted, yet
// every account, every change and every agent action adds some. Kept
// forever they would grow etcd until it hits its space quota and refuses
// writes, so the leader deletes them after a retention period
// (controlplane's pruner). Both are keyed by ULID, so "older than" is a
// key range.

// idBefore is the least id of anything created at t or later.
func idBefore(t time.Time) string {
	return ulid.MustNew(ulid.Timestamp(t), zeroEntropy{}).String()
}

// PruneAudit deletes up to limit audit events recorded before before,
// oldest first, and returns how many it deleted.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, limit int) (int, error) {
	resp, err := s.cli.Get(ctx, prefixAudit, clientv3.WithRange(prefixAudit+idBefore(before)),
		clientv3.WithKeysOnly(), clientv3.WithLimit(int64(limit)))
	if err != nil {
		return 0, fmt.Errorf("list old audit events: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, nil
	}
	// One range deletion up to the last listed key: events only ever
	// arrive with current ids, far above it.
	last := string(resp.Kvs[len(resp.Kvs)-1].Key)
	del, err := s.cli.Delete(ctx, prefixAudit, clientv3.WithRange(last+"\x00"))
	if err != nil {
		return 0, fmt.Errorf("delete old audit events: %w", err)
	}
	return int(del.Deleted), nil
}

// PruneTasks deletes up to limit tasks created and finished before before,
// and returns how many it deleted. It keeps every task still pending (a
// node offline for long still has its queue), every task a done notice
// names (its controller has not acted on it yet) and every task a database
// or database user waits on (their outcome is recorded when the account's
// databases are next read or changed).
func (s *Store) PruneTasks(ctx context.Context, before time.Time, limit int) (int, error) {
	var waited map[string]bool // read once, when the first candidate appears
	end := prefixTasks + idBefore(before)
	from := prefixTasks
	deleted := 0
	const page = 500
	for deleted < limit {
		resp, err := s.cli.Get(ctx, from, clientv3.WithRange(end), clientv3.WithLimit(page))
		if err != nil {
			return deleted, fmt.Errorf("list old tasks: %w", err)
		}
		var cmps []clientv3.Cmp
		var ops []clientv3.Op
		for _, kv := range resp.Kvs {
			var t struct {
				ID         string     `json:"id"`
				Status     TaskStatus `json:"status"`
				FinishedAt time.Time  `json:"finishedAt"`
			}
			if err := json.Unmarshal(kv.Value, &t); err != nil {
				return deleted, fmt.Errorf("decode %s: %w", kv.Key, err)
			}
			if t.Status == TaskPending || t.FinishedAt.IsZero() || !t.FinishedAt.Before(before) {
				continue
			}
			if waited == nil {
				if waited, err = s.waitedTasks(ctx); err != nil {
					return deleted, err
				}
			}
			if waited[t.ID] {
				continue
			}
			cmps = append(cmps, unchanged(string(kv.Key), kv.ModRevision))
			ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			if len(ops) == MaxTxnOps/2 || deleted+len(ops) == limit {
				n, err := s.deleteUnchanged(ctx, cmps, ops)
				deleted += n
				if err != nil || deleted == limit {
					return deleted, err
				}
				cmps, ops = cmps[:0], ops[:0]
			}
		}
		n, err := s.deleteUnchanged(ctx, cmps, ops)
		deleted += n
		if err != nil || !resp.More {
			return deleted, err
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return deleted, nil
}

// deleteUnchanged deletes keys guarded by their revisions; a key that
// changed meanwhile (it cannot, for a finished task) makes it delete none.
func (s *Store) deleteUnchanged(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) (int, error) {
	if len(ops) == 0 {
		return 0, nil
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("delete old tasks: %w", err)
	}
	if !resp.Succeeded {
		return 0, nil
	}
	return len(ops), nil
}

// waitedTasks is the set of task ids a done notice names or a database
// status in flight waits on.
func (s *Store) waitedTasks(ctx context.Context) (map[string]bool, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(prefixDone, clientv3.WithPrefix()),
		clientv3.OpGet(prefixDBState, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read tasks in use: %w", err)
	}
	out := map[string]bool{}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		out[string(kv.Value)] = true
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var rec struct {
			TaskID string `json:"taskId"`
		}
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		if rec.TaskID != "" {
			out[rec.TaskID] = true
		}
	}
	return out, nil
}
