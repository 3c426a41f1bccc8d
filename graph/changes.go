package graph

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/scheduler"
	"github.com/npanel/npanel/validate"
)

// This file holds the update and delete mutations of what operators
// create: plans, resellers, users, an account's plan and owner, nodes.
// Each validates its input, checks the caller's rights, and lets the store
// write the change with its audit event in one transaction; a refusal
// writes nothing but the refusal's own audit (auditFailure).

// checkQuota validates a plan quota field.
func checkQuota(field string, v int64) error {
	if v < 0 || v > 1<<40 {
		return &validate.Error{Field: field, Reason: "must be between 0 and 2^40"}
	}
	return nil
}

// applyPlanInput changes p as in asks; the caller checks the rights.
func applyPlanInput(p *store.Plan, in model.UpdatePlanInput) error {
	if in.DiskMb != nil {
		if err := checkQuota("diskMB", *in.DiskMb); err != nil {
			return err
		}
		p.DiskMB = *in.DiskMb
	}
	if in.BandwidthMb != nil {
		if err := checkQuota("bandwidthMB", *in.BandwidthMb); err != nil {
			return err
		}
		p.BandwidthMB = *in.BandwidthMb
	}
	for field, v := range map[string]*int{"domains": in.Domains, "mailboxes": in.Mailboxes, "databases": in.Databases} {
		if v != nil {
			if err := checkQuota(field, int64(*v)); err != nil {
				return err
			}
		}
	}
	if in.Domains != nil {
		if *in.Domains < 1 {
			return &validate.Error{Field: "domains", Reason: "must allow at least the primary domain (1)"}
		}
		p.Domains = *in.Domains
	}
	if in.Mailboxes != nil {
		p.Mailboxes = *in.Mailboxes
	}
	if in.Databases != nil {
		p.Databases = *in.Databases
	}
	if in.PhpVersions != nil {
		seen := map[string]bool{}
		for _, v := range in.PhpVersions {
			if err := validate.PHPVersion(v); err != nil {
				return err
			}
			if seen[v] {
				return &validate.Error{Field: "phpVersions", Reason: "PHP " + v + " given twice"}
			}
			seen[v] = true
		}
		p.PHPVersions = slices.Clone(in.PhpVersions)
	}
	if in.AllowExec != nil {
		p.AllowExec = *in.AllowExec
	}
	return nil
}

// planFits refuses plan p for account a when a already uses more than p
// allows: domains, databases, a PHP version p does not offer. Disk is
// checked against the owner's and the node's limits by the store.
// Mailboxes are not counted: no account has any yet (no mail API).
func (r *Resolver) planFits(ctx context.Context, a *store.Account, p *store.Plan) error {
	sites := a.AllSites()
	if len(sites) > p.Domains {
		return fmt.Errorf("%w: domains: account %s has %d domains, plan %s allows %d",
			store.ErrQuotaExceeded, a.Username, len(sites), p.Name, p.Domains)
	}
	for _, s := range sites {
		if s.PHPVersion != "" && !slices.Contains(p.PHPVersions, s.PHPVersion) {
			return fmt.Errorf("%w: phpVersions: site %s of account %s uses PHP %s, which plan %s does not offer (%s)",
				store.ErrQuotaExceeded, s.Domain, a.Username, s.PHPVersion, p.Name, listOrNone(p.PHPVersions))
		}
	}
	set, err := r.Store.GetDatabases(ctx, a.ID)
	if err != nil && !isNotFound(err) {
		return err
	}
	if set != nil {
		n := 0
		for _, d := range set.Databases {
			if !d.Deleted {
				n++
			}
		}
		if n > p.Databases {
			return fmt.Errorf("%w: databases: account %s has %d databases, plan %s allows %d",
				store.ErrQuotaExceeded, a.Username, n, p.Name, p.Databases)
		}
	}
	return nil
}

// planForChange checks that the caller may change a plan: an admin any, a reseller
// its own. Another reseller's plan is NOT_FOUND (existence is not leaked).
func (r *Resolver) planForChange(ctx context.Context, p auth.Principal, name string) error {
	plan, err := r.Store.GetPlan(ctx, name)
	if err != nil {
		return err
	}
	return mayChangePlan(p, plan)
}

