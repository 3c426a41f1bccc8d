package graph

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// Database mutations wait this long for the node before answering PENDING.
const dbTaskTimeout = 30 * time.Second

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

// settle adds to c the outcome of every finished task that a PENDING or
// DELETING record of set waits on (store.SettleDatabases), updating set in
// place so that a mutation decides on current states.
func (r *Resolver) settle(ctx context.Context, set *store.DatabaseSet, c *dbChange) error {
	ch, err := r.Store.SettleDatabases(ctx, set)
	if err != nil {
		return err
	}
	for _, d := range ch.Databases {
		c.dbs[d.Name] = d
	}
	for _, u := range ch.Users {
		c.users[u.Name] = u
	}
	for _, n := range ch.DeleteDatabases {
		delete(c.dbs, n)
		c.delDBs = append(c.delDBs, n)
	}
	for _, n := range ch.DeleteUsers {
		delete(c.users, n)
		c.delUsers = append(c.delUsers, n)
	}
	return nil
}

// settleAccount records finished tasks of an account's databases and users
// and returns the set as it then stands (after a mutation's task).
func (r *Resolver) settleAccount(ctx context.Context, account string) (*store.DatabaseSet, error) {
	return r.Store.SettleAccountDatabases(ctx, account)
}

// readDatabases is the read path's view of an account's databases: the
// records with finished tasks' outcomes applied, in memory only. A read
// writes nothing; the next mutation, or the leader's status refresh,
// records the outcomes.
func (r *Resolver) readDatabases(ctx context.Context, account string) (*store.DatabaseSet, error) {
	set, err := r.Store.GetDatabases(ctx, account)
	if err != nil {
		return nil, err
	}
	if _, err := r.Store.SettleDatabases(ctx, set); err != nil {
		return nil, err
	}
	return set, nil
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
	return pki.SealDER(st.PublicKey, []byte(password), agentpb.DatabasePasswordSealContext(user))
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

// databaseModels shows an account's recorded databases with the size,
// tables and users of its node's last report (store.DatabaseStatus, kept
// by the leader): live is true and measuredAt says when, for a database
// that report lists.
func databaseModels(set *store.DatabaseSet, st *store.DatabaseStatus) []*model.Database {
	names := make([]string, 0, len(set.Databases))
	for n := range set.Databases {
		names = append(names, n)
	}
	sort.Strings(names)
	type measured struct {
		store.DatabaseSize
		at time.Time
	}
	live := map[string]measured{} // engine + "/" + name
	if st != nil && st.Node == set.Account.Node {
		for e, list := range st.Engines {
			for _, d := range list.Databases {
				live[e+"/"+d.Name] = measured{d, list.MeasuredAt}
			}
		}
	}
	out := make([]*model.Database, 0, len(names))
	for _, n := range names {
		d := set.Databases[n]
		m := dbModel(d)
		if info, ok := live[d.Engine+"/"+n]; ok && d.State != store.DatabasePending {
			size, tables := info.SizeBytes, int(info.Tables)
			m.SizeBytes, m.Tables, m.Live, m.MeasuredAt = &size, &tables, true, timePtr(info.at)
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
