package graph

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/validate"
)

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
// it: web and mail the accounts placed there whose plans ask for them
// (store.Plan.NodeRoles), dns the zones it serves as primary, db the
// databases of its accounts, mail also the mail domains and mailboxes of
// its accounts.
func (r *Resolver) roleNeeded(ctx context.Context, node, role string) error {
	var accts []*store.Account
	if role == "web" || role == "db" || role == mailRole {
		var err error
		if accts, err = r.Store.AccountsWhere(ctx, func(a *store.Account) bool { return a.Node == node }); err != nil {
			return err
		}
	}
	switch role {
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
	case mailRole:
		var need []string
		for _, a := range accts {
			set, err := r.Store.GetMail(ctx, a.ID)
			if err != nil && !isNotFound(err) {
				return err
			}
			if set == nil {
				continue
			}
			for n, d := range set.Domains {
				if !d.Deleted {
					need = append(need, n)
				}
			}
			for n, m := range set.Mailboxes {
				if !m.Deleted {
					need = append(need, n)
				}
			}
		}
		if len(need) > 0 {
			slices.Sort(need)
			return errorf(CodeConflict, fmt.Sprintf("role mail of node %s is needed by %d mail domain(s) and mailbox(es) there (%s)", node, len(need), firstFew(need)))
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
	// The accounts' plans ask for the role (store.Plan.NodeRoles).
	var need []string
	for _, a := range accts {
		if slices.Contains(a.Roles, role) {
			need = append(need, a.Username)
		}
	}
	if len(need) > 0 {
		return errorf(CodeConflict, fmt.Sprintf("role %s of node %s is needed by %d account(s) placed there (%s)", role, node, len(need), firstFew(need)))
	}
	return nil
}

func firstFew(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:3], ", ") + fmt.Sprintf(", and %d more", len(names)-3)
}
