package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The machinery of the changes an operator makes to objects others depend
// on (*_changes.go): a plan its accounts are built from, a reseller that
// owns accounts, an account's plan and owner. Each reads what depends on the
// object, lets the caller check the change against it, and writes the
// object, the dependants it rebuilds, the counters it moves (usage,
// allocations) and the audit event in one transaction guarded by every
// revision it read: a refusal, or a crash at any point, writes nothing.

// maxChangeRetries bounds how often a change is computed again after its
// transaction lost a race.
const maxChangeRetries = 20

// accountsCreatedBefore compares that no account was created after rev: a
// creation puts its username under names/user/, so a newer create revision
// there means an account the scan at rev did not see.
func accountsCreatedBefore(rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(prefixNames+"user/"), "<", rev+1).WithPrefix()
}

// scanAccounts reads every account at one revision and returns those match
// selects, with their revisions, and the revision of the read. It costs a
// pass over all accounts: for operator changes, not for request paths.
func (s *Store) scanAccounts(ctx context.Context, match func(*Account) bool) ([]*Account, []int64, int64, error) {
	var out []*Account
	var revs []int64
	var at int64
	from, end := prefixAccounts, clientv3.GetPrefixRangeEnd(prefixAccounts)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(500)}
		if at > 0 {
			opts = append(opts, clientv3.WithRev(at))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("list accounts: %w", err)
		}
		if at == 0 {
			at = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			a, err := DecodeAccount(kv.Value)
			if err != nil {
				return nil, nil, 0, fmt.Errorf("decode %s: %w", kv.Key, err)
			}
			if match(a) {
				out = append(out, a)
				revs = append(revs, kv.ModRevision)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, revs, at, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// AccountsWhere returns the accounts match selects (not those being
// deleted), read at one revision.
func (s *Store) AccountsWhere(ctx context.Context, match func(*Account) bool) ([]*Account, error) {
	out, _, _, err := s.scanAccounts(ctx, func(a *Account) bool { return !a.Deleted && match(a) })
	return out, err
}

// dbSeqRevs reads the revisions of the accounts' database sequence keys
// (0: none), which every change to an account's databases rewrites. A
// change that checked the accounts' databases after this read compares
// them, so a database created meanwhile makes it check again.
func (s *Store) dbSeqRevs(ctx context.Context, accts []*Account) ([]int64, error) {
	return s.seqRevs(ctx, databaseSeqKey, accts)
}

// mailSeqRevs is dbSeqRevs for the accounts' mail sequence keys, which
// every change to an account's mailboxes rewrites.
func (s *Store) mailSeqRevs(ctx context.Context, accts []*Account) ([]int64, error) {
	return s.seqRevs(ctx, mailSeqKey, accts)
}

func (s *Store) seqRevs(ctx context.Context, seqKey func(string) string, accts []*Account) ([]int64, error) {
	revs := make([]int64, len(accts))
	for len(accts) > 0 {
		chunk := accts[:min(len(accts), 100)]
		ops := make([]clientv3.Op, len(chunk))
		for i, a := range chunk {
			ops[i] = clientv3.OpGet(seqKey(a.ID), clientv3.WithKeysOnly())
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read sequences: %w", err)
		}
		done := len(revs) - len(accts)
		for i, r := range resp.Responses {
			if kvs := r.GetResponseRange().Kvs; len(kvs) > 0 {
				revs[done+i] = kvs[0].ModRevision
			}
		}
		accts = accts[len(chunk):]
	}
	return revs, nil
}

// txnBuilder gathers the compares and operations of one change.
type txnBuilder struct {
	cmps []clientv3.Cmp
	ops  []clientv3.Op
}

func (t *txnBuilder) cmp(c ...clientv3.Cmp) { t.cmps = append(t.cmps, c...) }
func (t *txnBuilder) op(o ...clientv3.Op)   { t.ops = append(t.ops, o...) }

// guardRev compares key at rev, or absent when rev is 0.
func (t *txnBuilder) guardRev(key string, rev int64) {
	if rev == 0 {
		t.cmp(absent(key))
	} else {
		t.cmp(unchanged(key, rev))
	}
}

// SetTxnLimits tells the store how large a transaction the etcd cluster
// takes (--max-txn-ops, --max-request-bytes), for the operator changes
// that rebuild many accounts at once; MaxTxnOps and 1.5 MiB (etcd's
// defaults) unless set.
func (s *Store) SetTxnLimits(ops, bytes int) {
	s.txnOps, s.txnBytes = ops, bytes
}

func (s *Store) commitChange(ctx context.Context, what string, t *txnBuilder) (bool, error) {
	maxOps, maxBytes := MaxTxnOps, 3<<19
	if s.txnOps > 0 {
		maxOps, maxBytes = s.txnOps, s.txnBytes
	}
	size := 0
	for _, op := range t.ops {
		size += len(op.KeyBytes()) + len(op.ValueBytes())
	}
	// A change is one transaction or nothing: a plan whose accounts do not
	// fit in one is refused rather than applied to some of them.
	// etcd bounds a transaction's compares and its operations each.
	if n := max(len(t.cmps), len(t.ops)); n > maxOps || size > maxBytes*3/4 {
		return false, fmt.Errorf("%s needs %d operations (%d bytes), more than fit in one transaction (%d): %w", what, n, size, maxOps, ErrConflict)
	}
	resp, err := s.cli.Txn(ctx).If(t.cmps...).Then(t.ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("%s: %w", what, err)
	}
	return resp.Succeeded, nil
}

// counterChange is how a change moves owners' usage (accounts, disk) and
// nodes' disk allocations. Owners without a reseller record (admins) are
// not metered.
type counterChange struct {
	owners map[string]Usage // deltas
	nodes  map[string]int64 // disk deltas
}

func newCounterChange() *counterChange {
	return &counterChange{owners: map[string]Usage{}, nodes: map[string]int64{}}
}

func (c *counterChange) owner(name string, accounts int, diskMB int64) {
	u := c.owners[name]
	u.Accounts += accounts
	u.DiskMB += diskMB
	c.owners[name] = u
}

func (c *counterChange) node(name string, diskMB int64) {
	if name != "" && diskMB != 0 {
		c.nodes[name] += diskMB
	}
}

// apply reads the counters, checks the limits of what grows and adds the
// guarded writes to t.
func (s *Store) applyCounters(ctx context.Context, c *counterChange, t *txnBuilder) error {
	for _, owner := range slices.Sorted(maps.Keys(c.owners)) {
		d := c.owners[owner]
		if d.Accounts == 0 && d.DiskMB == 0 {
			continue
		}
		res, rrev, err := getJSON[Reseller](ctx, s.cli, resellerKey(owner))
		if err == ErrNotFound {
			continue // an admin: unmetered
		}
		if err != nil {
			return err
		}
		u, urev, err := s.GetUsage(ctx, owner)
		if err != nil {
			return err
		}
		next := Usage{Accounts: u.Accounts + d.Accounts, DiskMB: u.DiskMB + d.DiskMB}
		if d.Accounts > 0 && next.Accounts > res.MaxAccounts {
			return fmt.Errorf("%w: maxAccounts: reseller %s may have at most %d accounts (%d in use)", ErrQuotaExceeded, owner, res.MaxAccounts, u.Accounts)
		}
		if d.DiskMB > 0 && next.DiskMB > res.MaxDiskMB {
			return fmt.Errorf("%w: maxDiskMB: reseller %s may allocate at most %d MB of disk (%d MB in use, the change needs %d MB more)",
				ErrQuotaExceeded, owner, res.MaxDiskMB, u.DiskMB, d.DiskMB)
		}
		next.Accounts, next.DiskMB = max(next.Accounts, 0), max(next.DiskMB, 0)
		t.cmp(unchanged(resellerKey(owner), rrev))
		t.guardRev(usageKey(owner), urev)
		t.op(clientv3.OpPut(usageKey(owner), mustJSON(next)))
	}
	for _, node := range slices.Sorted(maps.Keys(c.nodes)) {
		d := c.nodes[node]
		al, arev, err := getJSON[Alloc](ctx, s.cli, allocKey(node))
		if err == ErrNotFound {
			al, arev = &Alloc{}, 0
		} else if err != nil {
			return err
		}
		next := Alloc{Accounts: al.Accounts, DiskMB: max(al.DiskMB+d, 0)}
		if d > 0 {
			// The node's record is compared: an updateNode lowering its
			// capacity meanwhile makes this change check again.
			rec, err := s.cli.Get(ctx, nodeKey(node))
			if err != nil {
				return fmt.Errorf("read node %s: %w", node, err)
			}
			if len(rec.Kvs) > 0 {
				t.cmp(unchanged(nodeKey(node), rec.Kvs[0].ModRevision))
			}
			v, err := s.GetNode(ctx, node)
			if err != nil && !isNotFoundErr(err) {
				return err
			}
			if v != nil {
				if capMB := v.Capacity().DiskMB; capMB > 0 && next.DiskMB > capMB {
					return fmt.Errorf("%w: node %s has %d MB of disk to allocate (%d MB allocated, the change needs %d MB more)",
						ErrQuotaExceeded, node, capMB, al.DiskMB, d)
				}
			}
		}
		t.guardRev(allocKey(node), arev)
		t.op(clientv3.OpPut(allocKey(node), mustJSON(next)))
	}
	return nil
}

func isNotFoundErr(err error) bool { return err != nil && errors.Is(err, ErrNotFound) }
