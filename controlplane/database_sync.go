package controlplane

import (
	"maps"
	"slices"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// syncDatabases is the database controller's decision for one account, a
// pure function of what the store read: first the outcome of every
// finished task goes into its object's status, then every object whose
// spec the node has not answered for gets the task that converges it. An
// object has one task in flight at most (its status names it), so two
// changes of one object never race on the node; a change made meanwhile
// is sent when the task in flight has finished.
//
// A failed ensure or drop is not retried at the same generation: the
// object shows FAILED with the node's reason until the next change, as
// the API has always shown it.
func syncDatabases(set *store.DatabaseSet, finished map[string]*store.Task) *store.DatabaseSync {
	ch := store.NewDatabaseSync()
	// No tasks for an account being deleted (its deletion drops what it
	// has on the node) or not placed yet; outcomes are still recorded.
	send := !set.Account.Deleted && set.Account.Node != ""

	for _, name := range slices.Sorted(maps.Keys(set.Databases)) {
		d := set.Databases[name]
		st := d.Status
		changed := false
		if st.TaskID != "" {
			t, ok := finished[st.TaskID]
			if !ok {
				continue // still running
			}
			changed = true
			if t != store.TaskLost {
				ch.Answered = true
				if recordDatabase(&st, d, t) {
					ch.Databases[name] = &st
					ch.DroppedDatabases = append(ch.DroppedDatabases, name)
					continue
				}
			}
			clearTask(&st)
		}
		if send {
			if spec := nextDatabaseTask(d, &st); spec != nil {
				ch.Tasks = append(ch.Tasks, store.DatabaseTask{Spec: spec, Database: name})
				changed = true
			} else if d.Optimize > st.Optimized && st.TaskID == "" && !d.Deleted && st.ObservedGeneration >= d.Generation {
				// Asked of a database that is not ACTIVE (the API
				// checked; it failed since): answer instead of waiting.
				state, _ := objectState(d, &st)
				st.Optimized, st.OptimizeStatus, st.OptimizeTables = d.Optimize, store.TaskFailed, nil
				st.OptimizeReason = "database " + d.Name + " is " + string(state)
				changed, ch.Answered = true, true
			}
		}
		if changed {
			ch.Databases[name] = &st
		}
	}

	for _, name := range slices.Sorted(maps.Keys(set.Users)) {
		u := set.Users[name]
		st := u.Status
		changed := false
		if st.TaskID != "" {
			t, ok := finished[st.TaskID]
			if !ok {
				continue
			}
			changed = true
			if t != store.TaskLost {
				ch.Answered = true
				if recordUser(&st, u, t) {
					ch.Users[name] = &st
					ch.DroppedUsers = append(ch.DroppedUsers, name)
					continue
				}
			}
			clearTask(&st)
		}
		if send && !waitsOnDatabase(u, set, ch) {
			if spec := nextUserTask(u, &st); spec != nil {
				ch.Tasks = append(ch.Tasks, store.DatabaseTask{Spec: spec, User: name})
				changed = true
			}
		}
		if changed {
			ch.Users[name] = &st
		}
	}
	return ch
}

func objectState(d *store.Database, st *store.ObjectStatus) (store.DatabaseState, string) {
	c := *d
	c.Status = *st
	return c.State()
}

func clearTask(st *store.ObjectStatus) {
	st.TaskID, st.TaskAction, st.TaskGeneration, st.TaskPassword = "", "", 0, 0
}

// recordDatabase writes a finished task's outcome into st; it reports
// whether the database is gone (a successful drop of a deleted spec).
func recordDatabase(st *store.ObjectStatus, d *store.Database, t *store.Task) (dropped bool) {
	defer clearTask(st)
	ok := t.Status == store.TaskSucceeded
	switch st.TaskAction {
	case store.DBTaskOptimize:
		st.Optimized, st.OptimizeStatus, st.OptimizeTables, st.OptimizeReason = st.TaskGeneration, t.Status, nil, t.Error
		if ok {
			res, err := t.DatabaseResult()
			if err != nil {
				st.OptimizeReason = err.Error()
				return false
			}
			n := res.GetTables()
			st.OptimizeTables = &n
		}
		return false
	case store.DBTaskDrop:
		st.ObservedGeneration = st.TaskGeneration
		if !ok {
			st.State, st.Reason = store.DatabaseFailed, "delete failed, nothing dropped: "+t.Error
			return false
		}
		st.State, st.Reason, st.Dump, st.DumpBytes = store.DatabaseDeleted, "", "", 0
		if res, err := t.DatabaseResult(); err != nil {
			// Dropped all the same: say why the dump is not shown.
			st.Reason = err.Error()
		} else {
			st.Dump, st.DumpBytes = res.GetDump(), res.GetDumpBytes()
		}
		return d.Deleted && st.TaskGeneration == d.Generation
	default:
		st.ObservedGeneration = st.TaskGeneration
		st.State, st.Reason = store.DatabaseActive, ""
		if !ok {
			st.State, st.Reason = store.DatabaseFailed, t.Error
		}
		return false
	}
}

// recordUser writes a finished task's outcome into st; it reports whether
// the user is gone.
func recordUser(st *store.ObjectStatus, u *store.DatabaseUser, t *store.Task) (dropped bool) {
	defer clearTask(st)
	ok := t.Status == store.TaskSucceeded
	st.ObservedGeneration = st.TaskGeneration
	st.State, st.Reason = store.DatabaseActive, ""
	if !ok {
		st.State, st.Reason = store.DatabaseFailed, t.Error
		return false
	}
	if st.TaskAction == store.DBTaskDrop {
		st.State = store.DatabaseDeleted
		return u.Deleted && st.TaskGeneration == u.Generation
	}
	st.PasswordGeneration = max(st.PasswordGeneration, st.TaskPassword)
	return false
}

// nextDatabaseTask returns the task that converges d, and marks it in
// flight in st; nil when nothing is to do or a task is in flight.
func nextDatabaseTask(d *store.Database, st *store.ObjectStatus) *agentpb.Task {
	if st.TaskID != "" || d.Generation == 0 {
		return nil
	}
	eng := agentEngine(d.Engine)
	behind := st.ObservedGeneration < d.Generation || st.State == ""
	var spec *agentpb.Task
	switch {
	case d.Deleted && behind:
		st.TaskAction, st.TaskGeneration = store.DBTaskDrop, d.Generation
		spec = &agentpb.Task{Action: &agentpb.Task_DropDatabase{DropDatabase: &agentpb.DropDatabaseAction{Name: d.Name, Owner: d.Owner, Engine: eng}}}
	case d.Deleted:
		return nil
	case behind:
		st.TaskAction, st.TaskGeneration = store.DBTaskEnsure, d.Generation
		spec = &agentpb.Task{Action: &agentpb.Task_EnsureDatabase{EnsureDatabase: &agentpb.EnsureDatabaseAction{Name: d.Name, Owner: d.Owner, Engine: eng}}}
	case d.Optimize > st.Optimized && st.State == store.DatabaseActive:
		st.TaskAction, st.TaskGeneration = store.DBTaskOptimize, d.Optimize
		// One-shot: generation 0, it converges nothing.
		return &agentpb.Task{Action: &agentpb.Task_OptimizeDatabase{OptimizeDatabase: &agentpb.OptimizeDatabaseAction{Name: d.Name, Owner: d.Owner, Engine: eng}}}
	default:
		return nil
	}
	spec.Generation = d.Generation
	return spec
}

// nextUserTask is nextDatabaseTask for a user: an ensure carries its hosts,
// exactly its grants, and the password while the node has not applied it.
func nextUserTask(u *store.DatabaseUser, st *store.ObjectStatus) *agentpb.Task {
	if st.TaskID != "" || u.Generation == 0 {
		return nil
	}
	behind := st.ObservedGeneration < u.Generation || st.State == ""
	if !behind {
		return nil
	}
	st.TaskGeneration = u.Generation
	if u.Deleted {
		st.TaskAction = store.DBTaskDrop
		return &agentpb.Task{Generation: u.Generation, Action: &agentpb.Task_DropDatabaseUser{DropDatabaseUser: &agentpb.DropDatabaseUserAction{Name: u.Name, Owner: u.Owner, Engine: agentEngine(u.Engine)}}}
	}
	st.TaskAction = store.DBTaskEnsure
	act := &agentpb.EnsureDatabaseUserAction{Name: u.Name, Owner: u.Owner, Engine: agentEngine(u.Engine), Hosts: slices.Clone(u.Hosts)}
	if u.PasswordGeneration > st.PasswordGeneration {
		switch {
		case len(u.SealedPassword) > 0:
			act.SealedPassword = slices.Clone(u.SealedPassword)
			st.TaskPassword = u.PasswordGeneration
		case len(u.SealedPasswordHash) > 0:
			act.SealedPasswordHash = slices.Clone(u.SealedPasswordHash)
			st.TaskPassword = u.PasswordGeneration
		}
	}
	for _, g := range u.Grants {
		act.Grants = append(act.Grants, &agentpb.DatabaseGrant{Database: g.Database, Privileges: slices.Clone(g.Privileges)})
	}
	return &agentpb.Task{Generation: u.Generation, Action: &agentpb.Task_EnsureDatabaseUser{EnsureDatabaseUser: act}}
}

// waitsOnDatabase reports whether a change of u must wait for a database
// it is granted on: one whose creation is about to be sent or is in flight.
// Granting on a database the node has not created yet would fail.
func waitsOnDatabase(u *store.DatabaseUser, set *store.DatabaseSet, ch *store.DatabaseSync) bool {
	if u.Deleted {
		return false
	}
	for _, g := range u.Grants {
		d, ok := set.Databases[g.Database]
		if !ok || d.Deleted {
			continue
		}
		st := &d.Status
		if s, ok := ch.Databases[g.Database]; ok {
			st = s
		}
		// TaskAction is cleared when a task's outcome is recorded: an
		// ensure here is in flight or written by this sync.
		if st.TaskAction == store.DBTaskEnsure {
			return true
		}
	}
	return false
}

func agentEngine(e string) agentpb.DatabaseEngine {
	if e == validate.EnginePostgreSQL {
		return agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL
	}
	return agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB
}
