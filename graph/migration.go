package graph

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/scheduler"
	"github.com/npanel/npanel/validate"
)

// Migrations: the API writes the record (store migrations.go) with its
// requests; the migration controller does the work. Who may do what:
// admins everything; resellers their accounts' migrations, onto nodes
// their pool's selector allows; users read their own account's.
const (
	maxMigrationPage  = 500
	maxDrainParallel  = 64
	maxScheduleAhead  = 366 * 24 * time.Hour
	migrationNotFound = "migration %s not found"
)

// migrationSubscriptions counts each user's live migrationEvents
// subscriptions: each holds an etcd watch of its own.
var migrationSubscriptions = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

func holdMigrationSubscription(user string) (release func(), err error) {
	migrationSubscriptions.Lock()
	defer migrationSubscriptions.Unlock()
	if migrationSubscriptions.n[user] >= MaxSubscriptionsPerUser {
		return nil, errorf(codeQuotaExceeded, "too many live migration subscriptions: at most "+strconv.Itoa(MaxSubscriptionsPerUser)+" per user; close some first")
	}
	migrationSubscriptions.n[user]++
	return func() {
		migrationSubscriptions.Lock()
		defer migrationSubscriptions.Unlock()
		if migrationSubscriptions.n[user]--; migrationSubscriptions.n[user] <= 0 {
			delete(migrationSubscriptions.n, user)
		}
	}, nil
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func migrationModel(m *store.Migration) *model.Migration {
	out := &model.Migration{
		ID: m.ID, Account: m.Username, AccountID: m.Account, FromNode: m.FromNode, ToNode: optString(m.ToNode),
		Status: model.MigrationStatus(m.Status), Steps: make([]*model.MigrationStep, 0, len(m.Steps)),
		Error: optString(m.Error), Schedule: optTime(m.Schedule), Drain: optString(m.Drain), FromBackup: m.Restore,
		CancelRequested: m.CancelRequested, RollbackRequested: m.RollbackRequested,
		FinalizeAfter: optTime(m.FinalizeAfter), FinalizedAt: optTime(m.FinalizedAt),
		CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt,
	}
	if m.CutOver || m.DowntimeMs > 0 {
		d := m.DowntimeMs
		out.DowntimeMs = &d
	}
	for _, s := range m.Steps {
		out.Steps = append(out.Steps, &model.MigrationStep{Name: s.Name, Status: model.MigrationStepStatus(s.Status),
			Node: optString(s.Node), StartedAt: optTime(s.StartedAt), FinishedAt: optTime(s.FinishedAt),
			Bytes: clampInt64(s.Bytes), Error: optString(s.Error)})
	}
	return out
}

// migrationAccess reports whether p may see migration m: through its
// account while it exists (canSee), else admins only.
func (r *Resolver) migrationAccess(ctx context.Context, p auth.Principal, m *store.Migration) (bool, error) {
	return r.backupAccess(ctx, p, m.Account, m.Owner)
}

// migrationOf reads a migration the caller may see; any other is
// NOT_FOUND, as one that does not exist.
func (r *Resolver) migrationOf(ctx context.Context, action, id string) (auth.Principal, *store.Migration, int64, error) {
	p, err := requireUser(ctx)
	if err != nil {
		return p, nil, 0, err
	}
	notFound := errorf(CodeNotFound, fmt.Sprintf(migrationNotFound, quote(id)))
	m, rev, err := r.Store.GetMigrationRev(ctx, id)
	if isNotFound(err) {
		return p, nil, 0, notFound
	}
	if err != nil {
		return p, nil, 0, err
	}
	ok, err := r.migrationAccess(ctx, p, m)
	if err != nil {
		return p, nil, 0, err
	}
	if !ok {
		r.refusedRead(ctx, action, id, CodeNotFound)
		return p, nil, 0, notFound
	}
	return p, m, rev, nil
}

// requireMigrator refuses users: they may read their account's
// migrations, not start or change them.
func requireMigrator(p auth.Principal) error {
	if p.Role != store.RoleAdmin && p.Role != store.RoleReseller {
		return errorf(CodeForbidden, "moving accounts between nodes requires the admin or reseller role")
	}
	return nil
}

// checkTargetNode validates a migration's target for p: an existing node
// other than the account's, READY and not draining, with the roles the
// account needs, that a reseller's pool selector allows.
func (r *Resolver) checkTargetNode(ctx context.Context, p auth.Principal, a *store.Account, node string) error {
	if err := pki.ValidNodeName(node); err != nil {
		return &validate.Error{Field: "toNode", Reason: err.Error()}
	}
	nv, err := r.Store.GetNode(ctx, node)
	if isNotFound(err) {
		return &validate.Error{Field: "toNode", Reason: "no node named " + quote(node)}
	}
	if err != nil {
		return err
	}
	if p.Role == store.RoleReseller {
		res, err := r.Store.GetReseller(ctx, p.Name)
		if err != nil && !isNotFound(err) {
			return err
		}
		if res != nil && res.NodeSelector != "" {
			sel, err := scheduler.ParseSelector(res.NodeSelector)
			if err != nil || !sel.Matches(nv.Labels) {
				// Told apart from a missing node only by the message:
				// the reseller knows its pool.
				return &validate.Error{Field: "toNode", Reason: "node " + quote(node) + " is outside your node pool"}
			}
		}
	}
	switch {
	case node == a.Node:
		return &validate.Error{Field: "toNode", Reason: "the account is on node " + quote(node) + " already"}
	case nv.Draining:
		return &validate.Error{Field: "toNode", Reason: "node " + quote(node) + " is draining"}
	case nv.State.Status != store.NodeReady:
		return &validate.Error{Field: "toNode", Reason: "node " + quote(node) + " is " + string(nv.State.Status)}
	}
	roles, err := r.Store.RolesNeeded(ctx, a)
	if err != nil {
		return err
	}
	for _, role := range roles {
		if !slices.Contains(nv.Roles, role) {
			return &validate.Error{Field: "toNode", Reason: "node " + quote(node) + " has no " + role + " role, which the plan of account " + a.Username + " needs"}
		}
	}
	return nil
}

// newMigration builds a migration of a for p.
func newMigration(p auth.Principal, a *store.Account, to string, schedule time.Time) *store.Migration {
	return &store.Migration{ID: store.NewMigrationID(a.Username, time.Now()), Account: a.ID, Username: a.Username, Owner: a.Owner,
		FromNode: a.Node, ToNode: to, Schedule: schedule, Requester: p.Name}
}

func migrationAudit(ctx context.Context, p auth.Principal, action string, m *store.Migration) store.AuditEvent {
	ev := store.NewAuditEvent(p.Name, source(ctx), action, m.Username+"/"+m.ID, "ok")
	ev.Detail = map[string]string{"from": m.FromNode}
	if m.ToNode != "" {
		ev.Detail["to"] = m.ToNode
	}
	if m.Drain != "" {
		ev.Detail["drain"] = m.Drain
	}
	return ev
}

// request sets one of a migration's requests, for p, when the migration
// is where the request makes sense (CONFLICT otherwise).
func (r *Resolver) requestMigration(ctx context.Context, action, id string, fn func(m *store.Migration) error) (*model.Migration, error) {
	p, m, _, err := r.migrationOf(ctx, action, id)
	if err != nil {
		return nil, err
	}
	if err := requireMigrator(p); err != nil {
		return nil, err
	}
	m, err = r.Store.UpdateMigration(ctx, id, func(m *store.Migration) ([]*store.ObjectTask, error) {
		return nil, fn(m)
	}, migrationAudit(ctx, p, action, m))
	if err != nil {
		return nil, err
	}
	return migrationModel(m), nil
}

func conflictf(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, store.ErrConflict)...)
}

