package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/protos/agentpb"
)

// Key prefixes of the database records (see the layout in store.go).
const (
	prefixDatabases = prefix + "databases/"
	prefixDBUsers   = prefix + "dbusers/"
	prefixDBSeq     = prefix + "dbseq/"
	prefixDBStatus  = prefix + "dbstatus/"
	prefixDBState   = prefix + "dbstate/"
)

// DatabaseState is where a database or database user is in its life. It is
// derived from the spec and the observed status (Database.State), never
// written by the API.
type DatabaseState string

const (
	// DatabasePending: the node has not applied the latest change yet.
	DatabasePending DatabaseState = "PENDING"
	DatabaseActive  DatabaseState = "ACTIVE"
	// DatabaseDeleting: the drop is wanted and not done yet; the record
	// goes away when it succeeds.
	DatabaseDeleting DatabaseState = "DELETING"
	// DatabaseDeleted: a dropped object's status (a tombstone that expires,
	// see tombstoneTTL), for the mutation waiting on it.
	DatabaseDeleted DatabaseState = "DELETED"
	// DatabaseFailed: the node could not apply the latest change; Reason
	// has its error.
	DatabaseFailed DatabaseState = "FAILED"
)

// Task actions a database or user status names as in flight.
const (
	DBTaskEnsure   = "ensure"
	DBTaskDrop     = "drop"
	DBTaskOptimize = "optimize"
)

// ObjectStatus is what the database controller last observed of one
// database or database user on its node. It lives under its own key
// (dbstate/), written by the controller only; the API writes the spec.
type ObjectStatus struct {
	// ObservedGeneration is the spec generation the node last answered
	// for; State and Reason are that answer (ACTIVE or FAILED, or DELETED
	// for a dropped object's tombstone).
	ObservedGeneration int64         `json:"observedGeneration"`
	State              DatabaseState `json:"state,omitempty"`
	Reason             string        `json:"reason,omitempty"`

	// The one task in flight for the object, if any. One at a time: tasks
	// for one node run concurrently, so two changes of one object in
	// flight could land in either order.
	TaskID         string `json:"taskId,omitempty"`
	TaskAction     string `json:"taskAction,omitempty"` // DBTaskEnsure, DBTaskDrop, DBTaskOptimize
	TaskGeneration int64  `json:"taskGeneration,omitempty"`
	// TaskPassword is the password generation the task in flight carries
	// (users; 0: none).
	TaskPassword int64 `json:"taskPassword,omitempty"`

	// PasswordGeneration is the user's password generation the node
	// applied: a newer one in the spec travels in the next ensure.
	PasswordGeneration int64 `json:"passwordGeneration,omitempty"`

	// Dump and DumpBytes: the verified dump a drop wrote (databases).
	Dump      string `json:"dump,omitempty"`
	DumpBytes int64  `json:"dumpBytes,omitempty"`

	// Optimized is the last optimize request carried out (Database.Optimize)
	// and the rest its outcome.
	Optimized      int64      `json:"optimized,omitempty"`
	OptimizeStatus TaskStatus `json:"optimizeStatus,omitempty"`
	OptimizeTables *int32     `json:"optimizeTables,omitempty"`
	OptimizeReason string     `json:"optimizeReason,omitempty"`

	UpdatedAt time.Time `json:"updatedAt,omitzero"`
}

// objectState derives an object's state from its spec and status.
func objectState(generation int64, deleted bool, st *ObjectStatus) (DatabaseState, string) {
	observed := st.State != "" && st.ObservedGeneration == generation
	switch {
	case deleted && observed && st.State == DatabaseFailed:
		return DatabaseFailed, st.Reason
	case deleted:
		return DatabaseDeleting, ""
	case observed:
		return st.State, st.Reason
	}
	return DatabasePending, ""
}

// legacy is the state a database or user record held in itself before
// they had a controller (spec and status in one record, no generation).
// Such a record is read as spec generation 1 with what it said as the
// status (adopt); the next write of the spec drops these fields.
type legacy struct {
	LegacyState  DatabaseState `json:"state,omitempty"`
	LegacyReason string        `json:"reason,omitempty"`
}

