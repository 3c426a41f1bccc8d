package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Reseller owns accounts within limits, on the nodes its selector allows.
type Reseller struct {
	Name        string `json:"name"`
	MaxAccounts int    `json:"maxAccounts"`
	MaxDiskMB   int64  `json:"maxDiskMB"`
	// Plans the reseller may sell besides its own.
	Plans []string `json:"plans"`
	// NodeSelector is a label selector (scheduler syntax) limiting where the
	// reseller's accounts may be placed; empty allows every node.
	NodeSelector string    `json:"nodeSelector,omitempty"`
	CreatedAt    time.Time `json:"createdAt"`
}

// Usage is what an owner's accounts consume, kept in one key per owner and
// changed in the same transaction as the accounts themselves, so that a quota
// is checked against exact numbers and two concurrent creations cannot both
// take the last slot.
type Usage struct {
	Accounts int   `json:"accounts"`
	DiskMB   int64 `json:"diskMB"`
}

func resellerKey(name string) string { return prefixResellers + name }
func usageKey(owner string) string   { return prefixUsage + owner }

// CreateReseller writes the reseller and its login user in one transaction.
func (s *Store) CreateReseller(ctx context.Context, r Reseller, u User, audit AuditEvent) error {
	u.Generation = firstGeneration(u.Generation)
	resp, err := s.cli.Txn(ctx).If(absent(resellerKey(r.Name)), absent(userKey(u.Name))).Then(
		clientv3.OpPut(resellerKey(r.Name), mustJSON(r)),
		clientv3.OpPut(userKey(u.Name), mustJSON(u)),
		auditPut(audit),
	).Commit()
	if err != nil {
		return fmt.Errorf("create reseller %q: %w", r.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("a reseller or user named %q exists: %w", r.Name, ErrConflict)
	}
	return nil
}

// GetReseller returns one reseller.
func (s *Store) GetReseller(ctx context.Context, name string) (*Reseller, error) {
	r, _, err := getJSON[Reseller](ctx, s.cli, resellerKey(name))
	if err == ErrNotFound {
		return nil, fmt.Errorf("reseller %q: %w", name, ErrNotFound)
	}
	return r, err
}

// ListResellers returns every reseller, by name.
func (s *Store) ListResellers(ctx context.Context) ([]Reseller, error) {
	out, _, err := listJSON[Reseller](ctx, s.cli, prefixResellers)
	return out, err
}

// GetUsage returns an owner's usage and its revision (0 if none yet).
func (s *Store) GetUsage(ctx context.Context, owner string) (Usage, int64, error) {
	u, rev, err := getJSON[Usage](ctx, s.cli, usageKey(owner))
	if err == ErrNotFound {
		return Usage{}, 0, nil
	}
	if err != nil {
		return Usage{}, 0, err
	}
	return *u, rev, nil
}
