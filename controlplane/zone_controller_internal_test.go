package controlplane

import (
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

// TestZoneControllerSkipsHandledWrites: a zone changed by a write the
// controller has accounted for is not queued; a later write, or a done
// notice whatever its revision, is. (A zone queued without a revision —
// a retry, a change of DNS servers — goes through Enqueue, which no event
// can take back: the runtime's queue only adds.)
func TestZoneControllerSkipsHandledWrites(t *testing.T) {
	c := newZoneController(&Server{})
	queued := func(name string, rev int64) bool {
		_, q, _ := c.zoneEvent(store.Event{Name: name, Rev: rev})
		return q
	}

	c.handledAt("a.test", 10)
	c.handledAt("a.test", 7) // an older note does not lower it
	if queued("a.test", 10) || !queued("b.test", 10) {
		t.Fatal("after writes at the handled revision: want b.test queued, a.test not")
	}
	if !queued("a.test", 11) {
		t.Fatal("a newer write was not queued")
	}
	if queued("a.test", 9) {
		t.Fatal("an older write was queued")
	}
	if _, q, _ := outcomeEvent(store.Event{Name: "a.test", Rev: 9}); !q {
		t.Fatal("a done notice was not queued")
	}
	c.zoneEvent(store.Event{Name: "a.test", Deleted: true, Rev: 12})
	if !queued("a.test", 5) {
		t.Fatal("after the zone's deletion, a write at an old revision was not queued")
	}
}

// TestUnsettledZone: the resync looks again at zones in flight, never at
// settled or failed ones.
func TestUnsettledZone(t *testing.T) {
	for _, tc := range []struct {
		name string
		z    store.ZoneState
		want bool
	}{
		{"new", store.ZoneState{Status: store.ZonePending, Generation: 1}, true},
		{"task in flight", store.ZoneState{Status: store.ZonePending, Generation: 1, TaskID: "t"}, true},
		{"applied, status behind", store.ZoneState{Status: store.ZonePending, Generation: 1, AppliedGeneration: 1}, true},
		{"record change", store.ZoneState{Status: store.ZoneActive, Generation: 3, AppliedGeneration: 2}, true},
		{"delete requested", store.ZoneState{Status: store.ZoneActive, Generation: 2, AppliedGeneration: 2, Deleted: true}, true},
		{"settled", store.ZoneState{Status: store.ZoneActive, Generation: 2, AppliedGeneration: 2}, false},
		{"failed", store.ZoneState{Status: store.ZoneFailed, Generation: 2, AppliedGeneration: 1}, false},
	} {
		if got := unsettledZone(&tc.z); got != tc.want {
			t.Errorf("%s: unsettledZone = %v, want %v", tc.name, got, tc.want)
		}
	}
}
