package store

import (
	"context"
	"errors"
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
)

// DatabaseState is where a database or database user is in its life.
type DatabaseState string

const (
	// DatabasePending: the node has not applied the latest change yet.
	DatabasePending DatabaseState = "PENDING"
	DatabaseActive  DatabaseState = "ACTIVE"
	// DatabaseDeleting: the drop task is queued or running; the record goes
	// away when it succeeds.
	DatabaseDeleting DatabaseState = "DELETING"
	// DatabaseFailed: the node could not apply the latest change; Reason
	// has its error.
	DatabaseFailed DatabaseState = "FAILED"
)

// Database is one database of an account on the account's node: the
// desired state the API writes before any work starts, and the outcome of
// the task that last changed it.
type Database struct {
	Account string `json:"account"`
	// Name is the full name, "<username>_<suffix>".
	Name   string `json:"name"`
	Owner  string `json:"owner"`  // the account's username
	Engine string `json:"engine"` // validate.EngineMariaDB or EnginePostgreSQL
	Node   string `json:"node"`

	State     DatabaseState `json:"state"`
	Reason    string        `json:"reason,omitempty"`
	TaskID    string        `json:"taskId,omitempty"`
	CreatedAt time.Time     `json:"createdAt"`
	UpdatedAt time.Time     `json:"updatedAt"`
}

// DatabaseGrant is the exact set of privileges a user holds on one database
// (canonical names, as validate.DatabasePrivileges returns them).
type DatabaseGrant struct {
	Database   string   `json:"database"`
	Privileges []string `json:"privileges"`
}

// DatabaseUser is one database user of an account with its grants. Its
// password is never stored: it travels once, sealed to the node's key, in
// the task that sets it.
type DatabaseUser struct {
	Account string          `json:"account"`
	Name    string          `json:"name"`
	Owner   string          `json:"owner"`
	Engine  string          `json:"engine"`
	Node    string          `json:"node"`
	Hosts   []string        `json:"hosts,omitempty"` // besides localhost
	Grants  []DatabaseGrant `json:"grants,omitempty"`

	State     DatabaseState `json:"state"`
	Reason    string        `json:"reason,omitempty"`
	TaskID    string        `json:"taskId,omitempty"`
	CreatedAt time.Time     `json:"createdAt"`
	UpdatedAt time.Time     `json:"updatedAt"`
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
	}
}

// DatabaseSet is an account's databases and database users as read at one
// revision, for a ChangeDatabases callback to decide on.
type DatabaseSet struct {
	Account   *Account
	Databases map[string]*Database
	Users     map[string]*DatabaseUser
}

// DatabaseTask is a task a ChangeDatabases callback enqueues for the
// account's node.
type DatabaseTask struct {
	Spec *agentpb.Task
	// Action names the task in its record ("ensureDatabase", ...).
	Action string
	// Database or User names the record in the change whose TaskID is set
	// to this task's id ("" for none).
	Database, User string
}

// DatabaseChange is what a ChangeDatabases callback writes.
type DatabaseChange struct {
	Databases       []*Database
	Users           []*DatabaseUser
	DeleteDatabases []string
	DeleteUsers     []string
	Tasks           []DatabaseTask
}

func (c *DatabaseChange) empty() bool {
	return c == nil || len(c.Databases)+len(c.Users)+len(c.DeleteDatabases)+len(c.DeleteUsers)+len(c.Tasks) == 0
}

// GetDatabases reads an account's databases and users at one revision.
func (s *Store) GetDatabases(ctx context.Context, account string) (*DatabaseSet, error) {
	set, _, _, err := s.readDatabases(ctx, account)
	return set, err
}

