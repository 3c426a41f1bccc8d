package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

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
