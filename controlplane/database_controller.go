package controlplane

import (
	"context"
	"time"

	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
)

// The database controller (leader only) converges every account's
// databases and database users: the API writes specs with a generation
// (store.ChangeDatabases) and returns; the controller, keyed by account,
// records finished tasks into the objects' statuses and writes the tasks
// that bring the node to the newest spec (syncDatabases), both in one
// transaction per account (store.SyncDatabases). It runs on the controller
// runtime and wakes on every change of an account's database records and
// on every finished database task (their done notices).
const (
	// dbSyncWorkers bounds the accounts synced at once.
	dbSyncWorkers = 4
	// dbResync queues every account with database records again: a safety
	// net (a relist after a lost watch queues them all anyway), kept long
	// because at 100,000 accounts each pass is 100,000 reads.
	dbResync = 10 * time.Minute
)

// databaseStore is what the database controller needs of the store.
type databaseStore interface {
	SyncDatabases(ctx context.Context, account string, fn func(*store.DatabaseSet, map[string]*store.Task) (*store.DatabaseSync, error)) error
}

// syncAccountDatabases converges one account's databases and users.
func syncAccountDatabases(ctx context.Context, st databaseStore, account string) error {
	return st.SyncDatabases(ctx, account, func(set *store.DatabaseSet, finished map[string]*store.Task) (*store.DatabaseSync, error) {
		return syncDatabases(set, finished), nil
	})
}

// databaseChange queues an account whose specs changed. The controller's
// own writes are not news to it: it saw everything up to them (its commit
// compares the sequence key), and answers come as done notices.
func databaseChange(ev store.Event) (account string, queue, keep bool) {
	change := store.DatabaseChangeOf(ev)
	return ev.Name, change == store.DBChangedSpec, change != ""
}

// newDatabaseController builds the database controller on the runtime.
func newDatabaseController(s *Server) *controller.Controller {
	return controller.New(controller.Options{
		Name:  "database",
		Store: s.store,
		Sources: []controller.Source{
			{Kind: store.KindDatabaseChanges, Handle: databaseChange, Resync: dbResync},
			{Kind: store.KindDatabaseOutcomes, WatchOptions: []store.WatchOption{store.WithoutDeletes()}},
		},
		Sync:    func(ctx context.Context, account string) error { return syncAccountDatabases(ctx, s.store, account) },
		Workers: dbSyncWorkers,
		Log:     s.log,
		Metrics: s.metrics.controllers,
	})
}
