package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	agentdb "github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Database mutations wait this long for the node before answering PENDING;
// the listing waits much less, then falls back to the recorded state.
const (
	dbTaskTimeout = 30 * time.Second
	dbListTimeout = 5 * time.Second
	// dbListTTL bounds how long an unanswered listing waits in a node's
	// queue: a node that comes back later has no use for it.
	dbListTTL = time.Minute
)

// Service names the db module reports for its daemons.
var engineServices = map[string]string{validate.EngineMariaDB: "mariadb", validate.EnginePostgreSQL: "postgresql"}

func engineOf(e *model.DatabaseEngine) string {
	if e != nil && *e == model.DatabaseEnginePostgresql {
		return validate.EnginePostgreSQL
	}
	return validate.EngineMariaDB
}

func engineModel(e string) model.DatabaseEngine {
	if e == validate.EnginePostgreSQL {
		return model.DatabaseEnginePostgresql
	}
	return model.DatabaseEngineMariadb
}

func agentEngine(e string) agentpb.DatabaseEngine {
	if e == validate.EnginePostgreSQL {
		return agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL
	}
	return agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB
}

func dbModel(d *store.Database) *model.Database {
	m := &model.Database{Name: d.Name, Engine: engineModel(d.Engine), State: model.DatabaseState(d.State),
		Reason: strPtr(d.Reason), Users: []string{}, CreatedAt: d.CreatedAt}
	return m
}

func dbUserModel(u *store.DatabaseUser) *model.DatabaseUser {
	m := &model.DatabaseUser{Name: u.Name, Engine: engineModel(u.Engine), State: model.DatabaseState(u.State),
		Reason: strPtr(u.Reason), Grants: make([]*model.DatabaseGrant, 0, len(u.Grants)), CreatedAt: u.CreatedAt}
	for _, g := range u.Grants {
		m.Grants = append(m.Grants, &model.DatabaseGrant{Database: g.Database, Privileges: slices.Clone(g.Privileges)})
	}
	return m
}

// dbChange collects a database mutation's writes, keyed by name so that the
// bookkeeping (settle) and the mutation itself can both touch a record.
type dbChange struct {
	dbs      map[string]*store.Database
	users    map[string]*store.DatabaseUser
	delDBs   []string
	delUsers []string
	tasks    []store.DatabaseTask
}

// stillOn refuses a change planned for a's node when the account has
// moved since (a password sealed to the old node's key is useless).
func stillOn(set *store.DatabaseSet, a *store.Account) error {
	if set.Account.Node != a.Node {
		return fmt.Errorf("account %s moved to another node meanwhile; try again: %w", a.Username, store.ErrConflict)
	}
	return nil
}

// ensureUser marks u pending and adds the task that converges it on its
// node (sealed: its new password, nil to keep the one it has).
func (c *dbChange) ensureUser(u *store.DatabaseUser, sealed []byte) {
	u.State, u.Reason = store.DatabasePending, ""
	c.users[u.Name] = u
	c.tasks = append(c.tasks, userEnsureTask(u, sealed))
}

func newDBChange() *dbChange {
	return &dbChange{dbs: map[string]*store.Database{}, users: map[string]*store.DatabaseUser{}}
}

func (c *dbChange) build() *store.DatabaseChange {
	out := &store.DatabaseChange{DeleteDatabases: c.delDBs, DeleteUsers: c.delUsers, Tasks: c.tasks}
	for _, d := range c.dbs {
		out.Databases = append(out.Databases, d)
	}
	for _, u := range c.users {
		out.Users = append(out.Users, u)
	}
	return out
}

