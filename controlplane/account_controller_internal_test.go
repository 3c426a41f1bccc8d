package controlplane

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

func TestNeedsWork(t *testing.T) {
	for _, tc := range []struct {
		name string
		a    store.Account
		want bool
	}{
		{"new account", store.Account{Status: store.AccountPending, Generation: 1}, true},
		{"task in flight", store.Account{Node: "n", TaskID: "t", Generation: 1}, false},
		{"steady active", store.Account{Node: "n", Status: store.AccountActive, Generation: 2, AppliedGeneration: 2}, false},
		{"steady suspended", store.Account{Node: "n", Status: store.AccountSuspended, Suspended: true, Generation: 3, AppliedGeneration: 3}, false},
		{"suspend requested", store.Account{Node: "n", Status: store.AccountActive, Suspended: true, Generation: 3, AppliedGeneration: 2}, true},
		{"applied, status behind", store.Account{Node: "n", Status: store.AccountProvisioning, Generation: 1, AppliedGeneration: 1}, true},
		{"delete requested", store.Account{Node: "n", Status: store.AccountDeleting, Deleted: true, Generation: 2, AppliedGeneration: 1}, true},
		{"failed for good", store.Account{Node: "n", Status: store.AccountFailed, Attempts: maxTaskAttempts, Generation: 1}, false},
		{"failed, then a new spec", store.Account{Node: "n", Status: store.AccountFailed, Generation: 2, AppliedGeneration: 1}, true},
	} {
		if got := needsWork(tc.a.Head()); got != tc.want {
			t.Errorf("%s: needsWork = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestResyncQueuesUnsettled: the account informer keeps for the periodic
// resync every account in flight, whether or not it has work to queue now,
// and nothing that has settled.
func TestResyncQueuesUnsettled(t *testing.T) {
	statuses := map[string]store.AccountStatus{
		"a-pending": store.AccountPending, "b-scheduled": store.AccountScheduled,
		"c-provisioning": store.AccountProvisioning, "d-deleting": store.AccountDeleting,
		"e-active": store.AccountActive, "f-suspended": store.AccountSuspended, "g-failed": store.AccountFailed,
	}
	var kept []string
	for id, st := range statuses {
		v, err := json.Marshal(store.Account{ID: id, Username: id, Domain: id + ".test", Owner: "admin", Node: "n1", Status: st, TaskID: "t"})
		if err != nil {
			t.Fatal(err)
		}
		key, queue, keep := accountEvent(store.Event{Name: id, Value: v})
		if key != id || queue {
			t.Errorf("%s: key %q queue %v; a task in flight queues nothing", id, key, queue)
		}
		if keep {
			kept = append(kept, key)
		}
	}
	slices.Sort(kept)
	want := []string{"a-pending", "b-scheduled", "c-provisioning", "d-deleting"}
	if !slices.Equal(kept, want) {
		t.Fatalf("kept for resync %v, want %v", kept, want)
	}
	if _, queue, keep := accountEvent(store.Event{Name: "x", Deleted: true}); queue || keep {
		t.Fatal("a deleted account is queued or kept")
	}
}
