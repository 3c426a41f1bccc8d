package controlplane

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/scheduler"
)

// Account controller tuning.
const (
	// defaultAccountBatch keeps a batch's transactions under etcd's
	// default 128-operation limit (--max-txn-ops): an account costs two
	// reads, a compare, a put, two writes for its task and the consumed
	// notice. The embedded etcd allows more (embeddedAccountBatch).
	defaultAccountBatch  = 20
	embeddedAccountBatch = 250
	// maxTaskAttempts before an account is marked FAILED.
	maxTaskAttempts = 3
	// unplacedRetry is how often accounts that fit nowhere are retried.
	unplacedRetry = time.Second
	// accountGather is how long a pass that found fewer accounts than a
	// batch waits for more. A pass costs a read and a commit (an etcd
	// proposal) however few accounts it carries; at hundreds of accounts a
	// second, passes of one or two were most of the controller's work.
	accountGather = 5 * time.Millisecond
	// unsettledResync is how often accounts still on their way to a
	// steady state are queued again whether or not an event said so.
	unsettledResync = 30 * time.Second
)

// accountController turns the difference between an account's spec and its
// observed state into placements and node tasks. It runs on the leader only
// and is level-triggered: it looks at the whole record each time, so a
// missed or repeated event costs work, never correctness.
type accountController struct {
	s *Server

	mu      sync.Mutex
	pending map[string]bool // ids waiting for a pass
	order   []string
	signal  chan struct{}
	// unplaced accounts fit on no node right now; they are retried on a
	// timer rather than by rescanning every account.
	unplaced map[string]bool

	// nodes is the node list the last snapshot used (see nodesMaxAge); only
	// the controller's own goroutine touches it.
	nodes   []store.NodeView
	nodesAt time.Time
	// addresses is each listed node's address, by name.
	addresses map[string]string

	// allocs are the nodes' allocations with the revisions they were
	// written at, as read or as this controller last committed them; nil
	// until read. Every placement compares the revision, so a stale entry
	// (an account deleted meanwhile, a competing scheduler) costs one
	// failed commit and a fresh read, never an over-commit. Only the
	// controller's goroutine touches them.
	allocs    map[string]store.Alloc
	allocRevs map[string]int64
	// snap is the scheduler's view built from nodes and allocs, kept
	// across batches while both stand (building it for a thousand nodes
	// on every batch was a tenth of the controller's CPU); building is
	// the one being placed into by the batch under way, kept only once
	// its commit succeeds, when its touched nodes' allocations are the
	// store's.
	snap, building *scheduler.Snapshot
}

func newAccountController(s *Server) *accountController {
	return &accountController{s: s, pending: map[string]bool{}, unplaced: map[string]bool{}, signal: make(chan struct{}, 1)}
}

