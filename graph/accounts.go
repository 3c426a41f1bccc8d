package graph

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/validate"
)

const codeQuotaExceeded = "QUOTA_EXCEEDED"

func accountModel(a *store.Account) *model.Account {
	m := &model.Account{
		ID:           a.ID,
		Username:     a.Username,
		Domain:       a.Domain,
		Status:       model.AccountStatus(a.Status),
		Reason:       strPtr(a.Reason),
		ReasonDetail: a.ReasonDetail,
		Suspended:    a.Suspended,
		CreatedAt:    a.CreatedAt,
		UpdatedAt:    a.UpdatedAt,
		NodeName:     a.Node,
		PlanName:     a.Plan,
		OwnerName:    a.Owner,
		Events:       make([]*model.AccountEvent, 0, len(a.Events)),

		Sites:             a.AllSites(),
		Generation:        a.Generation,
		AppliedGeneration: a.AppliedGeneration,
	}
	for _, e := range a.Events {
		m.Events = append(m.Events, eventModel(e))
	}
	return m
}

func eventModel(e store.AccountEvent) *model.AccountEvent {
	return &model.AccountEvent{At: e.At, Status: model.AccountStatus(e.Status), Reason: strPtr(e.Reason)}
}

func planModel(p *store.Plan) *model.Plan {
	m := &model.Plan{
		Name: p.Name, DiskMb: p.DiskMB, BandwidthMb: p.BandwidthMB, Domains: p.Domains,
		Mailboxes: p.Mailboxes, Databases: p.Databases, PhpVersions: p.PHPVersions, AllowExec: p.AllowExec, Owner: strPtr(p.Owner),
		Backup: planBackupModel(p.Backup),
	}
	if m.PhpVersions == nil {
		m.PhpVersions = []string{}
	}
	return m
}

// Who may do what with an account. Admins: everything. Resellers: the
// accounts they own. Users: read their one account.
func canSee(p auth.Principal, a *store.Account) bool {
	switch p.Role {
	case store.RoleAdmin:
		return true
	case store.RoleReseller:
		return a.Owner == p.Name
	case store.RoleUser:
		return a.ID == p.Account
	}
	return false
}

func canManage(p auth.Principal, a *store.Account) bool {
	return p.Role == store.RoleAdmin || (p.Role == store.RoleReseller && a.Owner == p.Name)
}

// planUsable reports whether owner may sell plan: admins any, a reseller its
// own plans and those the admin allowed it.
func planUsable(owner auth.Principal, r *store.Reseller, plan *store.Plan) bool {
	if owner.Role == store.RoleAdmin {
		return true
	}
	if plan.Owner == owner.Name {
		return true
	}
	if plan.Owner != "" || r == nil {
		return false
	}
	for _, p := range r.Plans {
		if p == plan.Name {
			return true
		}
	}
	return false
}

// visibleAccount loads an account the caller may see. An account it may not
// see is NOT_FOUND, not FORBIDDEN: existence is not leaked across tenants.
func (r *Resolver) visibleAccount(ctx context.Context, p auth.Principal, id string) (*store.Account, error) {
	a, _, err := r.Store.GetAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	if !canSee(p, a) {
		r.refusedRead(ctx, "account", id, CodeNotFound)
		return nil, errorf(CodeNotFound, "account "+quote(id)+" not found")
	}
	return a, nil
}

