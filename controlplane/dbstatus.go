package controlplane

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
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

	mu      sync.Mutex
	pending map[string]bool
	order   []string
	// running accounts are being refreshed; a request for one waits in
	// again, so that an account has one listing in flight at most.
	running map[string]bool
	again   map[string]bool
	wake    chan struct{}
}

func newDBStatusController(s *Server) *dbStatusController {
	return &dbStatusController{s: s, interval: s.cfg.DatabaseStatusInterval, pending: map[string]bool{},
		running: map[string]bool{}, again: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// enqueue asks for account's refresh; one already waiting is not doubled.
func (c *dbStatusController) enqueue(account string) {
	c.mu.Lock()
	if c.running[account] {
		c.again[account] = true
		c.mu.Unlock()
		return
	}
	if !c.pending[account] {
		c.pending[account] = true
		c.order = append(c.order, account)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *dbStatusController) next() (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.order) == 0 {
		return "", false
	}
	a := c.order[0]
	c.order = c.order[1:]
	delete(c.pending, a)
	c.running[a] = true
	return a, true
}

// done ends account's refresh, and queues it again if asked meanwhile.
func (c *dbStatusController) done(account string) {
	c.mu.Lock()
	delete(c.running, account)
	again := c.again[account]
	delete(c.again, account)
	c.mu.Unlock()
	if again {
		c.enqueue(account)
	}
}

func (c *dbStatusController) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range dbStatusWorkers {
		wg.Go(func() {
			for ctx.Err() == nil {
				if a, ok := c.next(); ok {
					c.refresh(ctx, a)
					c.done(a)
					continue
				}
				select {
				case <-ctx.Done():
				case <-c.wake:
				}
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
// mutation, or the settling of one), so that sizes follow within seconds.
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

// refresh records the outcome of the account's finished database tasks
// (which reads no longer do), lists its databases on its node engine by
// engine, and records the result. A node that is not READY is skipped: its queue would
// only collect listings it never answers.
func (c *dbStatusController) refresh(ctx context.Context, account string) {
	set, err := c.s.store.SettleAccountDatabases(ctx, account)
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
	eng := agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB
	if engine == validate.EnginePostgreSQL {
		eng = agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL
	}
	spec := &agentpb.Task{Action: &agentpb.Task_ListDatabases{ListDatabases: &agentpb.ListDatabasesAction{Username: a.Username, Engine: eng}}}
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
	res, err := t.ListDatabasesResult()
	if err != nil {
		c.s.log.Warn("database status: decode listing", "task", t.ID, "err", err)
		return store.EngineDatabases{}, false
	}
	out := store.EngineDatabases{MeasuredAt: t.FinishedAt, Databases: make([]store.DatabaseSize, 0, len(res.Databases))}
	for _, d := range res.Databases {
		out.Databases = append(out.Databases, store.DatabaseSize{Name: d.Name, SizeBytes: d.SizeBytes, Tables: int64(d.Tables), Users: d.Users})
	}
	return out, true
}
