package store

import (
	"encoding/json"
	"testing"
)

// A record written before databases had a controller reads as applied at
// generation 1, and its next write no longer carries the old fields.
func TestLegacyDatabaseRecords(t *testing.T) {
	for _, tc := range []struct {
		json        string
		wantState   DatabaseState
		wantDeleted bool
	}{
		{`{"account":"a","name":"u_shop","state":"ACTIVE","taskId":"t1"}`, DatabaseActive, false},
		{`{"account":"a","name":"u_shop","state":"FAILED","reason":"disk full"}`, DatabaseFailed, false},
		{`{"account":"a","name":"u_shop","state":"PENDING","taskId":"t1"}`, DatabasePending, false},
		{`{"account":"a","name":"u_shop","state":"DELETING"}`, DatabaseDeleting, true},
	} {
		var d Database
		if err := json.Unmarshal([]byte(tc.json), &d); err != nil {
			t.Fatal(err)
		}
		d.adopt(&d.Generation, &d.Deleted, &d.Status)
		if st, _ := d.State(); st != tc.wantState || d.Deleted != tc.wantDeleted || d.Generation != 1 {
			t.Errorf("%s: state %s deleted %v generation %d", tc.json, st, d.Deleted, d.Generation)
		}
		b, _ := json.Marshal(&d)
		var again map[string]any
		_ = json.Unmarshal(b, &again)
		if _, ok := again["state"]; ok {
			t.Errorf("%s: rewritten with its old state: %s", tc.json, b)
		}
	}
	// A record written since is left as it is.
	d := Database{Generation: 3, legacy: legacy{LegacyState: DatabaseActive}}
	d.adopt(&d.Generation, &d.Deleted, &d.Status)
	if d.Generation != 3 || d.Status.ObservedGeneration != 0 {
		t.Errorf("current record changed: %+v", d)
	}
	var u DatabaseUser
	_ = json.Unmarshal([]byte(`{"account":"a","name":"u_app","state":"ACTIVE"}`), &u)
	u.adopt(&u.Generation, &u.Deleted, &u.Status)
	if st, _ := u.State(); st != DatabaseActive {
		t.Errorf("legacy user: %s", st)
	}
}