func mayChangePlan(p auth.Principal, plan *store.Plan) error {
	if p.Role == store.RoleAdmin || plan.Owner == p.Name {
		return nil
	}
	if p.Role == store.RoleReseller && plan.Owner == "" {
		return errorf(CodeForbidden, "plan "+quote(plan.Name)+" is an admin plan; only an admin may change it")
	}
	return errorf(CodeNotFound, "plan "+quote(plan.Name)+" not found")
}

func (r *Resolver) updatePlan(ctx context.Context, name string, in model.UpdatePlanInput) (*model.Plan, error) {
	p, err := requireRole(ctx, store.RoleAdmin, store.RoleReseller)
	if err != nil {
		return nil, err
	}
	if in.AllowExec != nil && *in.AllowExec && p.Role != store.RoleAdmin {
		return nil, errorf(CodeForbidden, "only an admin may allow exec in a plan")
	}
	if err := r.planForChange(ctx, p, name); err != nil {
		return nil, err
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), "updatePlan", name, "ok")
	ev.Detail = map[string]string{}
	plan, n, err := r.Store.UpdatePlan(ctx, name, func(plan *store.Plan, accts []*store.Account) error {
		if err := mayChangePlan(p, plan); err != nil {
			return err
		}
		if err := applyPlanInput(plan, in); err != nil {
			return err
		}
		for _, a := range accts {
			if err := r.planFits(ctx, a, plan); err != nil {
				if p.Role != store.RoleAdmin && a.Owner != p.Name {
					// Another owner's account on this reseller's plan is
					// not the reseller's to know by name.
					return fmt.Errorf("%w: an account of another owner uses more than plan %s would allow", store.ErrQuotaExceeded, plan.Name)
				}
				return err
			}
		}
		ev.Detail["accounts"] = strconv.Itoa(len(accts))
		ev.Detail["allowExec"] = strconv.FormatBool(plan.AllowExec)
		ev.Detail["diskMB"] = strconv.FormatInt(plan.DiskMB, 10)
		ev.Detail["phpVersions"] = strings.Join(plan.PHPVersions, ",")
		return nil
	}, ev)
	if err != nil {
		return nil, err
	}
	r.Log.Info("plan updated", "plan", name, "accounts", n, "by", p.Name)
	return planModel(plan), nil
}

func (r *Resolver) deletePlan(ctx context.Context, name string) error {
	p, err := requireRole(ctx, store.RoleAdmin, store.RoleReseller)
	if err != nil {
		return err
	}
	return r.Store.DeletePlan(ctx, name, func(plan *store.Plan) error { return mayChangePlan(p, plan) },
		store.NewAuditEvent(p.Name, source(ctx), "deletePlan", name, "ok"))
}

func (r *Resolver) updateReseller(ctx context.Context, name string, in model.UpdateResellerInput) (*model.Reseller, error) {
	p, err := requireAdmin(ctx)
	if err != nil {
		return nil, err
	}
	if in.MaxAccounts != nil && *in.MaxAccounts < 0 {
		return nil, &validate.Error{Field: "maxAccounts", Reason: "must not be negative"}
	}
	if in.MaxDiskMb != nil && *in.MaxDiskMb < 0 {
		return nil, &validate.Error{Field: "maxDiskMB", Reason: "must not be negative"}
	}
	if in.NodeSelector != nil {
		if err := r.Cluster.ValidSelector(*in.NodeSelector); err != nil {
			return nil, &validate.Error{Field: "nodeSelector", Reason: err.Error()}
		}
	}
	for _, plan := range in.Plans {
		sp, err := r.Store.GetPlan(ctx, plan)
		if err != nil {
			if isNotFound(err) {
				return nil, &validate.Error{Field: "plans", Reason: "no plan " + quote(plan)}
			}
			return nil, err
		}
		if sp.Owner != "" {
			return nil, &validate.Error{Field: "plans", Reason: "plan " + quote(plan) + " belongs to reseller " + quote(sp.Owner)}
		}
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), "updateReseller", name, "ok")
	res, err := r.Store.UpdateReseller(ctx, name, func(res *store.Reseller, u store.Usage) error {
		if in.MaxAccounts != nil {
			if *in.MaxAccounts < u.Accounts {
				return fmt.Errorf("%w: maxAccounts: reseller %s owns %d accounts, more than %d", store.ErrQuotaExceeded, name, u.Accounts, *in.MaxAccounts)
			}
			res.MaxAccounts = *in.MaxAccounts
		}
		if in.MaxDiskMb != nil {
			if *in.MaxDiskMb < u.DiskMB {
				return fmt.Errorf("%w: maxDiskMB: reseller %s has %d MB allocated, more than %d", store.ErrQuotaExceeded, name, u.DiskMB, *in.MaxDiskMb)
			}
			res.MaxDiskMB = *in.MaxDiskMb
		}
		if in.Plans != nil {
			res.Plans = slices.Compact(slices.Sorted(slices.Values(in.Plans)))
		}
		if in.NodeSelector != nil {
			res.NodeSelector = *in.NodeSelector
		}
		ev.Detail = map[string]string{"maxAccounts": strconv.Itoa(res.MaxAccounts), "maxDiskMB": strconv.FormatInt(res.MaxDiskMB, 10),
			"plans": strings.Join(res.Plans, ","), "nodeSelector": res.NodeSelector}
		return nil
	}, ev)
	if err != nil {
		return nil, err
	}
	return r.resellerModel(ctx, res)
}

