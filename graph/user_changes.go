package graph

import (
	"context"
	"fmt"
	"strings"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/validate"
)

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
