package graph

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/validate"
)

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
