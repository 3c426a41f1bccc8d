package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/protos/agentpb"
)

// Key prefixes of the database records (see the layout in store.go).
const (
	prefixDatabases = prefix + "databases/"
	prefixDBUsers   = prefix + "dbusers/"
	prefixDBSeq     = prefix + "dbseq/"
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
