package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// This file holds the changes an operator makes to objects that others
// depend on: a plan its accounts are built from, a reseller that owns
// accounts, an account's plan and owner. Each reads what depends on the
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
	revs := make([]int64, len(accts))
	for len(accts) > 0 {
		chunk := accts[:min(len(accts), 100)]
		ops := make([]clientv3.Op, len(chunk))
		for i, a := range chunk {
			ops[i] = clientv3.OpGet(databaseSeqKey(a.ID), clientv3.WithKeysOnly())
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read database sequences: %w", err)
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

// rebuildFromPlan gives a the plan's quotas and a new generation, so the
// account controller sends its node a spec built from p.
func rebuildFromPlan(a *Account, p *Plan, now time.Time) {
	a.Plan = p.Name
	a.DiskMB = p.DiskMB
	a.PlanGeneration = p.Generation
	if !slices.Contains(p.PHPVersions, a.PHPVersion) {
		a.PHPVersion = ""
		if len(p.PHPVersions) > 0 {
			a.PHPVersion = p.PHPVersions[0]
		}
	}
	a.Generation++
	a.Attempts = 0
	a.UpdatedAt = now
}

// UpdatePlan applies change to plan name and rebuilds every account on it
// from the new plan in the same transaction: each gets a new generation
// (its node is sent the new spec: PHP limits, disk quota), its owner's
// usage and its node's allocation follow a new diskMB, within the
// reseller's and the node's limits (ErrQuotaExceeded). change sees the
// accounts on the plan and refuses what they already use beyond it. It
// returns the plan and how many accounts were rebuilt.
func (s *Store) UpdatePlan(ctx context.Context, name string, change func(p *Plan, accounts []*Account) error, audit AuditEvent) (*Plan, int, error) {
	for attempt := 0; attempt < maxChangeRetries; attempt++ {
		p, prev, err := s.GetPlanRev(ctx, name)
		if err != nil {
			return nil, 0, err
		}
		accts, revs, at, err := s.scanAccounts(ctx, func(a *Account) bool { return a.Plan == name && !a.Deleted })
		if err != nil {
			return nil, 0, err
		}
		seqs, err := s.dbSeqRevs(ctx, accts)
		if err != nil {
			return nil, 0, err
		}
		old := *p
		if err := change(p, accts); err != nil {
			return nil, 0, err
		}
		p.Generation = old.Generation + 1
		t := &txnBuilder{}
		t.cmp(unchanged(planKey(name), prev), accountsCreatedBefore(at))
		t.op(clientv3.OpPut(planKey(name), mustJSON(p)), auditPut(audit))
		counters := newCounterChange()
		now := time.Now().UTC()
		// Only what the nodes apply makes the accounts' specs change:
		// bandwidth and the domain, mailbox and database counts are
		// enforced by the API, so a change of those alone rebuilds none.
		// Every account is compared all the same: change checked what
		// each uses (an add-on domain added meanwhile must be seen).
		rebuild := p.DiskMB != old.DiskMB || p.AllowExec != old.AllowExec || !slices.Equal(p.PHPVersions, old.PHPVersions)
		for i, a := range accts {
			t.cmp(unchanged(accountKey(a.ID), revs[i]))
			if p.Databases < old.Databases {
				t.guardRev(databaseSeqKey(a.ID), seqs[i])
			}
			if !rebuild {
				continue
			}
			d := p.DiskMB - a.DiskMB
			counters.owner(a.Owner, 0, d)
			counters.node(a.Node, d)
			rebuildFromPlan(a, p, now)
			t.op(clientv3.OpPut(accountKey(a.ID), mustJSON(a)))
		}
		if err := s.applyCounters(ctx, counters, t); err != nil {
			return nil, 0, err
		}
		ok, err := s.commitChange(ctx, fmt.Sprintf("update plan %q (used by %d accounts)", name, len(accts)), t)
		if err != nil {
			return nil, 0, err
		}
		if ok {
			if !rebuild {
				return p, 0, nil
			}
			return p, len(accts), nil
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
	}
	return nil, 0, fmt.Errorf("update plan %q: kept conflicting with other changes: %w", name, ErrConflict)
}

// DeletePlan deletes a plan no account uses (ErrConflict with the count
// otherwise) and takes it off every reseller's list, in one transaction.
// check sees the plan before anything is read further (rights).
func (s *Store) DeletePlan(ctx context.Context, name string, check func(*Plan) error, audit AuditEvent) error {
	for attempt := 0; attempt < maxChangeRetries; attempt++ {
		p, prev, err := s.GetPlanRev(ctx, name)
		if err != nil {
			return err
		}
		if err := check(p); err != nil {
			return err
		}
		accts, _, at, err := s.scanAccounts(ctx, func(a *Account) bool { return a.Plan == name })
		if err != nil {
			return err
		}
		if n := len(accts); n > 0 {
			return fmt.Errorf("plan %q is used by %d account(s); move them to another plan first: %w", name, n, ErrConflict)
		}
		t := &txnBuilder{}
		t.cmp(unchanged(planKey(name), prev), accountsCreatedBefore(at))
		t.op(clientv3.OpDelete(planKey(name)), auditPut(audit))
		resp, err := s.cli.Get(ctx, prefixResellers, clientv3.WithPrefix())
		if err != nil {
			return fmt.Errorf("list resellers: %w", err)
		}
		for _, kv := range resp.Kvs {
			r, err := decodeJSON[Reseller](kv.Key, kv.Value)
			if err != nil {
				return err
			}
			if i := slices.Index(r.Plans, name); i >= 0 {
				r.Plans = slices.Delete(r.Plans, i, i+1)
				t.cmp(unchanged(string(kv.Key), kv.ModRevision))
				t.op(clientv3.OpPut(string(kv.Key), mustJSON(r)))
			}
		}
		ok, err := s.commitChange(ctx, fmt.Sprintf("delete plan %q", name), t)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("delete plan %q: kept conflicting with other changes: %w", name, ErrConflict)
}

// UpdateReseller applies change to a reseller, which sees its usage to
// refuse limits below it; the usage is compared in the same transaction,
// so an account created meanwhile makes the change check again.
func (s *Store) UpdateReseller(ctx context.Context, name string, change func(*Reseller, Usage) error, audit AuditEvent) (*Reseller, error) {
	for attempt := 0; attempt < maxChangeRetries; attempt++ {
		r, rrev, err := getJSON[Reseller](ctx, s.cli, resellerKey(name))
		if err == ErrNotFound {
			return nil, fmt.Errorf("reseller %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		u, urev, err := s.GetUsage(ctx, name)
		if err != nil {
			return nil, err
		}
		oldSelector := r.NodeSelector
		if err := change(r, u); err != nil {
			return nil, err
		}
		t := &txnBuilder{}
		t.cmp(unchanged(resellerKey(name), rrev))
		t.guardRev(usageKey(name), urev)
		t.op(clientv3.OpPut(resellerKey(name), mustJSON(r)), auditPut(audit))
		if r.NodeSelector != oldSelector {
			// Accounts still waiting for a node are placed by the new
			// selector; placed ones stay where they are.
			waiting, revs, _, err := s.scanAccounts(ctx, func(a *Account) bool { return a.Owner == name && a.Node == "" && !a.Deleted })
			if err != nil {
				return nil, err
			}
			for i, a := range waiting {
				a.Selector = r.NodeSelector
				t.cmp(unchanged(accountKey(a.ID), revs[i]))
				t.op(clientv3.OpPut(accountKey(a.ID), mustJSON(a)))
			}
		}
		ok, err := s.commitChange(ctx, fmt.Sprintf("update reseller %q", name), t)
		if err != nil {
			return nil, err
		}
		if ok {
			return r, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("update reseller %q: kept conflicting with other changes: %w", name, ErrConflict)
}

// DeleteReseller deletes a reseller that owns no account (ErrConflict with
// the count otherwise), with its login, its usage record, its API tokens,
// the plans it created and the users it managed, in one transaction.
func (s *Store) DeleteReseller(ctx context.Context, name string, audit AuditEvent) error {
	for attempt := 0; attempt < maxChangeRetries; attempt++ {
		_, rrev, err := getJSON[Reseller](ctx, s.cli, resellerKey(name))
		if err == ErrNotFound {
			return fmt.Errorf("reseller %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return err
		}
		_, urev, err := s.GetUsage(ctx, name)
		if err != nil {
			return err
		}
		plans, err := s.cli.Get(ctx, prefixPlans, clientv3.WithPrefix())
		if err != nil {
			return fmt.Errorf("list plans: %w", err)
		}
		own := map[string]bool{}
		for _, kv := range plans.Kvs {
			p, err := decodeJSON[Plan](kv.Key, kv.Value)
			if err != nil {
				return err
			}
			if p.Owner == name {
				own[p.Name] = true
			}
		}
		// The usage counter is exact for metered owners; the scan also
		// finds accounts given to the reseller by changeAccountOwner or
		// created while it had no limits, and accounts of other owners
		// (an admin's) on the plans it created, which go with it.
		var owned, onPlans int
		_, _, at, err := s.scanAccounts(ctx, func(a *Account) bool {
			switch {
			case a.Owner == name:
				owned++
			case own[a.Plan]:
				onPlans++
			}
			return false
		})
		if err != nil {
			return err
		}
		if owned > 0 {
			return fmt.Errorf("reseller %q owns %d account(s); delete them or give them to another owner first: %w", name, owned, ErrConflict)
		}
		if onPlans > 0 {
			return fmt.Errorf("%d account(s) of other owners use plans of reseller %q; move them to other plans first: %w", onPlans, name, ErrConflict)
		}
		t := &txnBuilder{}
		t.cmp(unchanged(resellerKey(name), rrev), accountsCreatedBefore(at))
		t.guardRev(usageKey(name), urev)
		t.op(clientv3.OpDelete(resellerKey(name)), clientv3.OpDelete(usageKey(name)), auditPut(audit))
		users, err := s.cli.Get(ctx, prefixUsers, clientv3.WithPrefix())
		if err != nil {
			return fmt.Errorf("list users: %w", err)
		}
		for _, kv := range users.Kvs {
			u, err := decodeJSON[User](kv.Key, kv.Value)
			if err != nil {
				return err
			}
			if u.Name == name || u.Owner == name {
				t.cmp(unchanged(string(kv.Key), kv.ModRevision))
				t.op(clientv3.OpDelete(string(kv.Key)))
			}
		}
		for _, kv := range plans.Kvs {
			if own[lastSegment(string(kv.Key))] {
				t.cmp(unchanged(string(kv.Key), kv.ModRevision))
				t.op(clientv3.OpDelete(string(kv.Key)))
			}
		}
		if err := s.deleteAPITokens(ctx, name, t); err != nil {
			return err
		}
		ok, err := s.commitChange(ctx, fmt.Sprintf("delete reseller %q", name), t)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("delete reseller %q: kept conflicting with other changes: %w", name, ErrConflict)
}

// deleteAPITokens adds the deletion of user's API tokens to t.
func (s *Store) deleteAPITokens(ctx context.Context, user string, t *txnBuilder) error {
	tokens, err := s.ListAPITokens(ctx, user)
	if err != nil {
		return err
	}
	for _, tok := range tokens {
		t.op(clientv3.OpDelete(apiTokenKey(tok.ID)))
	}
	return nil
}

// DeleteUser deletes a login and its API tokens after check approves it.
func (s *Store) DeleteUser(ctx context.Context, name string, check func(*User) error, audit AuditEvent) error {
	for attempt := 0; attempt < maxChangeRetries; attempt++ {
		u, rev, err := getJSON[User](ctx, s.cli, userKey(name))
		if err == ErrNotFound {
			return fmt.Errorf("user %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if err := check(u); err != nil {
			return err
		}
		t := &txnBuilder{}
		t.cmp(unchanged(userKey(name), rev))
		t.op(clientv3.OpDelete(userKey(name)), auditPut(audit))
		if err := s.deleteAPITokens(ctx, name, t); err != nil {
			return err
		}
		ok, err := s.commitChange(ctx, fmt.Sprintf("delete user %q", name), t)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("delete user %q: kept conflicting with other changes: %w", name, ErrConflict)
}

// ChangeAccountPlan moves an account to plan planName: check (rights,
// what the account uses against the plan) sees the account and the plan;
// the owner's usage and the node's allocation follow the new diskMB within
// their limits; the account gets a new generation, so its node is sent a
// spec built from the new plan. The plan's revision is compared, so a
// plan changed or deleted meanwhile makes the move check again.
func (s *Store) ChangeAccountPlan(ctx context.Context, id, planName string, check func(*Account, *Plan) error, audit AuditEvent) (*Account, error) {
	for attempt := 0; attempt < maxChangeRetries; attempt++ {
		a, arev, err := s.GetAccount(ctx, id)
		if err != nil {
			return nil, err
		}
		p, prev, err := s.GetPlanRev(ctx, planName)
		if err != nil {
			return nil, err
		}
		seqs, err := s.dbSeqRevs(ctx, []*Account{a})
		if err != nil {
			return nil, err
		}
		if err := check(a, p); err != nil {
			return nil, err
		}
		if a.Deleted {
			return nil, fmt.Errorf("account %s is being deleted: %w", a.Username, ErrConflict)
		}
		t := &txnBuilder{}
		t.cmp(unchanged(accountKey(id), arev), unchanged(planKey(planName), prev))
		t.guardRev(databaseSeqKey(id), seqs[0])
		counters := newCounterChange()
		d := p.DiskMB - a.DiskMB
		counters.owner(a.Owner, 0, d)
		counters.node(a.Node, d)
		if err := s.applyCounters(ctx, counters, t); err != nil {
			return nil, err
		}
		rebuildFromPlan(a, p, time.Now().UTC())
		// The plan is written back unchanged: its new revision makes an
		// updatePlan or deletePlan that scanned the plan's accounts before
		// this one joined them fail its compare and scan again.
		t.op(clientv3.OpPut(accountKey(id), mustJSON(a)), clientv3.OpPut(planKey(planName), mustJSON(p)), auditPut(audit))
		ok, err := s.commitChange(ctx, fmt.Sprintf("change the plan of %s", a.Username), t)
		if err != nil {
			return nil, err
		}
		if ok {
			return a, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("change the plan of %s: kept conflicting with other changes: %w", id, ErrConflict)
}

// ChangeAccountOwner gives an account to owner: check sees the account;
// the account's usage moves from the old owner to the new one within the
// new one's limits, and the users that manage the account and the zones of
// its domains follow it, in one transaction. selector is the new owner's
// node selector, kept for later placements.
func (s *Store) ChangeAccountOwner(ctx context.Context, id, owner, selector string, check func(*Account) error, audit AuditEvent) (*Account, error) {
	for attempt := 0; attempt < maxChangeRetries; attempt++ {
		a, arev, err := s.GetAccount(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := check(a); err != nil {
			return nil, err
		}
		if a.Deleted {
			return nil, fmt.Errorf("account %s is being deleted: %w", a.Username, ErrConflict)
		}
		old := a.Owner
		if old == owner {
			return a, nil
		}
		t := &txnBuilder{}
		t.cmp(unchanged(accountKey(id), arev))
		// The new owner is read here, in the loop, and compared: one
		// deleted meanwhile must not receive the account (a reseller
		// without a record would count as an unmetered admin), and its
		// selector is the one it has now.
		ou, ourev, err := getJSON[User](ctx, s.cli, userKey(owner))
		if err == ErrNotFound {
			return nil, fmt.Errorf("owner %q: %w", owner, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		t.cmp(unchanged(userKey(owner), ourev))
		if ou.Role == RoleReseller {
			res, rrev, err := getJSON[Reseller](ctx, s.cli, resellerKey(owner))
			if err == ErrNotFound {
				return nil, fmt.Errorf("reseller %q: %w", owner, ErrNotFound)
			}
			if err != nil {
				return nil, err
			}
			t.cmp(unchanged(resellerKey(owner), rrev))
			selector = res.NodeSelector
		}
		counters := newCounterChange()
		counters.owner(old, -1, -a.DiskMB)
		counters.owner(owner, 1, a.DiskMB)
		if err := s.applyCounters(ctx, counters, t); err != nil {
			return nil, err
		}
		users, err := s.cli.Get(ctx, prefixUsers, clientv3.WithPrefix())
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		for _, kv := range users.Kvs {
			u, err := decodeJSON[User](kv.Key, kv.Value)
			if err != nil {
				return nil, err
			}
			if u.Role == RoleUser && u.Account == id {
				u.Owner = owner
				t.cmp(unchanged(string(kv.Key), kv.ModRevision))
				t.op(clientv3.OpPut(string(kv.Key), mustJSON(u)))
			}
		}
		for _, site := range a.AllSites() {
			z, zrev, err := s.GetZone(ctx, site.Domain)
			if isNotFoundErr(err) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if z.Account != id || z.Owner == owner {
				continue
			}
			nz := *z
			nz.Owner = owner
			t.cmp(unchanged(zoneKey(z.Name), zrev))
			t.op(clientv3.OpPut(zoneKey(z.Name), mustJSON(&nz)))
		}
		a.Owner = owner
		a.Selector = selector
		a.UpdatedAt = time.Now().UTC()
		t.op(clientv3.OpPut(accountKey(id), mustJSON(a)), auditPut(audit))
		ok, err := s.commitChange(ctx, fmt.Sprintf("change the owner of %s", a.Username), t)
		if err != nil {
			return nil, err
		}
		if ok {
			return a, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("change the owner of %s: kept conflicting with other changes: %w", id, ErrConflict)
}