func (r *Resolver) deleteReseller(ctx context.Context, name string) error {
	p, err := requireAdmin(ctx)
	if err != nil {
		return err
	}
	return r.Store.DeleteReseller(ctx, name, store.NewAuditEvent(p.Name, source(ctx), "deleteReseller", name, "ok"))
}

func userModel(u *store.User) *model.User {
	return &model.User{Name: u.Name, Role: roleModel(u.Role), Account: strPtr(u.Account), Owner: strPtr(u.Owner)}
}

// mayManageUser says whether p may change or delete user u: an admin
// anyone, a reseller the USER logins of its own accounts. Users p may not
// manage are NOT_FOUND to a reseller (existence is not leaked).
func mayManageUser(p auth.Principal, u *store.User) error {
	switch {
	case p.Role == store.RoleAdmin:
		return nil
	case p.Role == store.RoleReseller && u.Role == store.RoleUser && u.Owner == p.Name:
		return nil
	case p.Role == store.RoleReseller:
		return errorf(CodeNotFound, "user "+quote(u.Name)+" not found")
	}
	return errorf(CodeForbidden, "this operation is not allowed for the "+string(p.Role)+" role")
}

func (r *Resolver) users(ctx context.Context, f *model.UserFilter) ([]*model.User, error) {
	p, err := requireRole(ctx, store.RoleAdmin, store.RoleReseller)
	if err != nil {
		return nil, err
	}
	var account, search string
	if f != nil && f.Search != nil {
		if err := validate.Text("search", *f.Search, 64); err != nil {
			return nil, err
		}
		search = strings.ToLower(*f.Search)
	}
	if f != nil && f.Account != nil {
		id, err := r.resolveAccountRef(ctx, *f.Account)
		if err != nil {
			if isNotFound(err) {
				return []*model.User{}, nil
			}
			return nil, err
		}
		account = id
	}
	users, err := r.Store.ListUsers(ctx)
	if err != nil {
		return nil, err
	}
	out := []*model.User{}
	for i := range users {
		u := &users[i]
		if p.Role != store.RoleAdmin && u.Owner != p.Name && u.Name != p.Name {
			continue
		}
		if f != nil && f.Role != nil && roleModel(u.Role) != *f.Role {
			continue
		}
		if search != "" && !strings.Contains(strings.ToLower(u.Name), search) {
			continue
		}
		if account != "" && u.Account != account {
			continue
		}
		out = append(out, userModel(u))
	}
	return out, nil
}