func (c *accountController) enqueue(ids ...string) {
	c.mu.Lock()
	for _, id := range ids {
		if !c.pending[id] {
			c.pending[id] = true
			c.order = append(c.order, id)
		}
	}
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

func (c *accountController) take(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	n = min(n, len(c.order))
	ids := append([]string(nil), c.order[:n]...)
	c.order = c.order[n:]
	for _, id := range ids {
		delete(c.pending, id)
	}
	return ids
}

// needsWork decides from a record alone whether the controller has
// something to do for it; the watch uses it to skip the steady majority.
func needsWork(a store.AccountHead) bool {
	if a.TaskID != "" {
		return false // waiting for the node; the done notice brings it back
	}
	switch {
	case a.Status == store.AccountFailed && a.Attempts >= maxTaskAttempts:
		return false // until a spec change resets the attempts
	case a.Deleted:
		return true
	case a.Node == "":
		return true
	case a.Generation != a.AppliedGeneration:
		return true
	}
	return a.Status != steadyStatus(a.Suspended)
}

func steadyStatus(suspended bool) store.AccountStatus {
	if suspended {
		return store.AccountSuspended
	}
	return store.AccountActive
}

func (c *accountController) run(ctx context.Context) {
	rev, err := c.initialScan(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.s.log.Error("account controller: initial scan", "err", err)
		}
		return
	}
	go c.watch(ctx, rev)
	retry := time.NewTicker(unplacedRetry)
	defer retry.Stop()
	resync := time.NewTicker(unsettledResync)
	defer resync.Stop()
	gather := time.NewTimer(accountGather)
	defer gather.Stop()
	for {
		// The timers are looked at on every pass, not only when the queue
		// runs dry: under a steady stream of new accounts it may never.
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
			c.retryUnplaced()
		case <-resync.C:
			c.resyncUnsettled()
		default:
		}
		batch := c.s.cfg.AccountBatch
		ids := c.take(batch)
		if len(ids) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-c.signal:
			case <-retry.C:
				c.retryUnplaced()
			case <-resync.C:
				c.resyncUnsettled()
			}
			continue
		}
		if len(ids) < batch {
			gather.Reset(accountGather)
			select {
			case <-ctx.Done():
				return
			case <-gather.C:
			}
			ids = append(ids, c.take(batch-len(ids))...)
		}
		if err := c.process(ctx, ids); err != nil {
			if ctx.Err() != nil {
				return
			}
			c.s.log.Warn("account controller: batch failed; will retry", "accounts", len(ids), "err", err)
			c.enqueue(ids...)
			select {
			case <-ctx.Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

// retryUnplaced queues again the accounts that fit on no node last time.
func (c *accountController) retryUnplaced() {
	c.mu.Lock()
	ids := slices.Collect(maps.Keys(c.unplaced))
	clear(c.unplaced)
	c.mu.Unlock()
	c.enqueue(ids...)
}

// resyncUnsettled queues every account the replica's index shows on its way
// to a steady state. The controller is driven by its watch, and an account
// whose event it misses would otherwise stay PENDING for good. That happened
// once in a 100,000-account load test: a multi-second disk stall cost the
// replica its leadership, and seven accounts created just after the new
// controller started were never queued, while the index, which follows etcd
// on a connection of its own, had them. An account queued needlessly costs
// one read.
func (c *accountController) resyncUnsettled() {
	if ids := c.s.accounts.unsettled(); len(ids) > 0 {
		c.enqueue(ids...)
	}
}

// initialScan queues every account with work and every pending done notice,
// and returns the revision the watch continues from.
func (c *accountController) initialScan(ctx context.Context) (int64, error) {
	var after string
	var rev int64
	for {
		page, r, more, err := c.s.store.AccountPage(ctx, after, 1000, rev)
		if err != nil {
			return 0, err
		}
		rev = r
		for _, a := range page {
			if needsWork(a.Head()) {
				c.enqueue(a.ID)
			}
		}
		if !more || len(page) == 0 {
			break
		}
		after = page[len(page)-1].ID
	}
	resp, err := c.s.cli.Get(ctx, store.PrefixDone+"account/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithRev(rev))
	if err != nil {
		return 0, err
	}
	for _, kv := range resp.Kvs {
		c.enqueue(store.AccountOfDoneKey(string(kv.Key)))
	}
	return rev, nil
}

func (c *accountController) watch(ctx context.Context, rev int64) {
	wctx := clientv3.WithRequireLeader(ctx)
	accts := c.s.cli.Watch(wctx, store.PrefixAccounts, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete())
	done := c.s.cli.Watch(wctx, store.PrefixDone+"account/", clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithFilterDelete())
	for {
		select {
		case <-ctx.Done():
			return
		case resp, ok := <-accts:
			if !ok || resp.Err() != nil {
				c.restartWatch(ctx)
				return
			}
			for _, ev := range resp.Events {
				if a, err := store.DecodeAccountHead(ev.Kv.Value); err == nil && needsWork(a) {
					c.enqueue(a.ID)
				}
			}
		case resp, ok := <-done:
			if !ok || resp.Err() != nil {
				c.restartWatch(ctx)
				return
			}
			for _, ev := range resp.Events {
				c.enqueue(store.AccountOfDoneKey(string(ev.Kv.Key)))
			}
		}
	}
}

// restartWatch recovers from a broken watch (compaction, etcd leader loss)
// with a full rescan, which catches up with whatever the watch missed.
func (c *accountController) restartWatch(ctx context.Context) {
	for ctx.Err() == nil {
		rev, err := c.initialScan(ctx)
		if err == nil {
			go c.watch(ctx, rev)
			return
		}
		c.s.log.Warn("account controller: rescan after watch loss", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// process handles one batch of accounts: consumes finished tasks, places
// what is unplaced, and enqueues tasks for specs the node has not applied —
// all in one transaction guarded by the revisions it read. On a conflict
// the batch is simply computed again from fresh reads.
func (c *accountController) process(ctx context.Context, ids []string) error {
	for attempt := 0; ; attempt++ {
		ok, err := c.processOnce(ctx, ids)
		if err != nil || ok {
			return err
		}
		if attempt == 5 {
			return errors.New("batch kept conflicting")
		}
	}
}

func (c *accountController) processOnce(ctx context.Context, ids []string) (bool, error) {
	accts, revs, done, err := c.s.store.ReadAccounts(ctx, ids)
	if err != nil {
		return false, err
	}
	c.building = nil
	b := store.NewBatch()
	now := b.Now()
	var unplaced []*store.Account
	var deletions []string
	consumed := map[string][]string{}
	for _, id := range ids {
		a, ok := accts[id]
		if !ok {
			// Deleted since it was queued; drop stale notices.
			for _, d := range done[id] {
				b.Consume(d.Key)
			}
			continue
		}
		changed := false
		finishedDelete := false
		for _, d := range done[id] {
			consumed[id] = append(consumed[id], d.Key)
			t := d.Task
			if t == nil || t.ID != a.TaskID {
				continue // a result for a task the account no longer waits on
			}
			a.TaskID = ""
			changed = true
			if t.Status == store.TaskSucceeded {
				a.Attempts = 0
				a.AppliedGeneration = t.Generation
				finishedDelete = t.Action == "deleteAccount"
				continue
			}
			a.Attempts++
			if a.Attempts >= maxTaskAttempts {
				a.SetStatus(store.AccountFailed, "node "+a.Node+": "+t.Error, now)
			}
		}
		if finishedDelete || (a.Deleted && a.Node == "") {
			deletions = append(deletions, id)
			continue
		}
		for _, k := range consumed[id] {
			b.Consume(k)
		}
		switch {
		case a.TaskID != "":
		case a.Status == store.AccountFailed && a.Attempts >= maxTaskAttempts:
			// Stays FAILED until an operator changes the spec.
		case a.Node == "":
			unplaced = append(unplaced, a)
			continue // written below, with its placement
		case a.Deleted:
			if err := c.enqueueTask(b, a, &agentpb.Task{Action: &agentpb.Task_DeleteAccount{
				DeleteAccount: &agentpb.DeleteAccountAction{Username: a.Username}}}); err != nil {
				return false, err
			}
			a.SetStatus(store.AccountDeleting, "", now)
			changed = true
		case a.Generation != a.AppliedGeneration:
			if err := c.enqueueEnsure(ctx, b, a); err != nil {
				return false, err
			}
			if a.AppliedGeneration == 0 {
				a.SetStatus(store.AccountProvisioning, "", now)
			}
			changed = true
		default:
			if st := steadyStatus(a.Suspended); a.Status != st {
				a.SetStatus(st, "", now)
				changed = true
			}
		}
		if changed {
			a.UpdatedAt = now
			b.PutAccount(a, revs[id])
		}
	}
	if len(unplaced) > 0 {
		if err := c.place(ctx, b, unplaced, revs); err != nil {
			return false, err
		}
	}
	ok, rev, err := c.s.store.CommitRev(ctx, b)
	built := c.building
	c.building = nil
	if err != nil || !ok {
		c.allocs = nil
		return ok, err
	}
	if c.allocs != nil && built != nil {
		for _, node := range built.Touched() {
			c.allocs[node], c.allocRevs[node] = allocOf(built, node), rev
		}
		c.snap = built
	}
	if len(deletions) > 0 {
		c.allocs = nil // a deletion gives its node's allocation back
	}
	for _, id := range deletions {
		ev := store.NewAuditEvent("system", c.s.id, "account.deleted", id, "ok")
		if err := c.s.store.FinishAccountDeletion(ctx, id, consumed[id], ev); err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, err
		}
	}
	return true, nil
}

func (c *accountController) enqueueEnsure(ctx context.Context, b *store.Batch, a *store.Account) error {
	// Plans never change after creation, so the mirror's copy is current.
	plan, _, err := c.s.store.CachedPlan(ctx, a.Plan)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return c.enqueueTask(b, a, &agentpb.Task{Action: &agentpb.Task_EnsureAccount{EnsureAccount: &agentpb.EnsureAccountAction{
		Username: a.Username, DiskQuotaMb: uint64(a.DiskMB), Suspended: a.Suspended, Web: webSpec(a, plan)}}})
}

// webSpec is the whole web state of an account for its node: every site,
// with www.DOMAIN served beside each domain that is not itself a www name,
// and the PHP limits of its plan (nil: a plan that is gone, which allows
// nothing).
func webSpec(a *store.Account, plan *store.Plan) *agentpb.WebSpec {
	sites := a.AllSites()
	spec := &agentpb.WebSpec{Sites: make([]*agentpb.Site, 0, len(sites)),
		Php: &agentpb.PHPPoolLimits{AllowExec: plan != nil && plan.AllowExec}}
	for _, s := range sites {
		site := &agentpb.Site{Domain: s.Domain, Docroot: s.Docroot, PhpVersion: s.PHPVersion,
			RedirectTo: s.RedirectTo, RedirectCode: uint32(s.RedirectCode)}
		if !strings.HasPrefix(s.Domain, "www.") {
			site.Aliases = []string{"www." + s.Domain}
		}
		spec.Sites = append(spec.Sites, site)
	}
	return spec
}

func (c *accountController) enqueueTask(b *store.Batch, a *store.Account, spec *agentpb.Task) error {
	spec.Generation = a.Generation
	t, err := b.Enqueue(a.Node, spec, "account/"+a.ID, "controller")
	if err != nil {
		return err
	}
	a.TaskID = t.ID
	return nil
}

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
			// Stays PENDING and is retried on a timer: nodes come back,
			// capacity frees up.
			c.mu.Lock()
			c.unplaced[a.ID] = true
			c.mu.Unlock()
			c.nodes, c.allocs = nil, nil // the retry looks at fresh status and allocations
			if a.Reason != err.Error() {
				a.SetStatus(store.AccountPending, err.Error(), now)
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
		for _, n := range nodes {
			c.addresses[n.Name] = n.Address
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

// RunAccountController runs an account controller until ctx ends. The
// leader runs one by itself; tests start a second one on another replica to
// prove that racing schedulers never over-commit a node.
func (s *Server) RunAccountController(ctx context.Context) { newAccountController(s).run(ctx) }
