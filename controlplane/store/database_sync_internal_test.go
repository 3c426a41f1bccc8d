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
