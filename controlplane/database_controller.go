package controlplane

import (
	"context"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// The database controller (leader only) converges every account's
// databases and database users: the API writes specs with a generation
// (store.ChangeDatabases) and returns; the controller, keyed by account,
// records finished tasks into the objects' statuses and writes the tasks
// that bring the node to the newest spec (syncDatabases), both in one
// transaction per account (store.SyncDatabases). It wakes on every change
// of an account's database records and on every finished database task
// (their done notices), and resyncs every account periodically.
const (
	// dbSyncWorkers bounds the accounts synced at once.
	dbSyncWorkers = 4
	// dbResync is the period of the full resync: a safety net for a
	// missed watch event, not the way work is normally found.
	dbResync = time.Minute
	// dbRetry is the wait before a failed sync runs again.
	dbRetry = time.Second
)

type databaseController struct {
	s *Server
	q *accountQueue
}

func newDatabaseController(s *Server) *databaseController {
	return &databaseController{s: s, q: newAccountQueue()}
}

// sync converges one account.
func (c *databaseController) sync(ctx context.Context, account string) error {
	return c.s.store.SyncDatabases(ctx, account, func(set *store.DatabaseSet, finished map[string]*store.Task) (*store.DatabaseSync, error) {
		return syncDatabases(set, finished), nil
	})
}

func (c *databaseController) run(ctx context.Context) {
	var wg sync.WaitGroup
	for range dbSyncWorkers {
		wg.Go(func() {
			for {
				a, ok := c.q.get(ctx)
				if !ok {
					return
				}
				err := c.sync(ctx, a)
				c.q.done(a)
				if err != nil && ctx.Err() == nil {
					c.s.log.Warn("database controller: sync", "account", a, "err", err)
					time.AfterFunc(dbRetry, func() { c.q.add(a) })
				}
			}
		})
	}
	wg.Go(func() { c.follow(ctx) })
	wg.Wait()
}

// follow queues every account with database records, then each account
// the store's watch names, and everything again every dbResync and after
// the watch broke.
func (c *databaseController) follow(ctx context.Context) {
	tick := time.NewTicker(dbResync)
	defer tick.Stop()
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(ctx)
		// Watch first, then list: a change between the two is seen twice
		// rather than not at all.
		work := c.s.store.WatchDatabaseWork(wctx)
		c.addAll(ctx)
	watch:
		for {
			select {
			case a, ok := <-work:
				if !ok {
					break watch
				}
				c.q.add(a)
			case <-tick.C:
				c.addAll(ctx)
			case <-ctx.Done():
				break watch
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (c *databaseController) addAll(ctx context.Context) {
	ids, err := c.s.store.DatabaseAccounts(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.s.log.Warn("database controller: list accounts", "err", err)
		}
		return
	}
	for _, id := range ids {
		c.q.add(id)
	}
}

// accountQueue is a de-duplicating queue of account ids: an account
// waiting is not queued twice, and one being worked on is queued again
// when asked meanwhile, so that one account is never worked on twice at
// once and no request is lost.
type accountQueue struct {
	mu      sync.Mutex
	pending map[string]bool
	order   []string
	running map[string]bool
	again   map[string]bool
	wake    chan struct{}
}

func newAccountQueue() *accountQueue {
	return &accountQueue{pending: map[string]bool{}, running: map[string]bool{}, again: map[string]bool{}, wake: make(chan struct{}, 1)}
}

func (q *accountQueue) add(account string) {
	q.mu.Lock()
	if q.running[account] {
		q.again[account] = true
		q.mu.Unlock()
		return
	}
	if !q.pending[account] {
		q.pending[account] = true
		q.order = append(q.order, account)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// get returns the next account, waiting for one until ctx ends.
func (q *accountQueue) get(ctx context.Context) (string, bool) {
	for {
		q.mu.Lock()
		if len(q.order) > 0 {
			a := q.order[0]
			q.order = q.order[1:]
			delete(q.pending, a)
			q.running[a] = true
			more := len(q.order) > 0
			q.mu.Unlock()
			if more { // pass the wake-up on to another worker
				select {
				case q.wake <- struct{}{}:
				default:
				}
			}
			return a, true
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", false
		case <-q.wake:
		}
	}
}

// done ends work on account, and queues it again if asked meanwhile.
func (q *accountQueue) done(account string) {
	q.mu.Lock()
	delete(q.running, account)
	again := q.again[account]
	delete(q.again, account)
	q.mu.Unlock()
	if again {
		q.add(account)
	}
}
