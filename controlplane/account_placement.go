package controlplane

import (
	"context"
	"errors"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/scheduler"
)

// place runs the scheduler for accounts without a node against one snapshot
// of nodes and allocations, allocating into the snapshot as it goes so that
// the batch never over-commits a node, and adds every touched node's new
// allocation to the batch under a compare on the revision it was read at.
// A competing scheduler that placed on one of those nodes meanwhile makes
// the whole batch fail its compare and be planned again.
func (c *accountController) place(ctx context.Context, b *store.Batch, accts []*store.Account, revs map[string]int64) error {
	snap, allocRevs, err := c.snapshot(ctx)
	if err != nil {
		return err
	}
	// Placements go into snap before the commit: until it succeeds the
	// snapshot is not the store's.
	c.snap, c.building = nil, snap
	now := b.Now()
	for _, a := range accts {
		sel, err := scheduler.ParseSelector(a.Selector)
		if err != nil {
			a.SetStatus(store.AccountFailed, "invalid node selector: "+err.Error(), now)
			b.PutAccount(a, revs[a.ID])
			continue
		}
		need := scheduler.Resources{Accounts: 1, DiskMB: a.DiskMB}
		p, err := snap.Place(scheduler.Request{Account: a.Username, Roles: a.Roles, Need: need, Selector: sel, Node: a.PinnedNode})
		if err != nil {
			// Stays PENDING and is tried again soon: nodes come back,
			// capacity frees up.
			c.ctl.EnqueueAfter(a.ID, unplacedRetry)
			c.nodes, c.allocs = nil, nil // the retry looks at fresh status and allocations
			detail := ""
			if pe := (*scheduler.PlacementError)(nil); errors.As(err, &pe) && pe.Detail() != err.Error() {
				detail = pe.Detail()
			}
			if a.Reason != err.Error() || a.ReasonDetail != detail {
				a.SetStatus(store.AccountPending, err.Error(), now)
				a.ReasonDetail = detail
				b.PutAccount(a, revs[a.ID])
			}
			continue
		}
		if err := snap.Allocate(p.Node, need); err != nil {
			return err
		}
		a.Node = p.Node
		b.PutNewZone(&store.Zone{Name: a.Domain, Account: a.ID, Owner: a.Owner, Node: p.Node, Address: c.nodeAddress(p.Node),
			Defaults: true, Generation: 1, Status: store.ZonePending, CreatedAt: now, UpdatedAt: now})
		a.SetStatus(store.AccountScheduled, "", now)
		if err := c.enqueueEnsure(ctx, b, a); err != nil {
			return err
		}
		a.SetStatus(store.AccountProvisioning, "", now)
		b.PutAccount(a, revs[a.ID])
	}
	for _, node := range snap.Touched() {
		b.PutAlloc(node, allocOf(snap, node), allocRevs[node])
		// The node list may be up to nodesMaxAge old: an operator's
		// change to the node since (updateNode, drain) fails the batch,
		// which then places again from a fresh list.
		b.GuardNode(node, c.specRevs[node])
	}
	return nil
}

// allocOf is a node's allocation as the snapshot has it.
func allocOf(snap *scheduler.Snapshot, node string) store.Alloc {
	n, _ := snap.Node(node)
	return store.Alloc{Accounts: n.Allocated.Accounts, DiskMB: n.Allocated.DiskMB}
}

// nodeAddress is a node's declared address from the controller's node list.
func (c *accountController) nodeAddress(name string) string {
	return c.addresses[name]
}

// nodesMaxAge bounds how stale the controller's copy of the node list may
// be. Allocations need no bound: the commit compares them; node status,
// labels and capacity change rarely, and a placement on a node that just
// went down is caught by the next pass.
const nodesMaxAge = 3 * time.Second

// snapshot builds the scheduler's view: every node with its status, roles,
// labels, capacity and current allocation.
func (c *accountController) snapshot(ctx context.Context) (*scheduler.Snapshot, map[string]int64, error) {
	fresh := c.snap != nil
	if c.nodes == nil || time.Since(c.nodesAt) > nodesMaxAge {
		nodes, err := c.s.store.ListNodes(ctx)
		if err != nil {
			return nil, nil, err
		}
		c.nodes, c.nodesAt = nodes, time.Now()
		c.addresses = make(map[string]string, len(nodes))
		c.specRevs = make(map[string]int64, len(nodes))
		for _, n := range nodes {
			c.addresses[n.Name] = n.Address
			c.specRevs[n.Name] = n.SpecRev
		}
		fresh = false
	}
	if c.allocs == nil {
		allocs, revs, err := c.s.store.Allocs(ctx)
		if err != nil {
			return nil, nil, err
		}
		c.allocs, c.allocRevs = allocs, revs
		fresh = false
	}
	if fresh {
		c.snap.ResetTouched()
		return c.snap, c.allocRevs, nil
	}
	sn := make([]scheduler.Node, 0, len(c.nodes))
	for _, n := range c.nodes {
		al := c.allocs[n.Name]
		sn = append(sn, scheduler.Node{
			Name:      n.Name,
			Ready:     n.State.Status == store.NodeReady,
			Draining:  n.Draining,
			Roles:     n.Roles,
			Labels:    n.Labels,
			Capacity:  scheduler.Resources{Accounts: n.Capacity().Accounts, DiskMB: n.Capacity().DiskMB},
			Allocated: scheduler.Resources{Accounts: al.Accounts, DiskMB: al.DiskMB},
		})
	}
	return scheduler.NewSnapshot(sn, c.s.cfg.SchedulerStrategy), c.allocRevs, nil
}