// adopt turns a record written before generations into generation 1 and
// its status; a record written since is left alone.
func (l *legacy) adopt(gen *int64, deleted *bool, st *ObjectStatus) {
	if *gen != 0 || l.LegacyState == "" {
		return
	}
	*gen = 1
	switch l.LegacyState {
	case DatabaseActive, DatabaseFailed:
		*st = ObjectStatus{ObservedGeneration: 1, State: l.LegacyState, Reason: l.LegacyReason}
	case DatabaseDeleting:
		*deleted = true // dropped by the controller, as it was about to be
	}
	// PENDING: unobserved, so the controller sends the ensure again.
	*l = legacy{}
}

// Database is one database of an account on the account's node: the
// desired spec the API writes (with the quota and uniqueness checks in the
// same transaction), and in Status what the controller observed.
type Database struct {
	Account string `json:"account"`
	// Name is the full name, "<username>_<suffix>".
	Name   string `json:"name"`
	Owner  string `json:"owner"`  // the account's username
	Engine string `json:"engine"` // validate.EngineMariaDB or EnginePostgreSQL
	Node   string `json:"node"`

	// Generation counts the API's changes to the spec; the controller
	// converges the node to the newest one. 0: a record no controller acts
	// on (written by hand or by a test).
	Generation int64 `json:"generation,omitempty"`
	// Deleted: dump and drop the database; the record goes once the drop
	// succeeded.
	Deleted bool `json:"deleted,omitempty"`
	// Optimize counts optimizeDatabase requests. A one-shot operation, not
	// a change of the spec: it leaves Generation, and so the state, alone.
	Optimize int64 `json:"optimize,omitempty"`

	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`

	// Status is read along with the spec from its own key; writing a
	// spec never writes it.
	Status ObjectStatus `json:"-"`

	legacy
}

// State is the database's state and its reason (FAILED).
func (d *Database) State() (DatabaseState, string) {
	return objectState(d.Generation, d.Deleted, &d.Status)
}

// DatabaseGrant is the exact set of privileges a user holds on one database
// (canonical names, as validate.DatabasePrivileges returns them).
type DatabaseGrant struct {
	Database   string   `json:"database"`
	Privileges []string `json:"privileges"`
}

// DatabaseUser is one database user of an account with its grants: the
// desired spec, and in Status what the controller observed. Its password
// is never kept in the clear: the spec holds it sealed to the node's key
// (pki.SealDER), which only the node can open.
type DatabaseUser struct {
	Account string          `json:"account"`
	Name    string          `json:"name"`
	Owner   string          `json:"owner"`
	Engine  string          `json:"engine"`
	Node    string          `json:"node"`
	Hosts   []string        `json:"hosts,omitempty"` // besides localhost
	Grants  []DatabaseGrant `json:"grants,omitempty"`

	Generation int64 `json:"generation,omitempty"`
	Deleted    bool  `json:"deleted,omitempty"`
	// SealedPassword is the password last set, sealed to Node's key, and
	// PasswordGeneration the generation that set it: the controller sends
	// it with the next ensure until the node has applied it.
	SealedPassword []byte `json:"sealedPassword,omitempty"`
	// SealedPasswordHash is a hash made elsewhere (the node the user moved
	// from, a cPanel archive), sealed to Node's key with
	// agentpb.DatabasePasswordHashSealContext; it stands for
	// SealedPassword (at most one is set) and is installed as it is.
	SealedPasswordHash []byte `json:"sealedPasswordHash,omitempty"`
	PasswordGeneration int64  `json:"passwordGeneration,omitempty"`

	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`

	Status ObjectStatus `json:"-"`

	legacy
}

// State is the user's state and its reason (FAILED).
func (u *DatabaseUser) State() (DatabaseState, string) {
	return objectState(u.Generation, u.Deleted, &u.Status)
}

// GrantIndex returns the index of the user's grant on database, or -1.
func (u *DatabaseUser) GrantIndex(database string) int {
	for i, g := range u.Grants {
		if g.Database == database {
			return i
		}
	}
	return -1
}