// settle records the outcome of every finished task that a PENDING or
// DELETING record waits on: ACTIVE or FAILED with the node's error, and for a
// finished deletion the record's removal. It updates set in place, so a
// mutation decides on current states.
func (r *Resolver) settle(ctx context.Context, set *store.DatabaseSet, c *dbChange) error {
	outcome := func(st store.DatabaseState, taskID string) (*store.Task, error) {
		if (st != store.DatabasePending && st != store.DatabaseDeleting) || taskID == "" {
			return nil, nil
		}
		t, _, err := r.Store.GetTask(ctx, taskID)
		if err != nil {
			if isNotFound(err) {
				return nil, nil
			}
			return nil, err
		}
		if t.Status == store.TaskPending {
			return nil, nil
		}
		return t, nil
	}
	for name, d := range set.Databases {
		t, err := outcome(d.State, d.TaskID)
		if err != nil || t == nil {
			if err != nil {
				return err
			}
			continue
		}
		switch {
		case d.State == store.DatabaseDeleting && t.Status == store.TaskSucceeded:
			delete(set.Databases, name)
			delete(c.dbs, name)
			c.delDBs = append(c.delDBs, name)
			continue
		case t.Status == store.TaskSucceeded:
			d.State, d.Reason = store.DatabaseActive, ""
		case d.State == store.DatabaseDeleting:
			d.State, d.Reason = store.DatabaseFailed, "delete failed, nothing dropped: "+t.Error
		default:
			d.State, d.Reason = store.DatabaseFailed, t.Error
		}
		c.dbs[name] = d
	}
	for name, u := range set.Users {
		t, err := outcome(u.State, u.TaskID)
		if err != nil || t == nil {
			if err != nil {
				return err
			}
			continue
		}
		switch {
		case u.State == store.DatabaseDeleting && t.Status == store.TaskSucceeded:
			delete(set.Users, name)
			delete(c.users, name)
			c.delUsers = append(c.delUsers, name)
			continue
		case t.Status == store.TaskSucceeded:
			u.State, u.Reason = store.DatabaseActive, ""
		default:
			u.State, u.Reason = store.DatabaseFailed, t.Error
		}
		c.users[name] = u
	}
	return nil
}

// settleAccount records finished tasks of an account's databases and users
// and returns the set as it then stands.
func (r *Resolver) settleAccount(ctx context.Context, account string) (*store.DatabaseSet, error) {
	var out *store.DatabaseSet
	_, err := r.Store.ChangeDatabases(ctx, account, "", func(set *store.DatabaseSet) (*store.DatabaseChange, error) {
		c := newDBChange()
		if err := r.settle(ctx, set, c); err != nil {
			return nil, err
		}
		out = set
		return c.build(), nil
	}, store.AuditEvent{})
	return out, err
}

// changeDatabases runs a database mutation for the caller: fn sees the
// account's settled databases and users and adds its writes to c. It
// returns the tasks written (in the order fn added them).
func (r *Resolver) changeDatabases(ctx context.Context, p auth.Principal, a *store.Account, action, target string, detail map[string]string, fn func(set *store.DatabaseSet, c *dbChange) error) ([]*store.Task, error) {
	ev := store.NewAuditEvent(p.Name, source(ctx), action, a.Username+"/"+target, "ok")
	ev.Detail = map[string]string{"id": a.ID}
	for k, v := range detail {
		ev.Detail[k] = v
	}
	return r.Store.ChangeDatabases(ctx, a.ID, p.Name, func(set *store.DatabaseSet) (*store.DatabaseChange, error) {
		if set.Account.Deleted {
			return nil, fmt.Errorf("account %s is being deleted: %w", set.Account.Username, store.ErrConflict)
		}
		c := newDBChange()
		if err := r.settle(ctx, set, c); err != nil {
			return nil, err
		}
		if err := fn(set, c); err != nil {
			return nil, err
		}
		if len(c.tasks) > 0 && set.Account.Node == "" {
			return nil, fmt.Errorf("account %s is not placed on a node yet: %w", set.Account.Username, store.ErrConflict)
		}
		return c.build(), nil
	}, ev)
}

// finish waits for a mutation's task, records its outcome and returns the
// task as it stands and the settled set.
func (r *Resolver) finish(ctx context.Context, account string, t *store.Task) (*store.Task, *store.DatabaseSet, error) {
	t, err := r.waitTask(ctx, t.ID, dbTaskTimeout)
	if err != nil {
		return nil, nil, err
	}
	set, err := r.settleAccount(context.WithoutCancel(ctx), account)
	return t, set, err
}

