package account

import (
	"context"
	"sync"

	"github.com/npanel/npanel/nodeagent/actions"
	dbactions "github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/nodeagent/actions/web"
)

// Module holds what the account actions of one agent share: the locks
// that serialise them and the web, database and mail modules an account's
// sites, databases and mail live in. It has no daemons and no Setup (the user database
// is the host's), so it is not an actions.Module; the agent's allow-list
// creates one.
type Module struct {
	web  *web.Module
	db   *dbactions.Module
	mail *mail.Module

	// userLocks serialises the actions on one username: each reads the
	// user database, decides and acts, and two of them interleaving (an
	// ensure and a delete of the same account, both re-sent after a
	// reconnect) could act on what the other has just changed. Different
	// accounts proceed in parallel.
	userLocks actions.KeyedLocks

	// dbMu serialises this agent's edits of the user database. The tools
	// lock the files themselves, but give up after a while under
	// contention; queuing here costs nothing since each edit takes
	// milliseconds.
	dbMu sync.Mutex
}

// NewModule returns the account module of one agent, whose actions put
// sites through w and remove databases through d and mail through ml. A
// nil module gets one of its own (one not set up: its actions are used
// only where Env.Modules names it).
func NewModule(w *web.Module, d *dbactions.Module, ml *mail.Module) *Module {
	if w == nil {
		w = web.NewModule()
	}
	if d == nil {
		d = dbactions.NewModule()
	}
	if ml == nil {
		ml = mail.NewModule()
	}
	return &Module{web: w, db: d, mail: ml}
}

func (m *Module) runDB(ctx context.Context, run runner, argv []string) error {
	m.dbMu.Lock()
	defer m.dbMu.Unlock()
	return run.run(ctx, argv)
}