// readDatabases reads the account, its databases and users, and the
// revisions of the account and of its database sequence key (0: none).
func (s *Store) readDatabases(ctx context.Context, account string) (*DatabaseSet, int64, int64, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(accountKey(account)),
		clientv3.OpGet(databaseSeqKey(account)),
		clientv3.OpGet(databasePrefix(account), clientv3.WithPrefix()),
		clientv3.OpGet(dbUserPrefix(account), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read databases of %s: %w", account, err)
	}
	akvs := resp.Responses[0].GetResponseRange().Kvs
	if len(akvs) == 0 {
		return nil, 0, 0, fmt.Errorf("account %q: %w", account, ErrNotFound)
	}
	a, err := DecodeAccount(akvs[0].Value)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("decode account %s: %w", account, err)
	}
	var seqRev int64
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		seqRev = kvs[0].ModRevision
	}
	set := &DatabaseSet{Account: a, Databases: map[string]*Database{}, Users: map[string]*DatabaseUser{}}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		d, err := decodeJSON[Database](kv.Key, kv.Value)
		if err != nil {
			return nil, 0, 0, err
		}
		set.Databases[d.Name] = d
	}
	for _, kv := range resp.Responses[3].GetResponseRange().Kvs {
		u, err := decodeJSON[DatabaseUser](kv.Key, kv.Value)
		if err != nil {
			return nil, 0, 0, err
		}
		set.Users[u.Name] = u
	}
	return set, akvs[0].ModRevision, seqRev, nil
}

