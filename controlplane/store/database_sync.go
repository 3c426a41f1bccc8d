package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/protos/agentpb"
)

// The database controller's side of the records: it reads an account's
// specs with their statuses and the tasks they wait on, and writes back
// statuses, the removal of dropped objects and the tasks that converge the
// rest, in one transaction on the account's sequence key (see
// ChangeDatabases, which the API writes through).

// The kinds the database controllers follow, named by account: every
// change of an account's database records bumps its sequence key, and
// every finished database task leaves a done notice.
var (
	KindDatabaseChanges  = Kind{label: "database-changes", prefix: prefixDBSeq}
	KindDatabaseOutcomes = Kind{label: "database-outcomes", prefix: prefixDone + dbDoneKind + "/", name: firstSegment}
)

// What bumped an account's database sequence key, as its value says: the
// followers of KindDatabaseChanges queue only what concerns them (the
// controller skips its own writes, the status refresh waits for the
// node's answers).
const (
	DBChangedSpec   = "spec"   // the API changed a spec
	DBChangedTasks  = "tasks"  // the controller wrote tasks only
	DBChangedStatus = "status" // the controller recorded a node's answer
)

func seqPut(account, change string, now time.Time) clientv3.Op {
	return clientv3.OpPut(databaseSeqKey(account), change+" "+now.Format(time.RFC3339Nano))
}

// DatabaseChangeOf says what a KindDatabaseChanges event changed: one of
// the DBChanged* constants, "" for a deletion. A value without one (written
// before they existed) counts as a spec change.
func DatabaseChangeOf(ev Event) string {
	if ev.Deleted {
		return ""
	}
	change, _, ok := strings.Cut(string(ev.Value), " ")
	switch {
	case !ok:
		return DBChangedSpec
	case change == DBChangedTasks || change == DBChangedStatus:
		return change
	}
	return DBChangedSpec
}

// tombstoneTTL is how long a dropped object's status (DELETED, with its
// dump) outlives it: long enough for the mutation waiting on the drop to
// read it, short enough that deleted names leave nothing behind.
const tombstoneTTL = 10 * time.Minute

// DatabaseTask is a task the controller writes for the account's node.
type DatabaseTask struct {
	Spec *agentpb.Task
	// Database or User names the object whose status is set to wait on
	// this task (its TaskID), in the DatabaseSync the task is part of.
	Database, User string
}

// DatabaseSync is what the database controller writes for one account.
type DatabaseSync struct {
	// Databases and Users are status writes, by object name.
	Databases map[string]*ObjectStatus
	Users     map[string]*ObjectStatus
	// DroppedDatabases and DroppedUsers are objects whose drop succeeded:
	// their spec is removed, and their status (in Databases or Users,
	// State DELETED) expires after tombstoneTTL.
	DroppedDatabases []string
	DroppedUsers     []string
	Tasks            []DatabaseTask
	// Answered: the sync recorded at least one node's answer (an outcome,
	// a drop), which the status refresh follows; a sync that only wrote
	// tasks is followed by nobody.
	Answered bool
}

// NewDatabaseSync returns an empty DatabaseSync.
func NewDatabaseSync() *DatabaseSync {
	return &DatabaseSync{Databases: map[string]*ObjectStatus{}, Users: map[string]*ObjectStatus{}}
}

func (c *DatabaseSync) empty() bool {
	return len(c.Databases)+len(c.Users)+len(c.DroppedDatabases)+len(c.DroppedUsers)+len(c.Tasks) == 0
}

// TaskLost stands, in SyncDatabases' finished map, for a task a status
// waits on whose record is gone: the controller writes it again.
var TaskLost = &Task{Status: TaskFailed, Error: "task record lost"}

