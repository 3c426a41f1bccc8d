package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

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
		mseqs, err := s.mailSeqRevs(ctx, []*Account{a})
		if err != nil {
			return nil, err
		}
		// check decides on the owner's plan list: an updateReseller
		// changing it meanwhile makes the change decide again.
		owner, err := s.cli.Get(ctx, resellerKey(a.Owner))
		if err != nil {
			return nil, fmt.Errorf("read reseller %s: %w", a.Owner, err)
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
		t.guardRev(mailSeqKey(id), mseqs[0])
		if len(owner.Kvs) > 0 {
			t.cmp(unchanged(resellerKey(a.Owner), owner.Kvs[0].ModRevision))
		} else {
			t.cmp(absent(resellerKey(a.Owner)))
		}
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
