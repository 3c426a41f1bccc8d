package controlplane

import (
	"slices"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

// TestZoneControllerSkipsHandledWrites: a zone marked by a write the
// controller has accounted for is skipped; a later write, or a mark that
// names no revision (a done notice, a retry), is looked at.
func TestZoneControllerSkipsHandledWrites(t *testing.T) {
	c := newZoneController(&Server{})
	pending := func(names ...string) []string {
		var out []string
		for _, n := range names {
			if rev, ok := c.take(n); ok && !c.isHandled(n, rev) {
				out = append(out, n)
			}
		}
		return out
	}
	write := func(name string, rev int64) { c.zoneEvent(store.Event{Name: name, Rev: rev}) }

	c.handledAt("a.test", 10)
	c.handledAt("a.test", 7) // an older note does not lower it
	write("a.test", 10)
	write("b.test", 10)
	if got := pending("a.test", "b.test"); !slices.Equal(got, []string{"b.test"}) {
		t.Fatalf("after writes at the handled revision: %q", got)
	}
	write("a.test", 11)
	if got := pending("a.test", "b.test"); !slices.Equal(got, []string{"a.test"}) {
		t.Fatalf("after a newer write: %q", got)
	}
	write("a.test", 9)
	c.outcomeEvent(store.Event{Name: "a.test", Rev: 9}) // a done notice
	write("a.test", 10)                                 // does not turn the unconditional mark back
	if got := pending("a.test", "b.test"); !slices.Equal(got, []string{"a.test"}) {
		t.Fatalf("after an unconditional mark: %q", got)
	}
	c.zoneEvent(store.Event{Name: "a.test", Rev: 12, Deleted: true}) // forgets
	write("a.test", 5)
	if got := pending("a.test", "b.test"); !slices.Equal(got, []string{"a.test"}) {
		t.Fatalf("after forget: %q", got)
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