// ChangeDatabases applies fn to an account's databases and users and
// commits what it returns — records, deletions and the tasks that carry
// them out — in one transaction with audit. Every change to an account's
// databases bumps one per-account sequence key, and the transaction
// compares it and the account record: fn decides on a consistent picture
// (the plan's database count, whether a database a grant names exists, no
// task of a user still running), and a concurrent change on any replica
// makes the commit fail and fn run again on the new state. So a quota is
// never over-spent, and on refusal (fn's error) nothing is written. fn
// returning an empty change writes nothing. audit with an empty Action is
// not written (internal bookkeeping).
func (s *Store) ChangeDatabases(ctx context.Context, account, createdBy string, fn func(*DatabaseSet) (*DatabaseChange, error), audit AuditEvent) ([]*Task, error) {
	for {
		set, arev, seqRev, err := s.readDatabases(ctx, account)
		if err != nil {
			return nil, err
		}
		ch, err := fn(set)
		if err != nil {
			return nil, err
		}
		if ch.empty() {
			return nil, nil
		}
		now := time.Now().UTC()
		var ops []clientv3.Op
		tasks := make([]*Task, 0, len(ch.Tasks))
		for _, dt := range ch.Tasks {
			if set.Account.Node == "" {
				return nil, fmt.Errorf("account %s is not placed on a node yet: %w", set.Account.Username, ErrConflict)
			}
			t, tops, err := taskOps(set.Account.Node, dt.Spec, "", createdBy, nil, now)
			if err != nil {
				return nil, err
			}
			t.Action = dt.Action
			tops[0] = clientv3.OpPut(taskKey(t.ID), mustJSON(t))
			ops = append(ops, tops...)
			tasks = append(tasks, t)
			for _, d := range ch.Databases {
				if dt.Database != "" && d.Name == dt.Database {
					d.TaskID = t.ID
				}
			}
			for _, u := range ch.Users {
				if dt.User != "" && u.Name == dt.User {
					u.TaskID = t.ID
				}
			}
		}
		for _, d := range ch.Databases {
			d.Account, d.UpdatedAt = account, now
			if d.CreatedAt.IsZero() {
				d.CreatedAt = now
			}
			ops = append(ops, clientv3.OpPut(databaseKey(account, d.Name), mustJSON(d)))
		}
		for _, u := range ch.Users {
			u.Account, u.UpdatedAt = account, now
			if u.CreatedAt.IsZero() {
				u.CreatedAt = now
			}
			ops = append(ops, clientv3.OpPut(dbUserKey(account, u.Name), mustJSON(u)))
		}
		for _, n := range ch.DeleteDatabases {
			ops = append(ops, clientv3.OpDelete(databaseKey(account, n)))
		}
		for _, n := range ch.DeleteUsers {
			ops = append(ops, clientv3.OpDelete(dbUserKey(account, n)))
		}
		ops = append(ops, clientv3.OpPut(databaseSeqKey(account), now.Format(time.RFC3339Nano)))
		if audit.Action != "" {
			ops = append(ops, auditPut(audit))
		}
		if len(ops) > MaxTxnOps {
			return nil, fmt.Errorf("change to the databases of %s needs %d operations; at most %d fit in one transaction", set.Account.Username, len(ops), MaxTxnOps)
		}
		seqCmp := absent(databaseSeqKey(account))
		if seqRev != 0 {
			seqCmp = unchanged(databaseSeqKey(account), seqRev)
		}
		resp, err := s.cli.Txn(ctx).If(unchanged(accountKey(account), arev), seqCmp).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("change databases of %s: %w", set.Account.Username, err)
		}
		if resp.Succeeded {
			return tasks, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
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

// DatabaseEngines lists, for every account that has databases, the engines
// they use.
func (s *Store) DatabaseEngines(ctx context.Context) (map[string]map[string]bool, error) {
	out := map[string]map[string]bool{}
	key, end := prefixDatabases, clientv3.GetPrefixRangeEnd(prefixDatabases)
	for {
		resp, err := s.cli.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(1000))
		if err != nil {
			return nil, fmt.Errorf("list databases: %w", err)
		}
		for _, kv := range resp.Kvs {
			d, err := decodeJSON[Database](kv.Key, kv.Value)
			if err != nil {
				continue
			}
			if out[d.Account] == nil {
				out[d.Account] = map[string]bool{}
			}
			out[d.Account][d.Engine] = true
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// WatchDatabaseChanges yields the id of each account whose databases or
// database users change, for the leader's status refresh. The channel is
// closed when ctx ends or the watch breaks (the caller starts over).
func (s *Store) WatchDatabaseChanges(ctx context.Context) <-chan string {
	out := make(chan string, 64)
	go func() {
		defer close(out)
		wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), prefixDBSeq, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithFilterDelete())
		for resp := range wch {
			if resp.Err() != nil {
				return
			}
			for _, ev := range resp.Events {
				select {
				case out <- strings.TrimPrefix(string(ev.Kv.Key), prefixDBSeq):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// SettleDatabases records in set, and returns as a change, the outcome of
// every finished task that a PENDING or DELETING record waits on: ACTIVE
// or FAILED with the node's error, and for a finished deletion the
// record's removal. It only reads (the tasks); set is updated in place so
// that a caller decides on current states, and it writes nothing itself.
func (s *Store) SettleDatabases(ctx context.Context, set *DatabaseSet) (*DatabaseChange, error) {
	ch := &DatabaseChange{}
	outcome := func(st DatabaseState, taskID string) (*Task, error) {
		if (st != DatabasePending && st != DatabaseDeleting) || taskID == "" {
			return nil, nil
		}
		t, _, err := s.GetTask(ctx, taskID)
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil || t.Status == TaskPending {
			return nil, err
		}
		return t, nil
	}
	for name, d := range set.Databases {
		t, err := outcome(d.State, d.TaskID)
		if err != nil {
			return nil, err
		}
		if t == nil {
			continue
		}
		switch {
		case d.State == DatabaseDeleting && t.Status == TaskSucceeded:
			delete(set.Databases, name)
			ch.DeleteDatabases = append(ch.DeleteDatabases, name)
			continue
		case t.Status == TaskSucceeded:
			d.State, d.Reason = DatabaseActive, ""
		case d.State == DatabaseDeleting:
			d.State, d.Reason = DatabaseFailed, "delete failed, nothing dropped: "+t.Error
		default:
			d.State, d.Reason = DatabaseFailed, t.Error
		}
		ch.Databases = append(ch.Databases, d)
	}
	for name, u := range set.Users {
		t, err := outcome(u.State, u.TaskID)
		if err != nil {
			return nil, err
		}
		if t == nil {
			continue
		}
		switch {
		case u.State == DatabaseDeleting && t.Status == TaskSucceeded:
			delete(set.Users, name)
			ch.DeleteUsers = append(ch.DeleteUsers, name)
			continue
		case t.Status == TaskSucceeded:
			u.State, u.Reason = DatabaseActive, ""
		default:
			u.State, u.Reason = DatabaseFailed, t.Error
		}
		ch.Users = append(ch.Users, u)
	}
	return ch, nil
}

// SettleAccountDatabases records the outcome of an account's finished
// database tasks (SettleDatabases) and returns the set as it then stands.
// Internal bookkeeping: not audited.
func (s *Store) SettleAccountDatabases(ctx context.Context, account string) (*DatabaseSet, error) {
	var out *DatabaseSet
	_, err := s.ChangeDatabases(ctx, account, "", func(set *DatabaseSet) (*DatabaseChange, error) {
		out = set
		return s.SettleDatabases(ctx, set)
	}, AuditEvent{})
	return out, err
}