// migrationMatches applies a filter (account already resolved to its id).
func migrationMatches(m *store.Migration, accountID string, f *model.MigrationFilter) bool {
	if f == nil {
		return true
	}
	switch {
	case accountID != "" && m.Account != accountID:
		return false
	case f.Node != nil && m.FromNode != *f.Node && m.ToNode != *f.Node:
		return false
	case f.Status != nil && string(*f.Status) != string(m.Status):
		return false
	case f.Drain != nil && m.Drain != *f.Drain:
		return false
	}
	return true
}

// drainMigrate opens a migration for every account on node that has none
// open, parallel of them running at once (the controller starts them).
func (r *Resolver) drainMigrate(ctx context.Context, p auth.Principal, node string, parallel int) error {
	after := ""
	for {
		page, _, more, err := r.Store.AccountPage(ctx, after, 500, 0)
		if err != nil {
			return err
		}
		for _, a := range page {
			after = a.ID
			if a.Node != node || a.Deleted {
				continue
			}
			m := newMigration(p, a, "", time.Time{})
			m.Drain, m.DrainParallel = node, parallel
			err := r.Store.CreateMigration(ctx, m, migrationAudit(ctx, p, "migrateAccount", m))
			if err != nil && !isConflict(err) {
				return err
			}
		}
		if !more {
			return nil
		}
	}
}