// resolveAccountRef accepts an account id or a username.
func (r *Resolver) resolveAccountRef(ctx context.Context, ref string) (string, error) {
	if _, _, err := r.Store.GetAccount(ctx, ref); err == nil {
		return ref, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	return r.Store.AccountIDByUsername(ctx, ref)
}

func quote(s string) string {
	if len(s) > 100 {
		s = s[:100] + "…"
	}
	return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
}

// loaders caches what one request looks up repeatedly (the plan, node and
// owner of every account on a page) so that a page costs one read per
// distinct plan, node and owner, not one per account. gqlgen resolves fields
// concurrently, so each key is fetched once by whichever resolver asks first
// while the others wait for it.
type loaders struct {
	mu    sync.Mutex
	nodes map[string]*cached[*model.Node]
	plans map[string]*cached[*model.Plan]
	users map[string]*cached[*model.User]
	svcs  map[string]*cached[*store.NodeServices]
}

type cached[T any] struct {
	once sync.Once
	v    T
	err  error
}

func load[T any](l *loaders, m map[string]*cached[T], key string, fetch func() (T, error)) (T, error) {
	l.mu.Lock()
	e, ok := m[key]
	if !ok {
		e = &cached[T]{}
		m[key] = e
	}
	l.mu.Unlock()
	e.once.Do(func() { e.v, e.err = fetch() })
	return e.v, e.err
}

type loadersKey struct{}

func withLoaders(ctx context.Context) context.Context {
	return context.WithValue(ctx, loadersKey{}, &loaders{
		nodes: map[string]*cached[*model.Node]{},
		plans: map[string]*cached[*model.Plan]{},
		users: map[string]*cached[*model.User]{},
		svcs:  map[string]*cached[*store.NodeServices]{},
	})
}

func loadersFrom(ctx context.Context) *loaders {
	if l, ok := ctx.Value(loadersKey{}).(*loaders); ok {
		return l
	}
	return withLoaders(ctx).Value(loadersKey{}).(*loaders) // outside a request: no sharing
}

// prime records a value the request already has, so that resolving it as a
// field later costs no read (createAccount returns the plan and owner it
// just looked up).
func prime[T any](l *loaders, m map[string]*cached[T], key string, v T) {
	_, _ = load(l, m, key, func() (T, error) { return v, nil })
}

func (r *Resolver) loadPlan(ctx context.Context, name string) (*model.Plan, error) {
	l := loadersFrom(ctx)
	return load(l, l.plans, name, func() (*model.Plan, error) {
		sp, err := r.Store.GetPlan(ctx, name)
		if err != nil {
			return nil, err
		}
		return planModel(sp), nil
	})
}

func (r *Resolver) loadServices(ctx context.Context, node string) (*store.NodeServices, error) {
	l := loadersFrom(ctx)
	return load(l, l.svcs, node, func() (*store.NodeServices, error) { return r.Store.CachedServices(ctx, node) })
}

func (r *Resolver) loadNode(ctx context.Context, name string) (*model.Node, error) {
	l := loadersFrom(ctx)
	return load(l, l.nodes, name, func() (*model.Node, error) {
		v, err := r.Store.GetNode(ctx, name)
		if err != nil {
			if isNotFound(err) {
				return nil, nil
			}
			return nil, err
		}
		return nodeModel(v), nil
	})
}

func (r *Resolver) loadUser(ctx context.Context, name string) (*model.User, error) {
	l := loadersFrom(ctx)
	return load(l, l.users, name, func() (*model.User, error) {
		su, err := r.Store.GetUser(ctx, name)
		switch {
		case err == nil:
			return &model.User{Name: su.Name, Role: roleModel(su.Role)}, nil
		case isNotFound(err):
			// The owner's login was removed; the account still names it.
			return &model.User{Name: name, Role: model.RoleReseller}, nil
		}
		return nil, err
	})
}

func requireRole(ctx context.Context, roles ...store.Role) (auth.Principal, error) {
	p, err := requireUser(ctx)
	if err != nil {
		return p, err
	}
	for _, r := range roles {
		if p.Role == r {
			return p, nil
		}
	}
	return p, errorf(CodeForbidden, "this operation is not allowed for the "+string(p.Role)+" role")
}

// createAccount checks the request against the caller's rights, the owner's
// plans and limits, and writes a PENDING account; the controller on the
// leader takes it from there.
func (r *Resolver) createAccount(ctx context.Context, in model.CreateAccountInput) (*store.Account, error) {
	p, err := requireRole(ctx, store.RoleAdmin, store.RoleReseller)
	if err != nil {
		return nil, err
	}
	if err := r.validUsername(in.Username); err != nil {
		return nil, err
	}
	domain, err := newSiteDomain(in.Domain)
	if err != nil {
		return nil, err
	}
	owner := p
	if in.Owner != nil && *in.Owner != p.Name {
		if p.Role != store.RoleAdmin {
			return nil, errorf(CodeForbidden, "resellers create accounts for themselves only")
		}
		u, err := r.Store.GetUser(ctx, *in.Owner)
		if err != nil {
			if isNotFound(err) {
				return nil, &validate.Error{Field: "owner", Reason: "no user " + quote(*in.Owner)}
			}
			return nil, err
		}
		if u.Role == store.RoleUser {
			return nil, &validate.Error{Field: "owner", Reason: "an account owner must be an admin or a reseller"}
		}
		owner = auth.Principal{Name: u.Name, Role: u.Role}
	}
	if in.Node != nil && p.Role != store.RoleAdmin {
		return nil, errorf(CodeForbidden, "only admins pin accounts to nodes")
	}
	plan, planRev, err := r.Store.CachedPlan(ctx, in.Plan)
	if err != nil {
		if isNotFound(err) {
			return nil, &validate.Error{Field: "plan", Reason: "no plan " + quote(in.Plan)}
		}
		return nil, err
	}
	var lim store.Limits
	var selector string
	var res *store.Reseller
	if owner.Role == store.RoleReseller {
		if res, err = r.Store.GetReseller(ctx, owner.Name); err != nil {
			return nil, err
		}
		lim = store.Limits{MaxAccounts: res.MaxAccounts, MaxDiskMB: res.MaxDiskMB}
		if res.MaxAccounts == 0 || res.MaxDiskMB == 0 {
			return nil, fmt.Errorf("%w: reseller %s has no account or disk allowance", store.ErrQuotaExceeded, owner.Name)
		}
		selector = res.NodeSelector
	}
	pinned := ""
	if in.Node != nil {
		if _, err := r.Store.GetNode(ctx, *in.Node); err != nil {
			return nil, err
		}
		pinned = *in.Node
	}
	// A deleted account's backups keep its name until they expire: its
	// repository and restoreAccount are found by it.
	if held, _, err := r.Store.ListBackups(ctx, in.Username, "", 1); err != nil {
		return nil, err
	} else if len(held) > 0 {
		if _, err := r.Store.AccountIDByUsername(ctx, in.Username); errors.Is(err, store.ErrNotFound) {
			return nil, errorf(CodeConflict, "username "+quote(in.Username)+" is held by the backups of a deleted account until the plan's retention removes them (restoreAccount brings it back; deleteBackup frees the name)")
		}
	}
	var a *store.Account
	for {
		if !planUsable(owner, res, plan) {
			return nil, errorf(CodeForbidden, "plan "+quote(plan.Name)+" is not available to "+owner.Name)
		}
		now := time.Now().UTC()
		a = &store.Account{
			ID:         store.NewAccountID(now),
			Username:   in.Username,
			Domain:     domain,
			Plan:       plan.Name,
			Owner:      owner.Name,
			DiskMB:     plan.DiskMB,
			Roles:      plan.NodeRoles(),
			PHPVersion: defaultPHP(plan),
			// The controller builds the node's spec from this generation
			// of the plan or a newer one, never a mirror that lags it.
			PlanGeneration: plan.Generation,
			Selector:       selector,
			PinnedNode:     pinned,
			Generation:     1,
			CreatedAt:      now,
		}
		a.Sites = []store.Site{{Domain: domain, Docroot: store.DefaultDocroot, PHPVersion: a.PHPVersion, Generation: 1}}
		a.SetStatus(store.AccountPending, "", now)
		ev := store.NewAuditEvent(p.Name, source(ctx), "createAccount", a.Username, "ok")
		ev.Detail = map[string]string{"id": a.ID, "domain": a.Domain, "owner": a.Owner, "plan": a.Plan}
		err := r.Store.CreateAccount(ctx, a, planRev, lim, ev)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrPlanChanged) {
			return nil, err
		}
		// The mirrored plan was behind, or the plan changed meanwhile:
		// build the account again from the plan as etcd has it now.
		if plan, planRev, err = r.Store.GetPlanRev(ctx, in.Plan); err != nil {
			if isNotFound(err) {
				return nil, &validate.Error{Field: "plan", Reason: "no plan " + quote(in.Plan)}
			}
			return nil, err
		}
	}
	l := loadersFrom(ctx)
	prime(l, l.plans, plan.Name, planModel(plan))
	prime(l, l.users, owner.Name, &model.User{Name: owner.Name, Role: roleModel(owner.Role)})
	return a, nil
}

