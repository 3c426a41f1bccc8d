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
	pending := func() []string {
		var out []string
		for _, d := range c.take() {
			if !c.isHandled(d.name, d.rev) {
				out = append(out, d.name)
			}
		}
		return out
	}

	c.handledAt("a.test", 10)
	c.handledAt("a.test", 7) // an older note does not lower it
	c.markAt("a.test", 10)
	c.markAt("b.test", 10)
	if got := pending(); !slices.Equal(got, []string{"b.test"}) {
		t.Fatalf("after writes at the handled revision: %q", got)
	}
	c.markAt("a.test", 11)
	if got := pending(); !slices.Equal(got, []string{"a.test"}) {
		t.Fatalf("after a newer write: %q", got)
	}
	c.markAt("a.test", 9)
	c.mark("a.test")
	c.markAt("a.test", 10) // does not turn the unconditional mark back
	if got := pending(); !slices.Equal(got, []string{"a.test"}) {
		t.Fatalf("after an unconditional mark: %q", got)
	}
	c.forgetHandled("a.test")
	c.markAt("a.test", 5)
	if got := pending(); !slices.Equal(got, []string{"a.test"}) {
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
