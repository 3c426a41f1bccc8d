package controlplane

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// Database status refresh (leader only). The databases query shows sizes,
// tables and users from this status, never by asking the node itself: a
// request that enqueued a task per read let one tenant's query with 400
// aliases write 400 tasks and stall every node's queue (issue 23). The
// agent's listing is per account, so the refresh is one listDatabases task
// per account and engine, paced by a few workers.
const (
	// dbStatusWorkers bounds the listings in flight cluster-wide.
	dbStatusWorkers = 4
	// dbListWait bounds how long a listing waits for its node.
	dbListWait = 30 * time.Second
	// dbListTTL is the listing task's lease: a node that comes back later
	// has no use for it.
	dbListTTL = time.Minute
)

type dbStatusController struct {
	s        *Server
	interval time.Duration
	// q holds accounts to refresh; an account has one listing in flight
	// at most, however many changes ask for one.
	q *accountQueue
}

func newDBStatusController(s *Server) *dbStatusController {
	return &dbStatusController{s: s, interval: s.cfg.DatabaseStatusInterval, q: newAccountQueue()}
}

func (c *dbStatusController) enqueue(account string) { c.q.add(account) }

// run refreshes statuses until ctx ends. It also runs the database
// controller, which converges the databases themselves: the leader starts
// both here until controllers register on the shared runtime.
func (c *dbStatusController) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { newDatabaseController(c.s).run(ctx) })
	for range dbStatusWorkers {
		wg.Go(func() {
			for {
				a, ok := c.q.get(ctx)
				if !ok {
					return
				}
				c.refresh(ctx, a)
				c.q.done(a)
			}
		})
	}
	wg.Go(func() { c.followChanges(ctx) })
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		c.enqueueAll(ctx)
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-tick.C:
		}
	}
}

// followChanges refreshes an account whenever its databases change (a
// mutation, or a task's outcome recorded), so that sizes follow within
// seconds.
func (c *dbStatusController) followChanges(ctx context.Context) {
	for ctx.Err() == nil {
		for account := range c.s.store.WatchDatabaseChanges(ctx) {
			c.enqueue(account)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (c *dbStatusController) enqueueAll(ctx context.Context) {
	all, err := c.s.store.DatabaseEngines(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.s.log.Warn("database status: list accounts", "err", err)
		}
		return
	}
	ids := make([]string, 0, len(all))
	for id := range all {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c.enqueue(id)
	}
}

// refresh lists the account's databases on its node engine by engine, and
// records the result. A node that is not READY is skipped: its queue would
// only collect listings it never answers.
func (c *dbStatusController) refresh(ctx context.Context, account string) {
	set, err := c.s.store.GetDatabases(ctx, account)
	if err != nil || set.Account.Node == "" {
		return
	}
	node := set.Account.Node
	st, _, err := c.s.store.GetNodeState(ctx, node)
	if err != nil || st.Status != store.NodeReady {
		return
	}
	engines := map[string]bool{}
	for _, d := range set.Databases {
		engines[d.Engine] = true
	}
	for engine := range engines {
		list, ok := c.list(ctx, set.Account, engine)
		if !ok {
			continue
		}
		if err := c.s.store.PutDatabaseStatus(ctx, account, node, engine, list); err != nil && ctx.Err() == nil {
			c.s.log.Warn("database status: record", "account", account, "err", err)
		}
	}
}

func (c *dbStatusController) list(ctx context.Context, a *store.Account, engine string) (store.EngineDatabases, bool) {
	spec := &agentpb.Task{Action: &agentpb.Task_ListDatabases{ListDatabases: &agentpb.ListDatabasesAction{Username: a.Username, Engine: agentEngine(engine)}}}
	t, err := c.s.store.EnqueueQueryTask(ctx, a.Node, spec, "listDatabases", "system", dbListTTL)
	if err != nil {
		c.s.log.Warn("database status: enqueue listing", "account", a.ID, "err", err)
		return store.EngineDatabases{}, false
	}
	defer func() {
		if err := c.s.store.ForgetTask(context.WithoutCancel(ctx), t); err != nil {
			c.s.log.Warn("database status: forget listing", "task", t.ID, "err", err)
		}
	}()
	t, err = c.s.store.WaitTask(ctx, t.ID, dbListWait)
	if err != nil || t.Status != store.TaskSucceeded {
		if t != nil && t.Status == store.TaskFailed {
			c.s.log.Warn("database status: listing failed on the node", "account", a.ID, "node", a.Node, "err", t.Error)
		}
		return store.EngineDatabases{}, false
	}
	res, err := listDatabasesResult(t)
	if err != nil {
		c.s.log.Warn("database status: decode listing", "task", t.ID, "err", err)
		return store.EngineDatabases{}, false
	}
	out := store.EngineDatabases{MeasuredAt: t.FinishedAt, Databases: make([]store.DatabaseSize, 0, len(res.GetDatabases()))}
	for _, d := range res.GetDatabases() {
		out.Databases = append(out.Databases, store.DatabaseSize{Name: d.GetName(), SizeBytes: d.GetSizeBytes(), Tables: int64(d.GetTables()), Users: d.GetUsers()})
	}
	return out, true
}