// getManagedUser reads a user p may manage.
func (r *Resolver) getManagedUser(ctx context.Context, p auth.Principal, name string) (*store.User, error) {
	u, err := r.Store.GetUser(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := mayManageUser(p, u); err != nil {
		return nil, err
	}
	return u, nil
}

func (r *Resolver) updateUser(ctx context.Context, name string, in model.UpdateUserInput) (*model.User, error) {
	p, err := requireRole(ctx, store.RoleAdmin, store.RoleReseller)
	if err != nil {
		return nil, err
	}
	u, err := r.getManagedUser(ctx, p, name)
	if err != nil {
		return nil, err
	}
	var target *store.Account
	if in.Account != nil {
		if u.Role != store.RoleUser {
			return nil, &validate.Error{Field: "account", Reason: "only a USER login is bound to an account"}
		}
		id, err := r.resolveAccountRef(ctx, *in.Account)
		if err != nil {
			if isNotFound(err) {
				return nil, &validate.Error{Field: "account", Reason: "no account " + quote(*in.Account)}
			}
			return nil, err
		}
		if target, err = r.visibleAccount(ctx, p, id); err != nil {
			return nil, err
		}
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), "updateUser", name, "ok")
	if target != nil {
		ev.Detail = map[string]string{"account": target.ID}
	}
	if target == nil { // nothing to change; audited all the same
		nu, err := r.Store.UpdateUser(ctx, name, false, func(cur *store.User) error { return mayManageUser(p, cur) }, ev)
		if err != nil {
			return nil, err
		}
		return userModel(nu), nil
	}
	nu, err := r.Store.BindUser(ctx, name, target.ID, func(cur *store.User, a *store.Account) error {
		if err := mayManageUser(p, cur); err != nil {
			return err
		}
		if cur.Role != store.RoleUser {
			return &validate.Error{Field: "account", Reason: "only a USER login is bound to an account"}
		}
		if p.Role == store.RoleReseller && a.Owner != p.Name {
			return fmt.Errorf("account %q: %w", a.ID, store.ErrNotFound) // given to another owner meanwhile
		}
		return nil
	}, ev)
	if err != nil {
		return nil, err
	}
	return userModel(nu), nil
}

func (r *Resolver) deleteUser(ctx context.Context, name string) error {
	p, err := requireRole(ctx, store.RoleAdmin, store.RoleReseller)
	if err != nil {
		return err
	}
	return r.Store.DeleteUser(ctx, name, func(u *store.User) error {
		if err := mayManageUser(p, u); err != nil {
			return err
		}
		if u.Name == p.Name {
			return errorf(CodeConflict, "you cannot delete your own login")
		}
		if u.Role == store.RoleReseller {
			return errorf(CodeConflict, "user "+quote(u.Name)+" is a reseller's login: delete the reseller (deleteReseller)")
		}
		return nil
	}, store.NewAuditEvent(p.Name, source(ctx), "deleteUser", name, "ok"))
}

func (r *Resolver) resetPassword(ctx context.Context, name, password string) (*model.User, error) {
	p, err := requireRole(ctx, store.RoleAdmin, store.RoleReseller)
	if err != nil {
		return nil, err
	}
	if name == p.Name {
		// changePassword asks for the current password under the login
		// throttle: a stolen token must not set a password of its own.
		return nil, errorf(CodeForbidden, "reset another user's password; change your own with changePassword (it asks for the current one)")
	}
	if err := validate.Password(password); err != nil {
		return nil, err
	}
	if _, err := r.getManagedUser(ctx, p, name); err != nil {
		return nil, err
	}
	hash, err := r.Auth.HashPassword(password)
	if err != nil {
		return nil, err
	}
	u, err := r.Store.UpdateUser(ctx, name, true, func(u *store.User) error {
		if err := mayManageUser(p, u); err != nil {
			return err
		}
		u.PasswordHash = hash
		return nil
	}, store.NewAuditEvent(p.Name, source(ctx), "resetPassword", name, "ok"))
	if err != nil {
		return nil, err
	}
	return userModel(u), nil
}

// managedAccount resolves an account reference (id or username) the
// caller may manage.
func (r *Resolver) managedAccount(ctx context.Context, p auth.Principal, ref string) (*store.Account, error) {
	id, err := r.resolveAccountRef(ctx, ref)
	if err != nil {
		if isNotFound(err) {
			return nil, errorf(CodeNotFound, "account "+quote(ref)+" not found")
		}
		return nil, err
	}
	a, err := r.visibleAccount(ctx, p, id)
	if err != nil {
		return nil, err
	}
	if !canManage(p, a) {
		return nil, errorf(CodeForbidden, "not allowed to change this account")
	}
	return a, nil
}