// changeAccount applies a spec change for a caller allowed to manage the
// account, bumping its generation so the controller converges the node.
func (r *Resolver) changeAccount(ctx context.Context, action, id string, fn func(*store.Account) bool) (_ *model.Account, err error) {
	defer func() { r.auditFailure(ctx, "", action, id, err) }()
	p, err := requireRole(ctx, store.RoleAdmin, store.RoleReseller)
	if err != nil {
		return nil, err
	}
	a, err := r.visibleAccount(ctx, p, id)
	if err != nil {
		return nil, err
	}
	if !canManage(p, a) {
		return nil, errorf(CodeForbidden, "not allowed to change this account")
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), action, a.Username, "ok")
	ev.Detail = map[string]string{"id": a.ID}
	a, err = r.Store.UpdateAccount(ctx, id, func(a *store.Account) error {
		if a.Deleted {
			return fmt.Errorf("account %s is being deleted: %w", a.Username, store.ErrConflict)
		}
		if fn(a) {
			a.Generation++
			a.Attempts = 0 // a new spec earns a fresh set of retries
			a.UpdatedAt = time.Now().UTC()
		}
		return nil
	}, store.AuditOp(ev))
	if err != nil {
		return nil, err
	}
	return accountModel(a), nil
}

func (r *Resolver) setDraining(ctx context.Context, action, name string, draining bool) (_ *model.Node, err error) {
	defer func() { r.auditFailure(ctx, "", action, name, err) }()
	p, err := requireAdmin(ctx)
	if err != nil {
		return nil, err
	}
	_, err = r.Store.UpdateNode(ctx, name, func(n *store.Node) error {
		n.Draining = draining
		return nil
	}, store.NewAuditEvent(p.Name, source(ctx), action, name, "ok"))
	if err != nil {
		return nil, err
	}
	v, err := r.Store.GetNode(ctx, name)
	if err != nil {
		return nil, err
	}
	return nodeModel(v), nil
}

func (r *Resolver) resellerModel(ctx context.Context, res *store.Reseller) (*model.Reseller, error) {
	u, _, err := r.Store.GetUsage(ctx, res.Name)
	if err != nil {
		return nil, err
	}
	return &model.Reseller{
		Name: res.Name, MaxAccounts: res.MaxAccounts, MaxDiskMb: res.MaxDiskMB, Plans: res.Plans,
		NodeSelector: res.NodeSelector, Usage: &model.Usage{Accounts: u.Accounts, DiskMb: u.DiskMB},
	}, nil
}

func apiTokenModel(t *store.APIToken) *model.APIToken {
	return &model.APIToken{ID: t.ID, Name: t.Name, ExpiresAt: timePtr(t.ExpiresAt), CreatedAt: t.CreatedAt}
}

// defaultPHP is the PHP line an account's new sites get: the plan's first,
// or none (static sites) for a plan without PHP.
func defaultPHP(p *store.Plan) string {
	if len(p.PHPVersions) == 0 {
		return ""
	}
	return p.PHPVersions[0]
}
