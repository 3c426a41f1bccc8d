package store

import (
	"context"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// rebuildFromPlan gives a the plan's quotas and node roles and a new
// generation, so the account controller sends its node a spec built from
// p. The roles steer the account's next placement (a migration, a
// restore); it is not moved for them.
func rebuildFromPlan(a *Account, p *Plan, now time.Time) {
	a.Plan = p.Name
	a.DiskMB = p.DiskMB
	a.Roles = p.NodeRoles()
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
		mseqs, err := s.mailSeqRevs(ctx, accts)
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
			// change counted the mailboxes and their quotas against the
			// disk: a mailbox created meanwhile makes it count again.
			if p.Mailboxes < old.Mailboxes || p.DiskMB < old.DiskMB {
				t.guardRev(mailSeqKey(a.ID), mseqs[i])
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
