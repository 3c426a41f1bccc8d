package controlplane

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/npanel/npanel/controlplane/controller"
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
	// unplacedRetry is how soon an account that fit nowhere is tried again.
	unplacedRetry = time.Second
	// accountGather is how long a pass that found fewer accounts than a
	// batch waits for more. A pass costs a read and a commit (an etcd
	// proposal) however few accounts it carries; at hundreds of accounts a
	// second, passes of one or two were most of the controller's work.
	accountGather = 5 * time.Millisecond
	// unsettledResync is how often accounts still on their way to a
	// steady state are queued again whether or not an event said so.
	unsettledResync = 30 * time.Second
	// accountRetryBase is the first backoff of a batch that failed.
	accountRetryBase = 200 * time.Millisecond
)

// accountController turns the difference between an account's spec and its
// observed state into placements and node tasks. It runs on the leader only,
// on the controller runtime, and is level-triggered: it looks at the whole
// record each time, so a missed or repeated event costs work, never
// correctness. Its batches run on one goroutine (the runtime's batch
// worker), which alone touches the placement state below.
type accountController struct {
	s   *Server
	ctl *controller.Controller

	// nodes is the node list the last snapshot used (see nodesMaxAge).
	nodes   []store.NodeView
	nodesAt time.Time
	// addresses is each listed node's address, by name; specRevs the
	// revision of its spec, which placements on it compare.
	addresses map[string]string
	specRevs  map[string]int64

	// allocs are the nodes' allocations with the revisions they were
	// written at, as read or as this controller last committed them; nil
	// until read. Every placement compares the revision, so a stale entry
	// (an account deleted meanwhile, a competing scheduler) costs one
	// failed commit and a fresh read, never an over-commit.
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

// newAccountController builds the account controller on the runtime. Its
// informers follow accounts and their outcome notices through the account
// index's etcd connection, not the API's: the resync that catches accounts
// whose event was missed must not share the failure that made it miss them
// (a 100,000-account load test once lost seven accounts' events on the API
// client after a disk stall cost the replica its leadership, while the
// index, on its own connection, had them).
func newAccountController(s *Server) *accountController {
	c := &accountController{s: s}
	c.ctl = controller.New(controller.Options{
		Name:  "account",
		Store: s.accounts.st,
		Sources: []controller.Source{
			{Kind: store.KindAccounts, Handle: accountEvent, Resync: unsettledResync},
			{Kind: store.KindAccountOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
		},
		SyncBatch: c.process,
		BatchSize: s.cfg.AccountBatch,
		Gather:    accountGather,
		BaseDelay: accountRetryBase,
		MaxDelay:  5 * time.Second,
		Log:       s.log,
		Metrics:   s.metrics.controllers,
	})
	return c
}

// accountEvent queues an account that has work to do now, and keeps for
// the resync every account on its way to a steady state.
func accountEvent(ev store.Event) (id string, queue, keep bool) {
	if ev.Deleted {
		return ev.Name, false, false
	}
	a, err := store.DecodeAccountHeadEvent(ev)
	if err != nil {
		return ev.Name, false, false
	}
	return a.ID, needsWork(a), unsettled(a.Status)
}

// unsettled says whether an account's status means work is under way or
// due: everything but ACTIVE, SUSPENDED and FAILED.
func unsettled(st store.AccountStatus) bool {
	switch st {
	case store.AccountPending, store.AccountScheduled, store.AccountProvisioning, store.AccountDeleting:
		return true
	}
	return false
}

// needsWork decides from a record alone whether the controller has
// something to do for it; the informer uses it to skip the steady majority.
func needsWork(a store.AccountHead) bool {
	if a.TaskID != "" {
		return false // waiting for the node; the done notice brings it back
	}
	switch {
	case a.Status == store.AccountFailed && a.Attempts >= maxTaskAttempts:
		return false // until a spec change resets the attempts
	case a.Migrating != "" && !a.Deleted:
		return false // a migration's cutover holds it
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
		case a.Migrating != "" && !a.Deleted:
			// A migration's cutover holds it: an ensure now would undo
			// the source's suspension during the final copy.
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
		// A lost compare may be a node's spec that changed (GuardNode):
		// the retry reads nodes as well as allocations afresh.
		c.allocs, c.nodes = nil, nil
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
	// The mirror's copy of the plan may lag a change the account was
	// rebuilt for (updatePlan, changeAccountPlan write the plan's
	// generation into the account): then etcd has the plan the spec must
	// be built from.
	plan, _, err := c.s.store.CachedPlan(ctx, a.Plan)
	if err == nil && plan.Generation < a.PlanGeneration {
		plan, _, err = c.s.store.GetPlanRev(ctx, a.Plan)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return c.enqueueTask(b, a, &agentpb.Task{Action: &agentpb.Task_EnsureAccount{EnsureAccount: &agentpb.EnsureAccountAction{
		Username: a.Username, DiskQuotaMb: uint64(a.DiskMB), Suspended: a.Suspended, Web: webSpec(a, plan)}}})
}

// webSpec is the whole web state of an account for its node: every site,
// with www.DOMAIN served beside each domain that is not itself a www name,
// and each alias (parked) domain with its www name among the server names
// of the site it aliases,
// and the PHP limits of its plan (nil: a plan that is gone, which allows
// nothing).
func webSpec(a *store.Account, plan *store.Plan) *agentpb.WebSpec {
	sites := a.AllSites()
	spec := &agentpb.WebSpec{Sites: make([]*agentpb.Site, 0, len(sites)),
		Php: &agentpb.PHPPoolLimits{AllowExec: plan != nil && plan.AllowExec}}
	for _, s := range sites {
		if s.AliasOf != "" {
			continue // served by its target's server block, below
		}
		site := &agentpb.Site{Domain: s.Domain, Docroot: s.Docroot, PhpVersion: s.PHPVersion,
			RedirectTo: s.RedirectTo, RedirectCode: uint32(s.RedirectCode),
			HttpsRedirect: s.HTTPSRedirect, HstsMaxAge: uint32(max(s.HSTSMaxAge, 0))}
		if !strings.HasPrefix(s.Domain, "www.") {
			site.Aliases = []string{"www." + s.Domain}
		}
		for _, al := range sites {
			if al.AliasOf != s.Domain {
				continue
			}
			site.Aliases = append(site.Aliases, al.Domain)
			if !strings.HasPrefix(al.Domain, "www.") {
				site.Aliases = append(site.Aliases, "www."+al.Domain)
			}
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

// RunAccountController runs an account controller until ctx ends. The
// leader runs one by itself; tests start a second one on another replica to
// prove that racing schedulers never over-commit a node.
func (s *Server) RunAccountController(ctx context.Context) { newAccountController(s).ctl.Run(ctx) }