func (r *Resolver) changeAccountPlan(ctx context.Context, ref, planName string) (*model.Account, error) {
	p, err := requireRole(ctx, store.RoleAdmin, store.RoleReseller)
	if err != nil {
		return nil, err
	}
	a, err := r.managedAccount(ctx, p, ref)
	if err != nil {
		return nil, err
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), "changeAccountPlan", a.Username, "ok")
	ev.Detail = map[string]string{"id": a.ID, "from": a.Plan, "plan": planName}
	na, err := r.Store.ChangeAccountPlan(ctx, a.ID, planName, func(a *store.Account, plan *store.Plan) error {
		if !canManage(p, a) {
			return errorf(CodeForbidden, "not allowed to change this account")
		}
		// The plan must be one the account's owner may sell, and, for a
		// reseller caller, one it may use itself.
		owner := auth.Principal{Name: a.Owner, Role: store.RoleAdmin}
		res, err := r.Store.GetReseller(ctx, a.Owner)
		switch {
		case err == nil:
			owner.Role = store.RoleReseller
		case !isNotFound(err):
			return err
		}
		if p.Role == store.RoleReseller && plan.Owner != "" && plan.Owner != p.Name {
			// Another reseller's own plan: not there, as far as this one knows.
			return errorf(CodeNotFound, "plan "+quote(plan.Name)+" not found")
		}
		if !planUsable(owner, res, plan) || (p.Role == store.RoleReseller && !planUsable(p, res, plan)) {
			return errorf(CodeForbidden, "plan "+quote(plan.Name)+" is not available to "+a.Owner)
		}
		return r.planFits(ctx, a, plan)
	}, ev)
	if err != nil {
		return nil, err
	}
	return accountModel(na), nil
}

func (r *Resolver) changeAccountOwner(ctx context.Context, ref, owner string) (*model.Account, error) {
	p, err := requireAdmin(ctx)
	if err != nil {
		return nil, err
	}
	a, err := r.managedAccount(ctx, p, ref)
	if err != nil {
		return nil, err
	}
	u, err := r.Store.GetUser(ctx, owner)
	if err != nil {
		if isNotFound(err) {
			return nil, errorf(CodeNotFound, "user "+quote(owner)+" not found")
		}
		return nil, err
	}
	if u.Role == store.RoleUser {
		return nil, &validate.Error{Field: "owner", Reason: "an account owner must be an admin or a reseller"}
	}
	var res *store.Reseller
	selector := ""
	if u.Role == store.RoleReseller {
		if res, err = r.Store.GetReseller(ctx, owner); err != nil {
			return nil, err
		}
		selector = res.NodeSelector
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), "changeAccountOwner", a.Username, "ok")
	ev.Detail = map[string]string{"id": a.ID, "from": a.Owner, "owner": owner}
	na, err := r.Store.ChangeAccountOwner(ctx, a.ID, owner, selector, func(a *store.Account) error {
		plan, err := r.Store.GetPlan(ctx, a.Plan)
		if err != nil && !isNotFound(err) {
			return err
		}
		if plan != nil && !planUsable(auth.Principal{Name: u.Name, Role: u.Role}, res, plan) {
			return errorf(CodeConflict, "plan "+quote(plan.Name)+" of account "+a.Username+" is not available to "+owner+": allow it (updateReseller) or change the account's plan first")
		}
		if selector != "" && a.Node != "" {
			sel, err := scheduler.ParseSelector(selector)
			if err != nil {
				return err
			}
			n, err := r.Store.GetNode(ctx, a.Node)
			if err != nil {
				return err
			}
			if !sel.Matches(n.Labels) {
				return errorf(CodeConflict, "account "+a.Username+" is on node "+a.Node+", which the node selector of "+owner+" ("+selector+") does not allow")
			}
		}
		return nil
	}, ev)
	if err != nil {
		return nil, err
	}
	return accountModel(na), nil
}

// parseNodeRoles lower-cases and validates roles.
func parseNodeRoles(in []model.NodeRole) ([]string, error) {
	roles := make([]string, 0, len(in))
	for _, role := range in {
		roles = append(roles, strings.ToLower(string(role)))
	}
	slices.Sort(roles)
	roles = slices.Compact(roles)
	if err := validate.Roles(roles); err != nil {
		return nil, err
	}
	return roles, nil
}