func isConflict(err error) bool { return errors.Is(err, store.ErrConflict) }

// followMigration streams migration m: as read at rev, then each write,
// until it is at rest, the watch is lost, the session ends or the caller
// may no longer see it.
func (r *Resolver) followMigration(ctx context.Context, p auth.Principal, m *store.Migration, rev int64) (<-chan *model.Migration, error) {
	release, err := holdMigrationSubscription(p.Name)
	if err != nil {
		return nil, err
	}
	watch, err := r.Store.WatchMigration(ctx, m.ID, rev)
	if err != nil {
		release()
		return nil, err
	}
	ch := make(chan *model.Migration, 16)
	go func() {
		defer close(ch)
		defer release()
		send := func(v *model.Migration) bool {
			select {
			case ch <- v:
				return true
			case <-ctx.Done():
				return false
			}
		}
		if !send(migrationModel(m)) || migrationAtRest(m) {
			return
		}
		stillVisible := func() bool {
			ok, err := r.migrationAccess(ctx, p, m)
			if err != nil || ok {
				return true // a transient read error is not a refusal
			}
			r.refusedRead(ctx, "migrationEvents", m.ID, CodeNotFound)
			transport.AddSubscriptionError(ctx, &gqlerror.Error{
				Message:    fmt.Sprintf(migrationNotFound, quote(m.ID)) + ": its account is no longer one you may see",
				Extensions: map[string]any{"code": CodeNotFound},
			})
			return false
		}
		backupHooks.Lock()
		every := backupHooks.recheck
		backupHooks.Unlock()
		r.followRecord(ctx, p, "migration", watch, every, stillVisible, func(ev store.Event) bool {
			if ev.Deleted {
				return false
			}
			cur, err := store.DecodeMigration(ev)
			if err != nil {
				r.Log.Error("decode migration", "migration", m.ID, "err", err)
				return false
			}
			m = cur
			return send(migrationModel(cur)) && !migrationAtRest(cur)
		})
	}()
	return ch, nil
}

// migrationAtRest: nothing more happens without a request (DONE waits
// for finalize or rollback, FAILED after cutover for rollback).
func migrationAtRest(m *store.Migration) bool {
	if m.CancelRequested && m.Status == store.MigrationPending {
		return false
	}
	switch m.Status {
	case store.MigrationDone:
		return !m.RollbackRequested && (m.FinalizeRequested == !m.FinalizedAt.IsZero())
	case store.MigrationFailed, store.MigrationCancelled, store.MigrationRolledBack:
		return true
	}
	return false
}

// drainNodeMigrate is drainNode with migrate: the node is drained, then
// every account on it gets a migration.
func (r *Resolver) drainNodeMigrate(ctx context.Context, name string, parallel *int) (_ *model.Node, err error) {
	defer func() { r.auditFailure(ctx, "", "drainNode", name, err) }()
	p, err := requireAdmin(ctx)
	if err != nil {
		return nil, err
	}
	n := 4
	if parallel != nil {
		n = *parallel
	}
	if n < 1 || n > maxDrainParallel {
		err = &validate.Error{Field: "parallel", Reason: fmt.Sprintf("must be 1 to %d", maxDrainParallel)}
		return nil, err
	}
	node, err := r.setDraining(ctx, "drainNode", name, true)
	if err != nil {
		return nil, err
	}
	if err = r.drainMigrate(ctx, p, name, n); err != nil {
		return nil, err
	}
	return node, nil
}
