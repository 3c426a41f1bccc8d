package controlplane

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

func dbSet(dbs []*store.Database, users []*store.DatabaseUser) *store.DatabaseSet {
	set := &store.DatabaseSet{Account: &store.Account{ID: "a1", Username: "alice", Node: "n1"},
		Databases: map[string]*store.Database{}, Users: map[string]*store.DatabaseUser{}}
	for _, d := range dbs {
		set.Databases[d.Name] = d
	}
	for _, u := range users {
		set.Users[u.Name] = u
	}
	return set
}

// dbResult is a task record's typed result holding res.
func dbResult(t *testing.T, res *agentpb.DatabaseResult) []byte {
	b, err := proto.Marshal(&agentpb.TaskResult{Result: &agentpb.TaskResult_Database{Database: res}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func taskAction(t *agentpb.Task) string {
	m := t.ProtoReflect()
	return string(m.WhichOneof(m.Descriptor().Oneofs().ByName("action")).Name())
}

// TestSyncDatabasesTasks: a task for every object behind its spec, none
// while one is in flight, none for generation 0 or an account not placed.
func TestSyncDatabasesTasks(t *testing.T) {
	cases := []struct {
		name   string
		set    *store.DatabaseSet
		placed bool
		want   []string // actions, in order
	}{
		{"new database", dbSet([]*store.Database{{Name: "alice_a", Generation: 1}}, nil), true, []string{"ensure_database"}},
		{"unversioned record", dbSet([]*store.Database{{Name: "alice_a"}}, nil), true, nil},
		{"not placed", dbSet([]*store.Database{{Name: "alice_a", Generation: 1}}, nil), false, nil},
		{"in flight", dbSet([]*store.Database{{Name: "alice_a", Generation: 2,
			Status: store.ObjectStatus{TaskID: "T1", TaskAction: store.DBTaskEnsure, TaskGeneration: 1}}}, nil), true, nil},
		{"converged", dbSet([]*store.Database{{Name: "alice_a", Generation: 2,
			Status: store.ObjectStatus{ObservedGeneration: 2, State: store.DatabaseActive}}}, nil), true, nil},
		{"failed stays failed", dbSet([]*store.Database{{Name: "alice_a", Generation: 2,
			Status: store.ObjectStatus{ObservedGeneration: 2, State: store.DatabaseFailed}}}, nil), true, nil},
		{"delete", dbSet([]*store.Database{{Name: "alice_a", Generation: 3, Deleted: true,
			Status: store.ObjectStatus{ObservedGeneration: 2, State: store.DatabaseActive}}}, nil), true, []string{"drop_database"}},
		{"optimize", dbSet([]*store.Database{{Name: "alice_a", Generation: 2, Optimize: 1,
			Status: store.ObjectStatus{ObservedGeneration: 2, State: store.DatabaseActive}}}, nil), true, []string{"optimize_database"}},
		{"user waits for its database", dbSet([]*store.Database{{Name: "alice_a", Generation: 1}},
			[]*store.DatabaseUser{{Name: "alice_u", Generation: 2, Grants: []store.DatabaseGrant{{Database: "alice_a", Privileges: []string{"SELECT"}}}}}),
			true, []string{"ensure_database"}},
		{"user with its database ready", dbSet([]*store.Database{{Name: "alice_a", Generation: 1, Status: store.ObjectStatus{ObservedGeneration: 1, State: store.DatabaseActive}}},
			[]*store.DatabaseUser{{Name: "alice_u", Generation: 2, Grants: []store.DatabaseGrant{{Database: "alice_a", Privileges: []string{"SELECT"}}}}}),
			true, []string{"ensure_database_user"}},
		{"drop user", dbSet(nil, []*store.DatabaseUser{{Name: "alice_u", Generation: 4, Deleted: true}}), true, []string{"drop_database_user"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.placed {
				tc.set.Account.Node = ""
			}
			ch := syncDatabases(tc.set, nil)
			var got []string
			for _, dt := range ch.Tasks {
				got = append(got, taskAction(dt.Spec))
				st := ch.Databases[dt.Database]
				if dt.User != "" {
					st = ch.Users[dt.User]
				}
				if st == nil || st.TaskAction == "" {
					t.Errorf("task %s: no status marks it in flight", taskAction(dt.Spec))
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("tasks %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("tasks %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestSyncDatabasesOutcomes: a finished task's outcome goes into the
// status, and a change made meanwhile is sent at once.
func TestSyncDatabasesOutcomes(t *testing.T) {
	ok := &store.Task{ID: "T1", Status: store.TaskSucceeded}
	failed := &store.Task{ID: "T1", Status: store.TaskFailed, Error: "disk full"}
	inFlight := func(action string, gen int64) store.ObjectStatus {
		return store.ObjectStatus{TaskID: "T1", TaskAction: action, TaskGeneration: gen}
	}

	// An ensure succeeded while the spec moved on: ACTIVE at 1, and the
	// next ensure goes out for 2.
	set := dbSet([]*store.Database{{Name: "alice_a", Generation: 2, Status: inFlight(store.DBTaskEnsure, 1)}}, nil)
	ch := syncDatabases(set, map[string]*store.Task{"T1": ok})
	st := ch.Databases["alice_a"]
	if st.ObservedGeneration != 1 || st.State != store.DatabaseActive || len(ch.Tasks) != 1 || st.TaskGeneration != 2 {
		t.Fatalf("ensure outcome: %+v, %d tasks", st, len(ch.Tasks))
	}

	// A failed ensure: FAILED with the node's reason, not retried.
	set = dbSet([]*store.Database{{Name: "alice_a", Generation: 1, Status: inFlight(store.DBTaskEnsure, 1)}}, nil)
	ch = syncDatabases(set, map[string]*store.Task{"T1": failed})
	if st := ch.Databases["alice_a"]; st.State != store.DatabaseFailed || st.Reason != "disk full" || st.TaskID != "" || len(ch.Tasks) != 0 {
		t.Fatalf("failed ensure: %+v, %d tasks", st, len(ch.Tasks))
	}

	// A drop succeeded: the record goes, its tombstone has the dump.
	drop := &store.Task{ID: "T1", Status: store.TaskSucceeded, Result: dbResult(t, &agentpb.DatabaseResult{Name: "alice_a", Dump: "/b/alice_a.sql.gz", DumpBytes: 804})}
	set = dbSet([]*store.Database{{Name: "alice_a", Generation: 3, Deleted: true, Status: inFlight(store.DBTaskDrop, 3)}}, nil)
	ch = syncDatabases(set, map[string]*store.Task{"T1": drop})
	if st := ch.Databases["alice_a"]; len(ch.DroppedDatabases) != 1 || st.State != store.DatabaseDeleted || st.Dump != "/b/alice_a.sql.gz" || st.DumpBytes != 804 {
		t.Fatalf("drop: %+v %v", st, ch.DroppedDatabases)
	}
	// A failed drop keeps the record, FAILED, nothing dropped.
	set = dbSet([]*store.Database{{Name: "alice_a", Generation: 3, Deleted: true, Status: inFlight(store.DBTaskDrop, 3)}}, nil)
	ch = syncDatabases(set, map[string]*store.Task{"T1": failed})
	if st := ch.Databases["alice_a"]; len(ch.DroppedDatabases) != 0 || st.State != store.DatabaseFailed || st.Reason != "delete failed, nothing dropped: disk full" {
		t.Fatalf("failed drop: %+v", st)
	}
	// A result that does not decode is an error in the status, never a
	// zero dump.
	bad := &store.Task{ID: "T1", Status: store.TaskSucceeded, Result: []byte("\xff not a result")}
	set = dbSet([]*store.Database{{Name: "alice_a", Generation: 3, Deleted: true, Status: inFlight(store.DBTaskDrop, 3)}}, nil)
	ch = syncDatabases(set, map[string]*store.Task{"T1": bad})
	if st := ch.Databases["alice_a"]; st.Dump != "" || st.Reason == "" {
		t.Fatalf("undecodable drop result: %+v", st)
	}

	// Optimize: the request is answered with the tables, the state stays.
	opt := &store.Task{ID: "T1", Status: store.TaskSucceeded, Result: dbResult(t, &agentpb.DatabaseResult{Name: "alice_a", Tables: 3})}
	set = dbSet([]*store.Database{{Name: "alice_a", Generation: 1, Optimize: 1,
		Status: store.ObjectStatus{ObservedGeneration: 1, State: store.DatabaseActive, TaskID: "T1", TaskAction: store.DBTaskOptimize, TaskGeneration: 1}}}, nil)
	ch = syncDatabases(set, map[string]*store.Task{"T1": opt})
	if st := ch.Databases["alice_a"]; st.Optimized != 1 || st.OptimizeStatus != store.TaskSucceeded || st.OptimizeTables == nil || *st.OptimizeTables != 3 || st.State != store.DatabaseActive {
		t.Fatalf("optimize: %+v", st)
	}

	// A user's password travels until the node applied it, then no more.
	u := &store.DatabaseUser{Name: "alice_u", Generation: 1, SealedPassword: []byte("sealed"), PasswordGeneration: 1}
	ch = syncDatabases(dbSet(nil, []*store.DatabaseUser{u}), nil)
	if len(ch.Tasks) != 1 || len(ch.Tasks[0].Spec.GetEnsureDatabaseUser().GetSealedPassword()) == 0 {
		t.Fatalf("first ensure without the password: %v", ch.Tasks)
	}
	u.Status = *ch.Users["alice_u"]
	u.Status.TaskID = "T1"
	u.Generation = 2 // a grant changed meanwhile
	ch = syncDatabases(dbSet(nil, []*store.DatabaseUser{u}), map[string]*store.Task{"T1": ok})
	if st := ch.Users["alice_u"]; st.PasswordGeneration != 1 || len(ch.Tasks) != 1 || ch.Tasks[0].Spec.GetEnsureDatabaseUser().GetSealedPassword() != nil {
		t.Fatalf("second ensure: %+v %v", st, ch.Tasks)
	}

	// A lost task is written again.
	set = dbSet([]*store.Database{{Name: "alice_a", Generation: 1, Status: inFlight(store.DBTaskEnsure, 1)}}, nil)
	ch = syncDatabases(set, map[string]*store.Task{"T1": store.TaskLost})
	if len(ch.Tasks) != 1 {
		t.Fatalf("lost task not written again: %+v", ch)
	}
}
