package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Plan is a hosting package: the quotas an account gets.
type Plan struct {
	Name        string   `json:"name"`
	DiskMB      int64    `json:"diskMB"`
	BandwidthMB int64    `json:"bandwidthMB"`
	Domains     int      `json:"domains"`
	Mailboxes   int      `json:"mailboxes"`
	Databases   int      `json:"databases"`
	PHPVersions []string `json:"phpVersions"`
	// AllowExec lets the accounts' PHP start processes; without it their
	// pools disable exec, system, proc_open and the like. The account
	// controller reads it when it builds a task.
	AllowExec bool `json:"allowExec,omitempty"`
	// Backup: the target, schedule and retention of the accounts'
	// backups; nil: no scheduled backups.
	Backup *BackupPolicy `json:"backup,omitempty"`
	// Generation counts changes (UpdatePlan). An account records the
	// generation its spec was built from (Account.PlanGeneration), so the
	// controller can tell a mirrored copy of the plan that is behind it.
	Generation int64 `json:"generation,omitempty"`
	// Owner is the reseller who created the plan, or "" for an admin plan
	// that any reseller may be allowed to use.
	Owner     string    `json:"owner,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

func planKey(name string) string { return prefixPlans + name }

// NodeRoles are the roles a node must have to host an account of the plan:
// web always, mail when the plan includes mailboxes (an account's mail
// lives on its node). They are the account's Roles, which placement,
// migration and restores ask of a node.
func (p *Plan) NodeRoles() []string {
	if p.Mailboxes > 0 {
		return []string{"web", "mail"}
	}
	return []string{"web"}
}

// RolesNeeded are the roles a node must have to take account a: its own,
// and its plan's as the plan stands now (an account written before its
// plan asked for a role has not been given it).
func (s *Store) RolesNeeded(ctx context.Context, a *Account) ([]string, error) {
	p, err := s.GetPlan(ctx, a.Plan)
	if errors.Is(err, ErrNotFound) {
		return slices.Clone(a.Roles), nil
	}
	if err != nil {
		return nil, err
	}
	return p.RolesWith(a.Roles), nil
}

// RolesWith is the plan's NodeRoles and then those of roles it lacks.
func (p *Plan) RolesWith(roles []string) []string {
	out := p.NodeRoles()
	for _, r := range roles {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// CreatePlan writes p if no plan of that name exists.
func (s *Store) CreatePlan(ctx context.Context, p Plan, audit AuditEvent) error {
	resp, err := s.cli.Txn(ctx).If(absent(planKey(p.Name))).
		Then(clientv3.OpPut(planKey(p.Name), mustJSON(p)), auditPut(audit)).Commit()
	if err != nil {
		return fmt.Errorf("create plan %q: %w", p.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("plan %q exists: %w", p.Name, ErrConflict)
	}
	return nil
}

// GetPlan returns one plan.
func (s *Store) GetPlan(ctx context.Context, name string) (*Plan, error) {
	p, _, err := s.GetPlanRev(ctx, name)
	return p, err
}

// GetPlanRev is GetPlan that also returns the plan's revision.
func (s *Store) GetPlanRev(ctx context.Context, name string) (*Plan, int64, error) {
	p, rev, err := getJSON[Plan](ctx, s.cli, planKey(name))
	if err == ErrNotFound {
		return nil, 0, fmt.Errorf("plan %q: %w", name, ErrNotFound)
	}
	return p, rev, err
}

// CachedPlan is GetPlanRev answered from the replica's mirror of plans
// when it holds the plan (see mirror). A write that depends on the plan
// compares the revision (CreateAccount). The result is shared: read it,
// never change it.
func (s *Store) CachedPlan(ctx context.Context, name string) (*Plan, int64, error) {
	if p, rev, ok := s.plans.get(name); ok {
		return p, rev, nil
	}
	return s.GetPlanRev(ctx, name)
}

// ListPlans returns every plan, by name.
func (s *Store) ListPlans(ctx context.Context) ([]Plan, error) {
	out, _, err := listJSON[Plan](ctx, s.cli, prefixPlans)
	return out, err
}