func (r *Resolver) updateNode(ctx context.Context, name string, in model.UpdateNodeInput) (*model.Node, error) {
	p, err := requireAdmin(ctx)
	if err != nil {
		return nil, err
	}
	var roles []string
	if in.Roles != nil {
		if roles, err = parseNodeRoles(in.Roles); err != nil {
			return nil, err
		}
	}
	var labels map[string]string
	if in.Labels != nil {
		labels = map[string]string{}
		for _, l := range in.Labels {
			if _, dup := labels[l.Key]; dup {
				return nil, &validate.Error{Field: "labels", Reason: fmt.Sprintf("label %q given twice", l.Key)}
			}
			labels[l.Key] = l.Value
		}
		if err := validate.Labels(labels); err != nil {
			return nil, err
		}
	}
	if c := in.Capacity; c != nil {
		if c.MaxAccounts != nil && (*c.MaxAccounts < 0 || *c.MaxAccounts > 1_000_000) {
			return nil, &validate.Error{Field: "maxAccounts", Reason: "must be between 0 and 1000000"}
		}
		if c.DiskMb != nil && (*c.DiskMb < 0 || *c.DiskMb > 1<<40) {
			return nil, &validate.Error{Field: "diskMB", Reason: "must be between 0 and 2^40"}
		}
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), "updateNode", name, "ok")
	ev.Detail = map[string]string{}
	_, err = r.Store.UpdateNodeChecked(ctx, name, func(n *store.Node, alloc store.Alloc) error {
		if roles != nil {
			for _, gone := range n.Roles {
				if slices.Contains(roles, gone) {
					continue
				}
				if err := r.roleNeeded(ctx, name, gone); err != nil {
					return err
				}
			}
			n.Roles = roles
			ev.Detail["roles"] = strings.Join(roles, ",")
		}
		if labels != nil {
			n.Labels = labels
			ev.Detail["labels"] = formatLabels(labels)
		}
		if c := in.Capacity; c != nil {
			if c.MaxAccounts != nil {
				if eff := *c.MaxAccounts; eff != 0 && eff < alloc.Accounts {
					return fmt.Errorf("%w: maxAccounts: node %s holds %d accounts, more than %d", store.ErrQuotaExceeded, name, alloc.Accounts, eff)
				}
				n.MaxAccounts = *c.MaxAccounts
				ev.Detail["maxAccounts"] = strconv.Itoa(n.MaxAccounts)
			}
			if c.DiskMb != nil {
				if eff := *c.DiskMb; eff != 0 && eff < alloc.DiskMB {
					return fmt.Errorf("%w: diskMB: node %s has %d MB allocated, more than %d", store.ErrQuotaExceeded, name, alloc.DiskMB, eff)
				}
				n.DiskMB = *c.DiskMb
				ev.Detail["diskMB"] = strconv.FormatInt(n.DiskMB, 10)
			}
		}
		return nil
	}, ev)
	if err != nil {
		return nil, err
	}
	v, err := r.Store.GetNode(ctx, name)
	if err != nil {
		return nil, err
	}
	return nodeModel(v), nil
}

func formatLabels(labels map[string]string) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	return b.String()
}

// roleNeeded refuses taking role off node while something there needs
// it: web the accounts placed there, dns the zones it serves as primary,
// db the databases of its accounts.
func (r *Resolver) roleNeeded(ctx context.Context, node, role string) error {
	var accts []*store.Account
	if role == "web" || role == "db" {
		var err error
		if accts, err = r.Store.AccountsWhere(ctx, func(a *store.Account) bool { return a.Node == node }); err != nil {
			return err
		}
	}
	switch role {
	case "web":
		var need []string
		for _, a := range accts {
			if slices.Contains(a.Roles, "web") {
				need = append(need, a.Username)
			}
		}
		if len(need) > 0 {
			return errorf(CodeConflict, fmt.Sprintf("role web of node %s is needed by %d account(s) placed there (%s)", node, len(need), firstFew(need)))
		}
	case "db":
		var need []string
		for _, a := range accts {
			set, err := r.Store.GetDatabases(ctx, a.ID)
			if err != nil && !isNotFound(err) {
				return err
			}
			if set != nil {
				for n, d := range set.Databases {
					if !d.Deleted {
						need = append(need, n)
					}
				}
			}
		}
		if len(need) > 0 {
			slices.Sort(need)
			return errorf(CodeConflict, fmt.Sprintf("role db of node %s is needed by %d database(s) there (%s)", node, len(need), firstFew(need)))
		}
	case "dns":
		states, _, err := r.Store.ListZoneStates(ctx)
		if err != nil {
			return err
		}
		var need []string
		for _, z := range states {
			if z.Node == node && !z.Deleted {
				need = append(need, z.Name)
			}
		}
		if len(need) > 0 {
			return errorf(CodeConflict, fmt.Sprintf("role dns of node %s is needed by %d zone(s) it serves (%s)", node, len(need), firstFew(need)))
		}
	}
	return nil
}

func firstFew(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:3], ", ") + fmt.Sprintf(", and %d more", len(names)-3)
}
