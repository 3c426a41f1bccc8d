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
	"github.com/npanel/npanel/validate"
)

// Plans: updatePlan and deletePlan. Like every change of what operators
// create, each validates its input, checks the caller's rights and lets the
// store write the change with its audit event in one transaction; a
// refusal writes nothing but its own audit (auditFailure).

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
// allows: domains, databases, mailboxes, a mailbox quota above its disk,
// a PHP version p does not offer. Disk is checked against the owner's and
// the node's limits by the store, which compares the database and mail
// sequence keys read before this check.
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
	mail, err := r.Store.GetMail(ctx, a.ID)
	if err != nil && !isNotFound(err) {
		return err
	}
	if mail != nil {
		n := 0
		for _, addr := range slices.Sorted(maps.Keys(mail.Mailboxes)) {
			m := mail.Mailboxes[addr]
			if m.Deleted {
				continue
			}
			n++
			if p.DiskMB > 0 && int64(m.QuotaMB) > p.DiskMB {
				return fmt.Errorf("%w: diskMB: mailbox %s of account %s has a quota of %d MB, above the %d MB of disk plan %s allows; lower it first",
					store.ErrQuotaExceeded, m.Address, a.Username, m.QuotaMB, p.DiskMB, p.Name)
			}
		}
		if n > p.Mailboxes {
			return fmt.Errorf("%w: mailboxes: account %s has %d mailboxes, plan %s allows %d",
				store.ErrQuotaExceeded, a.Username, n, p.Name, p.Mailboxes)
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
