package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/protos/agentpb"
)

// MaxTxnOps is etcd's default limit of operations in one transaction
// (--max-txn-ops). Batches stay below it so that nPanel runs on an external
// etcd with default settings.
const MaxTxnOps = 128

// Batch collects controller changes that commit in one transaction, each
// guarded by a compare on the revision it was computed from: the whole batch
// applies or none of it does. This is how the account controller keeps up
// with thousands of accounts a second on an etcd that does about a thousand
// transactions a second from one client: one transaction carries many
// placements and transitions.
type Batch struct {
	cmps []clientv3.Cmp
	ops  []clientv3.Op
	now  time.Time
	// zones written with PutZone, for the store's zone cache.
	zones []*Zone
}

// NewBatch starts an empty batch.
func NewBatch() *Batch { return &Batch{now: time.Now().UTC()} }

// Now is the time stamped on everything in the batch.
func (b *Batch) Now() time.Time { return b.now }

// Ops counts the batch's operations.
func (b *Batch) Ops() int { return len(b.ops) + len(b.cmps) }

// Empty reports whether the batch changes nothing.
func (b *Batch) Empty() bool { return len(b.ops) == 0 }

// PutAccount writes a, provided it is still at rev.
func (b *Batch) PutAccount(a *Account, rev int64) {
	b.cmps = append(b.cmps, unchanged(accountKey(a.ID), rev))
	b.ops = append(b.ops, clientv3.OpPut(accountKey(a.ID), mustJSON(a)))
}

// GuardNode makes the batch fail if node's spec (roles, labels, capacity,
// draining) changed since it was read at rev: a placement decided on an
// older spec must be decided again.
func (b *Batch) GuardNode(node string, rev int64) {
	if rev > 0 {
		b.cmps = append(b.cmps, unchanged(nodeKey(node), rev))
	}
}

// PutAlloc writes a node's allocation, provided it is still at rev (0: the
// node had none). Two schedulers that placed on the same node from the same
// snapshot cannot both commit: the second fails this compare and re-plans.
func (b *Batch) PutAlloc(node string, a Alloc, rev int64) {
	if rev == 0 {
		b.cmps = append(b.cmps, absent(allocKey(node)))
	} else {
		b.cmps = append(b.cmps, unchanged(allocKey(node), rev))
	}
	b.ops = append(b.ops, clientv3.OpPut(allocKey(node), mustJSON(a)))
}

// Enqueue adds a task for node that converges object; it returns the task.
func (b *Batch) Enqueue(node string, spec *agentpb.Task, object, createdBy string) (*Task, error) {
	return b.EnqueueRefreshing(node, spec, object, createdBy, nil)
}

// EnqueueRefreshing is Enqueue for a task that changes a zone on its
// primary, with the secondaries to refresh when it succeeds (Task.Refresh).
func (b *Batch) EnqueueRefreshing(node string, spec *agentpb.Task, object, createdBy string, secondaries []string) (*Task, error) {
	t, ops, err := taskOps(node, spec, object, createdBy, secondaries, b.now)
	if err != nil {
		return nil, err
	}
	b.ops = append(b.ops, ops...)
	return t, nil
}

// Consume deletes a done notice the batch has acted on.
func (b *Batch) Consume(key string) {
	b.ops = append(b.ops, clientv3.OpDelete(key))
}

// Audit adds an audit event.
func (b *Batch) Audit(ev AuditEvent) { b.ops = append(b.ops, auditPut(ev)) }

// Commit applies the batch. It reports false, writing nothing, when any
// compare failed: something the batch was computed from changed.
func (s *Store) Commit(ctx context.Context, b *Batch) (bool, error) {
	ok, _, err := s.CommitRev(ctx, b)
	return ok, err
}