// checkEngine refuses an engine the account's node does not run, as far as
// its agent reported its daemons. PostgreSQL must have been reported;
// MariaDB, the default, is assumed until a report says otherwise.
func (r *Resolver) checkEngine(ctx context.Context, a *store.Account, engine string) error {
	if a.Node == "" {
		return nil // refused later, with the reason
	}
	rep, err := r.Store.GetServices(ctx, a.Node)
	if err != nil {
		return err
	}
	if len(rep.Services) == 0 && engine == validate.EngineMariaDB {
		return nil
	}
	for _, s := range rep.Services {
		if s.Name == engineServices[engine] {
			return nil
		}
	}
	return &validate.Error{Field: "engine", Reason: "node " + a.Node + " does not run " + engine}
}

// sealPassword seals a database user's password to the key of the account's
// node: task records and queue entries are kept in etcd, so the password
// must not travel in them in the clear.
func (r *Resolver) sealPassword(ctx context.Context, a *store.Account, user, password string) ([]byte, error) {
	if a.Node == "" {
		return nil, fmt.Errorf("account %s is not placed on a node yet: %w", a.Username, store.ErrConflict)
	}
	st, _, err := r.Store.GetNodeState(ctx, a.Node)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if st == nil || len(st.PublicKey) == 0 {
		return nil, errorf(CodeConflict, "node "+a.Node+" has not connected yet, so a password cannot be sealed to it; try again when it is READY")
	}
	return pki.SealDER(st.PublicKey, []byte(password), agentdb.PasswordSealContext(user))
}

// userPassword validates a caller's password or generates one; generated
// reports whether it must be shown to the caller.
func userPassword(password *string, user string) (pw string, generated bool, err error) {
	if password == nil {
		return validate.GenerateDatabasePassword(user), true, nil
	}
	if err := validate.DatabasePassword(*password, user); err != nil {
		return "", false, err
	}
	return *password, false, nil
}

// userEnsureTask converges u on the node: its hosts and exactly its grants,
// and the password when sealed is set.
func userEnsureTask(u *store.DatabaseUser, sealed []byte) store.DatabaseTask {
	act := &agentpb.EnsureDatabaseUserAction{Name: u.Name, Owner: u.Owner, Engine: agentEngine(u.Engine),
		Hosts: slices.Clone(u.Hosts), SealedPassword: sealed}
	for _, g := range u.Grants {
		act.Grants = append(act.Grants, &agentpb.DatabaseGrant{Database: g.Database, Privileges: slices.Clone(g.Privileges)})
	}
	return store.DatabaseTask{Spec: &agentpb.Task{Action: &agentpb.Task_EnsureDatabaseUser{EnsureDatabaseUser: act}},
		Action: "ensureDatabaseUser", User: u.Name}
}

// userBusy refuses a change to a user whose previous change the node has not
// applied yet: tasks for one node run concurrently, so two ensures of one
// user in flight could land in either order.
func userBusy(u *store.DatabaseUser) error {
	switch u.State {
	case store.DatabasePending:
		return fmt.Errorf("database user %s: the previous change is still being applied; try again shortly: %w", u.Name, store.ErrConflict)
	case store.DatabaseDeleting:
		return fmt.Errorf("database user %s is being deleted: %w", u.Name, store.ErrConflict)
	}
	return nil
}

func cloneUser(u *store.DatabaseUser) *store.DatabaseUser {
	c := *u
	c.Hosts = slices.Clone(u.Hosts)
	c.Grants = make([]store.DatabaseGrant, len(u.Grants))
	for i, g := range u.Grants {
		c.Grants[i] = store.DatabaseGrant{Database: g.Database, Privileges: slices.Clone(g.Privileges)}
	}
	return &c
}

// taskStatePayload maps a finished (or not) task onto a record's state for
// the payloads of deletions.
func deletionState(t *store.Task) (model.DatabaseState, *string) {
	switch t.Status {
	case store.TaskSucceeded:
		return model.DatabaseStateDeleted, nil
	case store.TaskFailed:
		return model.DatabaseStateFailed, strPtr(t.Error)
	}
	return model.DatabaseStateDeleting, nil
}

