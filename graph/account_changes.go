package graph

import (
	"context"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/scheduler"
	"github.com/npanel/npanel/validate"
)

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
	r.followOwner(ctx, na)
	return accountModel(na), nil
}
