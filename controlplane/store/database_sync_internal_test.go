package store

import "testing"

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