// liveDatabases asks the node for an account's databases on one engine,
// waiting at most dbListTimeout; ok is false when it did not answer.
func (r *Resolver) liveDatabases(ctx context.Context, p auth.Principal, a *store.Account, engine string) (map[string]agentdb.DatabaseInfo, bool) {
	spec := &agentpb.Task{Action: &agentpb.Task_ListDatabases{ListDatabases: &agentpb.ListDatabasesAction{Username: a.Username, Engine: agentEngine(engine)}}}
	t, err := r.Store.EnqueueQueryTask(ctx, a.Node, spec, "listDatabases", p.Name, dbListTTL)
	if err != nil {
		r.Log.Warn("list databases: enqueue", "account", a.ID, "err", err)
		return nil, false
	}
	// Answered or not, the query is of no use once this request is done.
	defer func() {
		if err := r.Store.ForgetTask(context.WithoutCancel(ctx), t); err != nil {
			r.Log.Warn("list databases: forget task", "task", t.ID, "err", err)
		}
	}()
	t, err = r.waitTask(ctx, t.ID, dbListTimeout)
	if err != nil || t == nil || t.Status != store.TaskSucceeded {
		if t != nil && t.Status == store.TaskFailed {
			r.Log.Warn("list databases failed on the node", "account", a.ID, "node", a.Node, "err", t.Error)
		}
		return nil, false
	}
	var res agentdb.ListResult
	if err := json.Unmarshal([]byte(t.Result), &res); err != nil {
		r.Log.Warn("list databases: decode result", "task", t.ID, "err", err)
		return nil, false
	}
	out := make(map[string]agentdb.DatabaseInfo, len(res.Databases))
	for _, d := range res.Databases {
		out[d.Name] = d
	}
	return out, true
}

// databaseModels shows an account's recorded databases, with the node's
// live size, tables and users where it answered.
func (r *Resolver) databaseModels(ctx context.Context, p auth.Principal, set *store.DatabaseSet) []*model.Database {
	names := make([]string, 0, len(set.Databases))
	engines := map[string]bool{}
	for n, d := range set.Databases {
		names = append(names, n)
		engines[d.Engine] = true
	}
	sort.Strings(names)
	live := map[string]map[string]agentdb.DatabaseInfo{}
	if set.Account.Node != "" {
		for e := range engines {
			if m, ok := r.liveDatabases(ctx, p, set.Account, e); ok {
				live[e] = m
			}
		}
	}
	out := make([]*model.Database, 0, len(names))
	for _, n := range names {
		d := set.Databases[n]
		m := dbModel(d)
		if info, ok := live[d.Engine][n]; ok {
			size, tables := info.SizeBytes, int(info.Tables)
			m.SizeBytes, m.Tables, m.Live = &size, &tables, true
			m.Users = append(m.Users, info.Users...)
		} else {
			for _, u := range set.Users {
				if u.GrantIndex(n) >= 0 {
					m.Users = append(m.Users, u.Name)
				}
			}
		}
		sort.Strings(m.Users)
		out = append(out, m)
	}
	return out
}

// maxDatabaseUsers bounds an account's database users (plans limit
// databases only); it also keeps a database deletion, which revokes every
// user's grant on it in one transaction, within etcd's operation limit.
const maxDatabaseUsers = 40

// userPayload shows a user after a change, with the password when it was
// generated (this once; it is stored nowhere).
func userPayload(set *store.DatabaseSet, name, password string, generated bool) (*model.DatabaseUserPayload, error) {
	u, ok := set.Users[name]
	if !ok {
		return nil, errorf(CodeNotFound, "database user "+quote(name)+" was deleted meanwhile")
	}
	out := &model.DatabaseUserPayload{User: dbUserModel(u)}
	if generated {
		out.Password = &password
	}
	return out, nil
}

// checkPrivileges refuses, before anything is read, a privilege list that no
// engine accepts; the user's engine decides exactly later.
func checkPrivileges(privs []string) error {
	if len(privs) == 0 {
		return nil
	}
	_, err := validate.DatabasePrivileges(validate.EngineMariaDB, privs)
	if err == nil {
		return nil
	}
	if _, perr := validate.DatabasePrivileges(validate.EnginePostgreSQL, privs); perr == nil {
		return nil
	}
	return err
}