func databasePrefix(account string) string    { return prefixDatabases + account + "/" }
func databaseKey(account, name string) string { return databasePrefix(account) + name }
func dbUserPrefix(account string) string      { return prefixDBUsers + account + "/" }
func dbUserKey(account, name string) string   { return dbUserPrefix(account) + name }
func databaseSeqKey(account string) string    { return prefixDBSeq + account }
func dbStatusKey(account string) string       { return prefixDBStatus + account }
func dbStatePrefix(account string) string     { return prefixDBState + account + "/" }

// Observed statuses: dbstate/<account>/db/<name> and .../user/<name>.
func databaseStateKey(account, name string) string { return dbStatePrefix(account) + "db/" + name }
func dbUserStateKey(account, name string) string   { return dbStatePrefix(account) + "user/" + name }

// dbDoneKind is the kind of the done notices of database tasks
// (done/database/<account>/<task>): the controller's key is the account.
const dbDoneKind = "database"

func dbDonePrefix(account string) string { return prefixDone + dbDoneKind + "/" + account + "/" }

// databaseCleanupOps forget an account's database records; the account's
// deletion (FinishAccountDeletion) commits them with its own removal.
//
// They do not drop the databases and users on the node: that needs the
// node to act after the records are gone, and one task per object does not
// fit etcd's operation limit next to the account's own deletion. Until an
// agent action drops everything an owner has on an engine, the account's
// databases and users stay on its node after the account is deleted.
func databaseCleanupOps(account string) []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpDelete(databasePrefix(account), clientv3.WithPrefix()),
		clientv3.OpDelete(dbUserPrefix(account), clientv3.WithPrefix()),
		clientv3.OpDelete(databaseSeqKey(account)),
		clientv3.OpDelete(dbStatusKey(account)),
		clientv3.OpDelete(dbStatePrefix(account), clientv3.WithPrefix()),
		clientv3.OpDelete(dbDonePrefix(account), clientv3.WithPrefix()),
	}
}

// DatabaseSet is an account's databases and database users, specs with
// their observed statuses, as read at one revision.
type DatabaseSet struct {
	Account   *Account
	Databases map[string]*Database
	Users     map[string]*DatabaseUser
}

// DatabaseChange is the specs a ChangeDatabases callback writes. The API
// never writes a status or a task: the database controller turns the
// specs into tasks and records their outcomes.
type DatabaseChange struct {
	Databases []*Database
	Users     []*DatabaseUser
}

func (c *DatabaseChange) empty() bool {
	return c == nil || len(c.Databases)+len(c.Users) == 0
}

// GetDatabases reads an account's databases and users at one revision.
func (s *Store) GetDatabases(ctx context.Context, account string) (*DatabaseSet, error) {
	r, err := s.readDatabases(ctx, account)
	if err != nil {
		return nil, err
	}
	return r.set, nil
}

// databasesRead is an account's database records at one revision: the
// set, the revisions of the account and of its sequence key (0: none), and
// the done notices of its finished tasks.
type databasesRead struct {
	set          *DatabaseSet
	arev, seqRev int64
	done         []string // keys
}

// readDatabases reads the account, its databases and users with their
// statuses, and its done notices, in one transaction.
func (s *Store) readDatabases(ctx context.Context, account string) (*databasesRead, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(accountKey(account)),
		clientv3.OpGet(databaseSeqKey(account)),
		clientv3.OpGet(databasePrefix(account), clientv3.WithPrefix()),
		clientv3.OpGet(dbUserPrefix(account), clientv3.WithPrefix()),
		clientv3.OpGet(dbStatePrefix(account), clientv3.WithPrefix()),
		clientv3.OpGet(dbDonePrefix(account), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read databases of %s: %w", account, err)
	}
	akvs := resp.Responses[0].GetResponseRange().Kvs
	if len(akvs) == 0 {
		return nil, fmt.Errorf("account %q: %w", account, ErrNotFound)
	}
	a, err := DecodeAccount(akvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("decode account %s: %w", account, err)
	}
	r := &databasesRead{arev: akvs[0].ModRevision}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		r.seqRev = kvs[0].ModRevision
	}
	set := &DatabaseSet{Account: a, Databases: map[string]*Database{}, Users: map[string]*DatabaseUser{}}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		d, err := decodeJSON[Database](kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		d.adopt(&d.Generation, &d.Deleted, &d.Status)
		set.Databases[d.Name] = d
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		u, err := decodeJSON[DatabaseUser](kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		u.adopt(&u.Generation, &u.Deleted, &u.Status)
		set.Users[u.Name] = u
	}
	for _, kv := range resp.Responses[4].GetResponseRange().Kvs {
		st, err := decodeJSON[ObjectStatus](kv.Key, kv.Value)
		if err != nil {
			return nil, err
		}
		kind, name, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), dbStatePrefix(account)), "/")
		switch kind {
		case "db":
			if d := set.Databases[name]; d != nil {
				d.Status = *st
			}
		case "user":
			if u := set.Users[name]; u != nil {
				u.Status = *st
			}
		}
	}
	for _, kv := range resp.Responses[5].GetResponseRange().Kvs {
		r.done = append(r.done, string(kv.Key))
	}
	r.set = set
	return r, nil
}

