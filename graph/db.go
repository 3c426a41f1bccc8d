package graph

import (
	"context"
	"errors"
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

func dbModel(d *store.Database) *model.Database {
	state, reason := d.State()
	return &model.Database{Name: d.Name, Engine: engineModel(d.Engine), State: model.DatabaseState(state),
		Reason: strPtr(reason), Users: []string{}, CreatedAt: d.CreatedAt}
}

func dbUserModel(u *store.DatabaseUser) *model.DatabaseUser {
	state, reason := u.State()
	m := &model.DatabaseUser{Name: u.Name, Engine: engineModel(u.Engine), State: model.DatabaseState(state),
		Reason: strPtr(reason), Grants: make([]*model.DatabaseGrant, 0, len(u.Grants)), CreatedAt: u.CreatedAt}
	for _, g := range u.Grants {
		m.Grants = append(m.Grants, &model.DatabaseGrant{Database: g.Database, Privileges: slices.Clone(g.Privileges)})
	}
	return m
}

// dbChange collects a database mutation's specs, keyed by name. Every
// spec written gets the next generation: the database controller turns it
// into the node's tasks.
type dbChange struct {
	dbs   map[string]*store.Database
	users map[string]*store.DatabaseUser
}

func newDBChange() *dbChange {
	return &dbChange{dbs: map[string]*store.Database{}, users: map[string]*store.DatabaseUser{}}
}

// putDatabase writes d's spec as its next generation.
func (c *dbChange) putDatabase(d *store.Database) {
	if _, ok := c.dbs[d.Name]; !ok {
		d.Generation++
	}
	c.dbs[d.Name] = d
}

// putUser writes u's spec as its next generation.
func (c *dbChange) putUser(u *store.DatabaseUser) {
	if _, ok := c.users[u.Name]; !ok {
		u.Generation++
	}
	c.users[u.Name] = u
}

// setPassword makes sealed u's password from its next generation on.
func (c *dbChange) setPassword(u *store.DatabaseUser, sealed []byte) {
	c.putUser(u)
	u.SealedPassword, u.SealedPasswordHash, u.PasswordGeneration = sealed, nil, u.Generation
}

func (c *dbChange) build() *store.DatabaseChange {
	out := &store.DatabaseChange{}
	for _, d := range c.dbs {
		out.Databases = append(out.Databases, d)
	}
	for _, u := range c.users {
		out.Users = append(out.Users, u)
	}
	return out
}

// stillOn refuses a change planned for a's node when the account has
// moved since (a password sealed to the old node's key is useless).
func stillOn(set *store.DatabaseSet, a *store.Account) error {
	if set.Account.Node != a.Node {
		return fmt.Errorf("account %s moved to another node meanwhile; try again: %w", a.Username, store.ErrNotYet)
	}
	return nil
}

// changeDatabases runs a database mutation for the caller: fn sees the
// account's databases and users (specs with their statuses) and adds the
// specs it changes to c, which are written with the audit event in one
// transaction (store.ChangeDatabases). Nothing waits for the node here.
func (r *Resolver) changeDatabases(ctx context.Context, p auth.Principal, a *store.Account, action, target string, detail map[string]string, fn func(set *store.DatabaseSet, c *dbChange) error) error {
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
		if err := fn(set, c); err != nil {
			return nil, err
		}
		ch := c.build()
		if len(ch.Databases)+len(ch.Users) > 0 && set.Account.Node == "" {
			return nil, fmt.Errorf("account %s is not placed on a node yet: %w", set.Account.Username, store.ErrNotYet)
		}
		return ch, nil
	}, ev)
}

// waitTimeout is how long a mutation waits for the node: the caller's
// wait, at most dbTaskTimeout, which is also the default.
func waitTimeout(wait *time.Duration) (time.Duration, error) {
	if wait == nil {
		return dbTaskTimeout, nil
	}
	if *wait < 0 {
		return 0, &validate.Error{Field: "wait", Reason: "must not be negative"}
	}
	return min(*wait, dbTaskTimeout), nil
}