// CommitRev is Commit that also returns the revision the batch was
// written at (the mod revision of every key it put): 0 when it wrote
// nothing.
func (s *Store) CommitRev(ctx context.Context, b *Batch) (bool, int64, error) {
	if b.Empty() {
		return true, 0, nil
	}
	resp, err := s.cli.Txn(ctx).If(b.cmps...).Then(b.ops...).Commit()
	if err != nil {
		return false, 0, fmt.Errorf("commit batch of %d operations: %w", len(b.ops), err)
	}
	if resp.Succeeded {
		for _, z := range b.zones {
			s.zones.putOwned(zoneKey(z.Name), resp.Header.Revision, z)
		}
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// Done is a finished task waiting for its object's controller. Task is
// read without its Spec (decodeOutcome); nil when the record is gone.
type Done struct {
	Key  string
	Task *Task
}

// decodeOutcome decodes a task record without its spec: a controller
// taking a task's outcome never looks at it, and decoding it (base64 in
// the JSON, the whole zone for a DNS task) was most of the work.
func decodeOutcome(key, value []byte) (*Task, error) {
	var v struct {
		Task
		Spec skipJSON `json:"spec"` // shadows Task.Spec
	}
	if err := json.Unmarshal(value, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return &v.Task, nil
}

// skipJSON is a field that decoding skips without allocating.
type skipJSON struct{}

func (*skipJSON) UnmarshalJSON([]byte) error { return nil }

// ReadAccounts reads accounts and their done notices (with the finished
// tasks) in one transaction. Missing accounts are absent from the result.
func (s *Store) ReadAccounts(ctx context.Context, ids []string) (map[string]*Account, map[string]int64, map[string][]Done, error) {
	ops := make([]clientv3.Op, 0, 2*len(ids))
	for _, id := range ids {
		ops = append(ops, clientv3.OpGet(accountKey(id)), clientv3.OpGet(prefixDone+"account/"+id+"/", clientv3.WithPrefix()))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read accounts: %w", err)
	}
	accts, revs, done := map[string]*Account{}, map[string]int64{}, map[string][]Done{}
	var notices []*mvccpb.KeyValue
	for i, id := range ids {
		if kvs := resp.Responses[2*i].GetResponseRange().Kvs; len(kvs) > 0 {
			a, err := DecodeAccount(kvs[0].Value)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("decode account %s: %w", id, err)
			}
			accts[id], revs[id] = a, kvs[0].ModRevision
		}
		notices = append(notices, resp.Responses[2*i+1].GetResponseRange().Kvs...)
	}
	ds, err := s.readDone(ctx, notices)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, d := range ds {
		id := accountOfDoneKey(d.Key)
		done[id] = append(done[id], d)
	}
	return accts, revs, done, nil
}

// readDone reads the finished tasks the done notices name, in one
// transaction, and returns them in the notices' order.
func (s *Store) readDone(ctx context.Context, notices []*mvccpb.KeyValue) ([]Done, error) {
	if len(notices) == 0 {
		return nil, nil
	}
	ops := make([]clientv3.Op, 0, len(notices))
	for _, kv := range notices {
		ops = append(ops, clientv3.OpGet(taskKey(string(kv.Value))))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("read finished tasks: %w", err)
	}
	out := make([]Done, 0, len(notices))
	for i, r := range resp.Responses {
		var t *Task
		if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
			if t, err = decodeOutcome(kvs[0].Key, kvs[0].Value); err != nil {
				return nil, err
			}
		}
		out = append(out, Done{Key: string(notices[i].Key), Task: t})
	}
	return out, nil
}

// accountOfDoneKey extracts the account id from a done notice key
// (done/account/<id>/<task>).
func accountOfDoneKey(key string) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(key, prefixDone+"account/"), "/")
	return id
}

// FinishAccountDeletion removes a deleted account and everything that
// reserved resources for it — name claims, its node allocation and its
// owner's usage — in one transaction, retrying when allocation or usage moved.
func (s *Store) FinishAccountDeletion(ctx context.Context, id string, consume []string, audit AuditEvent) error {
	for {
		a, rev, err := s.GetAccount(ctx, id)
		if err != nil {
			return err
		}
		if err := s.releaseDomains(ctx, a); err != nil {
			return err
		}
		cmps := []clientv3.Cmp{unchanged(accountKey(id), rev)}
		ops := []clientv3.Op{
			clientv3.OpDelete(accountKey(id)),
			clientv3.OpDelete(userNameKey(a.Username)),
			auditPut(audit),
		}
		ops = append(ops, databaseCleanupOps(id)...)
		ops = append(ops, mailCleanupOps(id)...)
		// Only metered owners (resellers) keep a usage record.
		usage, urev, err := s.GetUsage(ctx, a.Owner)
		if err != nil {
			return err
		}
		if urev != 0 {
			usage.Accounts = max(0, usage.Accounts-1)
			usage.DiskMB = max(0, usage.DiskMB-a.DiskMB)
			cmps = append(cmps, unchanged(usageKey(a.Owner), urev))
			ops = append(ops, clientv3.OpPut(usageKey(a.Owner), mustJSON(usage)))
		}
		for _, k := range consume {
			ops = append(ops, clientv3.OpDelete(k))
		}
		if a.Node != "" {
			al, arev, err := getJSON[Alloc](ctx, s.cli, allocKey(a.Node))
			if err == ErrNotFound {
				al = &Alloc{}
			} else if err != nil {
				return err
			}
			al.Accounts = max(0, al.Accounts-1)
			al.DiskMB = max(0, al.DiskMB-a.DiskMB)
			cmps = append(cmps, unchanged(allocKey(a.Node), arev))
			ops = append(ops, clientv3.OpPut(allocKey(a.Node), mustJSON(al)))
		}
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("finish deletion of account %s: %w", id, err)
		}
		if resp.Succeeded {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}