// SyncDatabases runs the database controller's fn on an account's set and
// on the tasks its statuses wait on that have finished (by id; TaskLost
// for a record that is gone), and commits what fn returns. The done
// notices of the account's finished tasks are consumed in the same
// transaction: fn saw every finished task. A concurrent change (the API's
// or another sync's) makes fn run again on the new state. An account that
// is gone is not an error: there is nothing left to converge, and its
// late notices are deleted.
func (s *Store) SyncDatabases(ctx context.Context, account string, fn func(*DatabaseSet, map[string]*Task) (*DatabaseSync, error)) error {
	lastRound := math.MaxInt // operations left when a part was last committed
	for {
		r, err := s.readDatabases(ctx, account)
		if errors.Is(err, ErrNotFound) {
			// A task that finished after the account's deletion left a
			// notice nothing else would consume.
			if _, err := s.cli.Delete(ctx, dbDonePrefix(account), clientv3.WithPrefix()); err != nil {
				return fmt.Errorf("forget database outcomes of %s: %w", account, err)
			}
			return nil
		}
		if err != nil {
			return err
		}
		finished := map[string]*Task{}
		waiting := func(st *ObjectStatus) error {
			if st.TaskID == "" {
				return nil
			}
			t, _, err := s.GetTask(ctx, st.TaskID)
			switch {
			case errors.Is(err, ErrNotFound):
				finished[st.TaskID] = TaskLost
			case err != nil:
				return err
			case t.Status != TaskPending:
				finished[st.TaskID] = t
			}
			return nil
		}
		for _, d := range r.set.Databases {
			if err := waiting(&d.Status); err != nil {
				return err
			}
		}
		for _, u := range r.set.Users {
			if err := waiting(&u.Status); err != nil {
				return err
			}
		}
		ch, err := fn(r.set, finished)
		if err != nil {
			return err
		}
		// A sync too large for one transaction (many objects changed while
		// no leader ran) commits a part and goes round again: fn, run on
		// what the part wrote, returns the rest.
		done, partial := r.done, 0 // partial: operations left when committing a part
		if n := ch.opCount() + len(done); n > MaxTxnOps {
			if n >= lastRound {
				return fmt.Errorf("sync of the databases of %s makes no progress: %d operations left", account, n)
			}
			partial = n
			ch, done = ch.firstPart(r.set, done, MaxTxnOps)
		}
		ops, err := s.syncOps(ctx, account, r.set, ch)
		if err != nil {
			return err
		}
		for _, k := range done {
			ops = append(ops, clientv3.OpDelete(k))
		}
		if len(ops) == 0 {
			return nil
		}
		if len(ops) > MaxTxnOps {
			return fmt.Errorf("sync of the databases of %s needs %d operations; at most %d fit in one transaction", account, len(ops), MaxTxnOps)
		}
		ok, err := s.commitDatabases(ctx, account, r, ops)
		if err != nil {
			return fmt.Errorf("sync databases of %s: %w", account, err)
		}
		switch {
		case ok && partial == 0:
			return nil
		case ok:
			lastRound = partial
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// opCount is how many etcd operations syncOps makes of c.
func (c *DatabaseSync) opCount() int {
	if c == nil || c.empty() {
		return 0
	}
	// A status each, a task record and queue entry per task, a delete per
	// drop, and the sequence key.
	return len(c.Databases) + len(c.Users) + 2*len(c.Tasks) + len(c.DroppedDatabases) + len(c.DroppedUsers) + 1
}

// firstPart returns the part of c that fits in budget operations with the
// done notices it consumes: whole objects (status, tasks, drop) in name
// order, each with the notice of the task its status recorded, and the
// notices no object waits on. What is left out stays as it was, notices
// included, for the next round.
func (c *DatabaseSync) firstPart(set *DatabaseSet, done []string, budget int) (*DatabaseSync, []string) {
	noticeOf := map[string]string{} // task id -> notice key
	for _, k := range done {
		noticeOf[k[strings.LastIndexByte(k, '/')+1:]] = k
	}
	waitedOn := func(user bool, name string) string {
		if user {
			if u := set.Users[name]; u != nil {
				return u.Status.TaskID
			}
		} else if d := set.Databases[name]; d != nil {
			return d.Status.TaskID
		}
		return ""
	}
	var orphans []string
	waited := map[string]bool{}
	for _, d := range set.Databases {
		waited[d.Status.TaskID] = true
	}
	for _, u := range set.Users {
		waited[u.Status.TaskID] = true
	}
	for id, k := range noticeOf {
		if !waited[id] {
			orphans = append(orphans, k)
		}
	}
	slices.Sort(orphans)
	budget-- // the sequence key
	part := NewDatabaseSync()
	part.Answered = c.Answered
	var notices []string
	for _, k := range orphans {
		if len(notices) >= budget/2 {
			break
		}
		notices = append(notices, k)
	}
	budget -= len(notices)
	take := func(user bool, name string, st *ObjectStatus) bool {
		var tasks []DatabaseTask
		for _, dt := range c.Tasks {
			if (user && dt.User == name) || (!user && dt.Database == name) {
				tasks = append(tasks, dt)
			}
		}
		dropped := slices.Contains(c.DroppedDatabases, name)
		if user {
			dropped = slices.Contains(c.DroppedUsers, name)
		}
		notice, hasNotice := noticeOf[waitedOn(user, name)]
		cost := 1 + 2*len(tasks)
		if dropped {
			cost++
		}
		if hasNotice {
			cost++
		}
		if cost > budget {
			return false
		}
		budget -= cost
		part.Tasks = append(part.Tasks, tasks...)
		if hasNotice {
			notices = append(notices, notice)
		}
		if user {
			part.Users[name] = st
			if dropped {
				part.DroppedUsers = append(part.DroppedUsers, name)
			}
		} else {
			part.Databases[name] = st
			if dropped {
				part.DroppedDatabases = append(part.DroppedDatabases, name)
			}
		}
		return true
	}
	for _, name := range slices.Sorted(maps.Keys(c.Databases)) {
		if !take(false, name, c.Databases[name]) {
			return part, notices
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Users)) {
		if !take(true, name, c.Users[name]) {
			return part, notices
		}
	}
	return part, notices
}

// syncOps turns a DatabaseSync into writes; none for an empty one.
func (s *Store) syncOps(ctx context.Context, account string, set *DatabaseSet, ch *DatabaseSync) ([]clientv3.Op, error) {
	if ch == nil || ch.empty() {
		return nil, nil
	}
	now := time.Now().UTC()
	var ops []clientv3.Op
	if len(ch.Tasks) > 0 && set.Account.Node == "" {
		return nil, fmt.Errorf("account %s is not placed on a node yet: %w", set.Account.Username, ErrNotYet)
	}
	for _, dt := range ch.Tasks {
		t, tops, err := taskOps(set.Account.Node, dt.Spec, dbDoneKind+"/"+account, "system", nil, now)
		if err != nil {
			return nil, err
		}
		ops = append(ops, tops...)
		var st *ObjectStatus
		switch {
		case dt.Database != "":
			st = ch.Databases[dt.Database]
		case dt.User != "":
			st = ch.Users[dt.User]
		}
		if st == nil {
			return nil, fmt.Errorf("database task %s names no status of this sync", t.Action)
		}
		st.TaskID = t.ID
	}
	var lease clientv3.LeaseID
	if len(ch.DroppedDatabases)+len(ch.DroppedUsers) > 0 {
		l, err := s.cli.Grant(ctx, int64(tombstoneTTL/time.Second))
		if err != nil {
			return nil, fmt.Errorf("tombstone lease: %w", err)
		}
		lease = l.ID
	}
	put := func(key string, st *ObjectStatus, dropped bool) {
		st.UpdatedAt = now
		if dropped {
			ops = append(ops, clientv3.OpPut(key, mustJSON(st), clientv3.WithLease(lease)))
			return
		}
		ops = append(ops, clientv3.OpPut(key, mustJSON(st)))
	}
	for name, st := range ch.Databases {
		put(databaseStateKey(account, name), st, slices.Contains(ch.DroppedDatabases, name))
	}
	for name, st := range ch.Users {
		put(dbUserStateKey(account, name), st, slices.Contains(ch.DroppedUsers, name))
	}
	for _, name := range ch.DroppedDatabases {
		ops = append(ops, clientv3.OpDelete(databaseKey(account, name)))
	}
	for _, name := range ch.DroppedUsers {
		ops = append(ops, clientv3.OpDelete(dbUserKey(account, name)))
	}
	change := DBChangedTasks
	if ch.Answered {
		change = DBChangedStatus
	}
	return append(ops, seqPut(account, change, now)), nil
}

// WaitDatabaseObject returns the status of an account's database (or,
// user true, database user) once done says it is what the caller waits
// for, or as it stands when timeout passes or ctx ends (nil: no status
// recorded). It opens no watch of its own: the replica's one watch on
// statuses (RunMirrors) signals it, as for WaitTask.
func (s *Store) WaitDatabaseObject(ctx context.Context, account, name string, user bool, timeout time.Duration, done func(*ObjectStatus) bool) (*ObjectStatus, error) {
	key := databaseStateKey(account, name)
	if user {
		key = dbUserStateKey(account, name)
	}
	return waitOn(ctx, s.dbWaits, strings.TrimPrefix(key, prefixDBState), timeout,
		func() (*ObjectStatus, error) {
			st, _, err := getJSON[ObjectStatus](ctx, s.cli, key)
			if errors.Is(err, ErrNotFound) {
				return nil, nil
			}
			return st, err
		}, done)
}
