package controlplane

import (
	"context"
	"time"

	"github.com/npanel/npanel/controlplane/controller"
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

// dbStatusController refreshes the listings on the controller runtime,
// keyed by account: an account has one listing in flight at most, however
// many changes ask for one.
type dbStatusController struct {
	s   *Server
	ctl *controller.Controller
}

func newDBStatusController(s *Server) *dbStatusController {
	c := &dbStatusController{s: s}
	c.ctl = controller.New(controller.Options{
		Name:  "database-status",
		Store: s.store,
		// An account is refreshed within seconds of its node answering
		// a change (a mutation alone has changed nothing on the node
		// yet), and every account each interval.
		Sources: []controller.Source{{Kind: store.KindDatabaseChanges, Handle: answeredChange, Resync: s.cfg.DatabaseStatusInterval}},
		Sync: func(ctx context.Context, account string) error {
			c.refresh(ctx, account)
			return nil
		},
		Workers: dbStatusWorkers,
		Log:     s.log,
		Metrics: s.metrics.controllers,
	})
	return c
}

func answeredChange(ev store.Event) (account string, queue, keep bool) {
	change := store.DatabaseChangeOf(ev)
	return ev.Name, change == store.DBChangedStatus, change != ""
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
	queued := t // WaitTask gives nil when the wait fails
	defer func() {
		if err := c.s.store.ForgetTask(context.WithoutCancel(ctx), queued); err != nil {
			c.s.log.Warn("database status: forget listing", "task", queued.ID, "err", err)
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
	out := store.EngineDatabases{MeasuredAt: t.FinishedAt, Databases: make([]store.DatabaseSize, 0, len(res.GetDatabases()))}
	for _, d := range res.GetDatabases() {
		out.Databases = append(out.Databases, store.DatabaseSize{Name: d.GetName(), SizeBytes: d.GetSizeBytes(), Tables: int64(d.GetTables()), Users: d.GetUsers()})
	}
	return out, true
}
