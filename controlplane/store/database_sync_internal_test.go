package store

import (
	"fmt"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

// The database kinds name their events by account, as TestKindNames
// checks for the others.
func TestDatabaseKindNames(t *testing.T) {
	for _, tc := range []struct {
		kind Kind
		key  string
	}{
		{KindDatabaseChanges, databaseSeqKey("01ABC")},
		{KindDatabaseOutcomes, doneKey(dbDoneKind, "01ABC", "01TASK")},
	} {
		if got := tc.kind.nameOf(tc.key); got != "01ABC" {
			t.Errorf("%s: %q names %q, want the account", tc.kind, tc.key, got)
		}
	}
}

// A sequence key's value says who bumped it; an old value is a spec change.
func TestDatabaseChangeOf(t *testing.T) {
	for value, want := range map[string]string{
		"spec 2026-12-05T17:00:00Z":   DBChangedSpec,
		"tasks 2026-12-05T17:00:00Z":  DBChangedTasks,
		"status 2026-12-05T17:00:00Z": DBChangedStatus,
		"2026-12-05T17:00:00Z":        DBChangedSpec,
	} {
		if got := DatabaseChangeOf(Event{Value: []byte(value)}); got != want {
			t.Errorf("%q: %q, want %q", value, got, want)
		}
	}
	if got := DatabaseChangeOf(Event{Deleted: true}); got != "" {
		t.Errorf("deletion: %q", got)
	}
}

// A sync larger than a transaction is committed in parts of whole objects,
// each with the done notices of the outcomes it records.
func TestDatabaseSyncFirstPart(t *testing.T) {
	set := &DatabaseSet{Account: &Account{ID: "a1", Username: "alice", Node: "n1"},
		Databases: map[string]*Database{}, Users: map[string]*DatabaseUser{}}
	ch := NewDatabaseSync()
	var done []string
	for i := range 70 {
		name := fmt.Sprintf("alice_%02d", i)
		old := fmt.Sprintf("T%02d", i)
		set.Databases[name] = &Database{Name: name, Generation: 2, Status: ObjectStatus{TaskID: old}}
		done = append(done, doneKey(dbDoneKind, "a1", old))
		ch.Databases[name] = &ObjectStatus{ObservedGeneration: 1, State: DatabaseActive}
		ch.Tasks = append(ch.Tasks, DatabaseTask{Database: name, Spec: &agentpb.Task{}})
	}
	done = append(done, doneKey(dbDoneKind, "a1", "ORPHAN"))
	if n := ch.opCount() + len(done); n <= MaxTxnOps {
		t.Fatalf("the case fits in one transaction (%d ops)", n)
	}
	part, notices := ch.firstPart(set, done, MaxTxnOps)
	if n := part.opCount() + len(notices); n > MaxTxnOps || len(part.Databases) == 0 {
		t.Fatalf("part of %d objects needs %d ops", len(part.Databases), n)
	}
	if len(part.Tasks) != len(part.Databases) {
		t.Errorf("%d tasks for %d objects", len(part.Tasks), len(part.Databases))
	}
	consumed := map[string]bool{}
	for _, k := range notices {
		consumed[k] = true
	}
	if !consumed[doneKey(dbDoneKind, "a1", "ORPHAN")] {
		t.Error("the notice no object waits on is not consumed")
	}
	for name, d := range set.Databases {
		_, in := part.Databases[name]
		if consumed[doneKey(dbDoneKind, "a1", d.Status.TaskID)] != in {
			t.Errorf("%s: in the part %v, its notice consumed %v", name, in, !in)
		}
	}
}