// waitObject waits until the controller has recorded, in the status of an
// account's database (or user), what done asks for, or timeout passes, and
// returns that status (nil: none yet). It watches the status (the store's
// one watch per replica signals it) and writes nothing. A caller whose own
// deadline passes gets the status as it stands, as a timeout would.
func (r *Resolver) waitObject(ctx context.Context, account, name string, user bool, timeout time.Duration, done func(*store.ObjectStatus) bool) (*store.ObjectStatus, error) {
	st, err := r.Store.WaitDatabaseObject(ctx, account, name, user, timeout, func(st *store.ObjectStatus) bool {
		return timeout <= 0 || done(st)
	})
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return st, nil
	}
	return st, err
}

// observed reports whether a status holds the node's answer to generation
// gen or a later one (the controller records an answer and clears the
// task in one write).
func observed(gen int64) func(*store.ObjectStatus) bool {
	return func(st *store.ObjectStatus) bool {
		return st != nil && st.State != "" && st.ObservedGeneration >= gen
	}
}

// waitDatabases waits as waitObject does and returns the account's set as
// it then stands, for the payload.
func (r *Resolver) waitDatabases(ctx context.Context, account, name string, user bool, timeout time.Duration, done func(*store.ObjectStatus) bool) (*store.DatabaseSet, error) {
	if _, err := r.waitObject(ctx, account, name, user, timeout, done); err != nil {
		return nil, err
	}
	return r.Store.GetDatabases(context.WithoutCancel(ctx), account)
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
		return nil, fmt.Errorf("account %s is not placed on a node yet: %w", a.Username, store.ErrNotYet)
	}
	st, _, err := r.Store.GetNodeState(ctx, a.Node)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if st == nil || len(st.PublicKey) == 0 {
		return nil, fmt.Errorf("node %s has not connected yet, so a password cannot be sealed to it; try again when it is READY: %w", a.Node, store.ErrNotYet)
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

// userBusy refuses a change to a user whose previous change the node has not
// applied yet. The controller would queue it safely (one task per object
// in flight), but the mutation answers with the node's answer to its own
// change, and the API has always said CONFLICT here.
func userBusy(u *store.DatabaseUser) error {
	switch state, _ := u.State(); state {
	case store.DatabasePending:
		return fmt.Errorf("database user %s: the previous change is still being applied; try again shortly: %w", u.Name, store.ErrNotYet)
	case store.DatabaseDeleting:
		return fmt.Errorf("database user %s is being deleted: %w", u.Name, store.ErrConflict)
	}
	return nil
}

// state is d's state without its reason.
func state(d *store.Database) store.DatabaseState {
	st, _ := d.State()
	return st
}

func cloneUser(u *store.DatabaseUser) *store.DatabaseUser {
	c := *u
	c.Hosts = slices.Clone(u.Hosts)
	c.SealedPassword = slices.Clone(u.SealedPassword)
	c.SealedPasswordHash = slices.Clone(u.SealedPasswordHash)
	c.Grants = make([]store.DatabaseGrant, len(u.Grants))
	for i, g := range u.Grants {
		c.Grants[i] = store.DatabaseGrant{Database: g.Database, Privileges: slices.Clone(g.Privileges)}
	}
	return &c
}

// deletionState maps a deleted object's status onto the payload of its
// deletion: DELETED once dropped, FAILED with the node's reason, else
// DELETING (still running).
func deletionState(st *store.ObjectStatus, gen int64) (model.DatabaseState, *string) {
	switch {
	case st == nil || st.ObservedGeneration < gen:
		return model.DatabaseStateDeleting, nil
	case st.State == store.DatabaseDeleted:
		return model.DatabaseStateDeleted, nil
	case st.State == store.DatabaseFailed:
		return model.DatabaseStateFailed, strPtr(st.Reason)
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
		if info, ok := live[d.Engine+"/"+n]; ok && state(d) != store.DatabasePending {
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