// ChangeDatabases applies fn to an account's databases and users and
// commits the specs it returns in one transaction with audit. Every change
// to an account's databases — the API's specs and the controller's
// statuses and tasks — bumps one per-account sequence key, and the
// transaction compares it and the account record: fn decides on a
// consistent picture (the plan's database count, whether a database a
// grant names exists, whether a user's change is still being applied),
// and a concurrent change on any replica makes the commit fail and fn run
// again on the new state. So a quota is never over-spent, and on refusal
// (fn's error) nothing is written. fn returning an empty change writes
// nothing. audit with an empty Action is not written.
//
// A spec whose name was not in the set is a new object: its old status
// (a tombstone of a dropped namesake) is removed in the same transaction,
// so that it never passes for the new object's.
func (s *Store) ChangeDatabases(ctx context.Context, account, createdBy string, fn func(*DatabaseSet) (*DatabaseChange, error), audit AuditEvent) error {
	for {
		r, err := s.readDatabases(ctx, account)
		if err != nil {
			return err
		}
		set := r.set
		ch, err := fn(set)
		if err != nil {
			return err
		}
		if ch.empty() {
			return nil
		}
		now := time.Now().UTC()
		var ops []clientv3.Op
		for _, d := range ch.Databases {
			if _, ok := set.Databases[d.Name]; !ok {
				ops = append(ops, clientv3.OpDelete(databaseStateKey(account, d.Name)))
			}
			d.Account, d.UpdatedAt = account, now
			if d.CreatedAt.IsZero() {
				d.CreatedAt = now
			}
			ops = append(ops, clientv3.OpPut(databaseKey(account, d.Name), mustJSON(d)))
		}
		for _, u := range ch.Users {
			if _, ok := set.Users[u.Name]; !ok {
				ops = append(ops, clientv3.OpDelete(dbUserStateKey(account, u.Name)))
			}
			u.Account, u.UpdatedAt = account, now
			if u.CreatedAt.IsZero() {
				u.CreatedAt = now
			}
			ops = append(ops, clientv3.OpPut(dbUserKey(account, u.Name), mustJSON(u)))
		}
		ops = append(ops, seqPut(account, DBChangedSpec, now))
		if audit.Action != "" {
			ops = append(ops, auditPut(audit))
		}
		if len(ops) > MaxTxnOps {
			return fmt.Errorf("change to the databases of %s needs %d operations; at most %d fit in one transaction", set.Account.Username, len(ops), MaxTxnOps)
		}
		ok, err := s.commitDatabases(ctx, account, r, ops)
		if err != nil {
			return fmt.Errorf("change databases of %s: %w", set.Account.Username, err)
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// commitDatabases commits ops if neither the account nor its database
// sequence key changed since r was read.
func (s *Store) commitDatabases(ctx context.Context, account string, r *databasesRead, ops []clientv3.Op) (bool, error) {
	seqCmp := absent(databaseSeqKey(account))
	if r.seqRev != 0 {
		seqCmp = unchanged(databaseSeqKey(account), r.seqRev)
	}
	resp, err := s.cli.Txn(ctx).If(unchanged(accountKey(account), r.arev), seqCmp).Then(ops...).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// EnqueueQueryTask writes a read-only task (a listing) for node whose
// record and queue entry expire after ttl: the caller reads the result and
// forgets the task (ForgetTask), and a query the node never picked up does
// not wait in its queue for ever. Queries are not audited.
func (s *Store) EnqueueQueryTask(ctx context.Context, node string, spec *agentpb.Task, action, createdBy string, ttl time.Duration) (*Task, error) {
	lease, err := s.cli.Grant(ctx, int64(max(ttl, time.Second)/time.Second))
	if err != nil {
		return nil, fmt.Errorf("enqueue %s for %q: %w", action, node, err)
	}
	t, _, err := taskOps(node, spec, "", createdBy, nil, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	t.Action = action
	t.Query = true
	ops := []clientv3.Op{
		clientv3.OpPut(taskKey(t.ID), mustJSON(t), clientv3.WithLease(lease.ID)),
		clientv3.OpPut(queueKey(node, t.ID), string(t.Spec), clientv3.WithLease(lease.ID)),
	}
	resp, err := s.cli.Txn(ctx).If(present(nodeKey(node))).Then(ops...).Commit()
	if err != nil {
		return nil, fmt.Errorf("enqueue %s for %q: %w", action, node, err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("node %q: %w", node, ErrNotFound)
	}
	return t, nil
}

// ForgetTask deletes a task's record and queue entry (a query task whose
// result was read, or one that is no longer wanted).
func (s *Store) ForgetTask(ctx context.Context, t *Task) error {
	_, err := s.cli.Txn(ctx).Then(clientv3.OpDelete(taskKey(t.ID)), clientv3.OpDelete(queueKey(t.Node, t.ID))).Commit()
	if err != nil {
		return fmt.Errorf("forget task %s: %w", t.ID, err)
	}
	return nil
}

// DatabaseStatus is what an account's node last reported of its databases:
// sizes, tables and users, per engine. The leader keeps it (a periodic
// listing per account, and one after every change to the account's
// databases); API reads show it with its age and never ask the node
// themselves.
type DatabaseStatus struct {
	Account string `json:"account"`
	Node    string `json:"node"`
	// Engines maps an engine (validate.EngineMariaDB, ...) to its report.
	Engines map[string]EngineDatabases `json:"engines"`
}

// EngineDatabases is one engine's listing on the node.
type EngineDatabases struct {
	MeasuredAt time.Time      `json:"measuredAt"`
	Databases  []DatabaseSize `json:"databases"`
}

// DatabaseSize is one database as the node listed it.
type DatabaseSize struct {
	Name      string   `json:"name"`
	SizeBytes int64    `json:"sizeBytes"`
	Tables    int64    `json:"tables"`
	Users     []string `json:"users,omitempty"`
}

// PutDatabaseStatus records a listing, merged into the account's status
// engine by engine, unless the account is gone (its deletion removes the
// status with its other database records).
func (s *Store) PutDatabaseStatus(ctx context.Context, account, node, engine string, list EngineDatabases) error {
	for {
		cur, rev, err := getJSON[DatabaseStatus](ctx, s.cli, dbStatusKey(account))
		if err != nil && err != ErrNotFound {
			return err
		}
		if cur == nil || cur.Node != node {
			cur = &DatabaseStatus{Account: account, Node: node}
		}
		if cur.Engines == nil {
			cur.Engines = map[string]EngineDatabases{}
		}
		cur.Engines[engine] = list
		cmp := absent(dbStatusKey(account))
		if rev != 0 {
			cmp = unchanged(dbStatusKey(account), rev)
		}
		resp, err := s.cli.Txn(ctx).If(present(accountKey(account)), cmp).
			Then(clientv3.OpPut(dbStatusKey(account), mustJSON(cur))).Commit()
		if err != nil {
			return fmt.Errorf("record database status of %s: %w", account, err)
		}
		if resp.Succeeded {
			return nil
		}
		if _, _, err := s.GetAccount(ctx, account); err != nil {
			return err // gone: nothing to record
		}
	}
}

// GetDatabaseStatus returns an account's database status, nil when none
// was recorded yet.
func (s *Store) GetDatabaseStatus(ctx context.Context, account string) (*DatabaseStatus, error) {
	st, _, err := getJSON[DatabaseStatus](ctx, s.cli, dbStatusKey(account))
	if err == ErrNotFound {
		return nil, nil
	}
	return st, err
}
