package controlplane

import (
	"fmt"
	"slices"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/protos/agentpb"
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

// TestSettledZone: a primary checks only zones it should hold exactly as
// last applied; the others have a task on the way or nothing to hold.
func TestSettledZone(t *testing.T) {
	applied := store.ZoneState{Status: store.ZoneActive, Generation: 2, AppliedGeneration: 2, Serial: 2026112401}
	for _, tc := range []struct {
		name   string
		change func(*store.ZoneState)
		want   bool
	}{
		{"applied", func(*store.ZoneState) {}, true},
		{"task in flight", func(z *store.ZoneState) { z.TaskID = "t" }, false},
		{"record change", func(z *store.ZoneState) { z.Generation++ }, false},
		{"delete requested", func(z *store.ZoneState) { z.Deleted = true }, false},
		{"failed", func(z *store.ZoneState) { z.Status = store.ZoneFailed }, false},
		{"waiting for a DNS server", func(z *store.ZoneState) { z.Status = store.ZonePending }, false},
		{"never applied", func(z *store.ZoneState) { z.Generation, z.AppliedGeneration, z.Serial = 1, 0, 0 }, false},
	} {
		z := applied
		tc.change(&z)
		if got := settledZone(&z); got != tc.want {
			t.Errorf("%s: settledZone = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestZoneDriftString(t *testing.T) {
	for _, tc := range []struct {
		d    *agentpb.ZoneDrift
		want string
	}{
		{&agentpb.ZoneDrift{Zone: "a.com.", WantSerial: 5}, "missing"},
		{&agentpb.ZoneDrift{Zone: "a.com.", WantSerial: 5, Serial: 3, Kind: "Master"}, "at serial 3, not 5"},
		{&agentpb.ZoneDrift{Zone: "a.com.", WantSerial: 5, Serial: 5, Kind: "Slave"}, "a Slave zone at serial 5, not the primary at 5"},
	} {
		if got := describeDrift(tc.d); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.d, got, tc.want)
		}
	}
}

// TestSyncHash: a new serial alone does not make a new sync (the periodic
// one carries it), a zone or master that changed does.
func TestSyncHash(t *testing.T) {
	spec := func(serial uint32, master string, zones ...string) *agentpb.SyncSecondaryZonesAction {
		s := &agentpb.SyncSecondaryZonesAction{}
		for _, z := range zones {
			s.Zones = append(s.Zones, &agentpb.SecondaryZone{Zone: z, Masters: []string{master}, Serial: serial})
		}
		return s
	}
	base := syncHash(spec(1, "192.0.2.1:53", "a.com", "b.com"))
	if syncHash(spec(2, "192.0.2.1:53", "a.com", "b.com")) != base {
		t.Error("a serial changed the hash")
	}
	for name, other := range map[string]*agentpb.SyncSecondaryZonesAction{
		"master":     spec(1, "192.0.2.2:53", "a.com", "b.com"),
		"zone added": spec(1, "192.0.2.1:53", "a.com", "b.com", "c.com"),
		"zone gone":  spec(1, "192.0.2.1:53", "a.com"),
		"renamed":    spec(1, "192.0.2.1:53", "a.com", "bb.com"),
	} {
		if syncHash(other) == base {
			t.Errorf("%s: same hash", name)
		}
	}
}

// A record the owner added before the controller filled in a new zone's
// defaults is kept; defaults at its name and type, or clashing with a CNAME
// there, give way.
func TestWithDefaults(t *testing.T) {
	z := &store.Zone{Name: "example.com"}
	defaults := defaultRecords(z, "192.0.2.10")
	own := []store.ZoneRecord{
		{ID: "r1", Name: "example.com.", Type: "TXT", Content: `"mine"`},
		{ID: "r2", Name: "www.example.com.", Type: "A", Content: "192.0.2.20"},
		{ID: "r3", Name: "shop.example.com.", Type: "A", Content: "192.0.2.30"},
	}
	got := withDefaults(defaults, own)
	for _, r := range own {
		if !slices.ContainsFunc(got, func(g store.ZoneRecord) bool { return g.ID == r.ID }) {
			t.Errorf("own record %s %s lost: %+v", r.Name, r.Type, got)
		}
	}
	for _, g := range got {
		if g.Name == "example.com." && g.Type == "TXT" && g.ID != "r1" {
			t.Errorf("default SPF kept beside the owner's TXT: %+v", g)
		}
		if g.Name == "www.example.com." && g.Type == "CNAME" {
			t.Errorf("default www CNAME kept beside the owner's www A: %+v", g)
		}
	}
	if !slices.ContainsFunc(got, func(g store.ZoneRecord) bool { return g.Name == "example.com." && g.Type == "MX" }) {
		t.Errorf("a default with no clash was dropped: %+v", got)
	}
	if n := len(withDefaults(defaults, nil)); n != len(defaults) {
		t.Errorf("no own records: %d records, want the %d defaults", n, len(defaults))
	}
	full := make([]store.ZoneRecord, dnszone.MaxZoneRecords-2)
	for i := range full {
		full[i] = store.ZoneRecord{ID: fmt.Sprintf("r%d", i), Name: fmt.Sprintf("h%d.example.com.", i), Type: "A", Content: "192.0.2.1"}
	}
	if n := len(withDefaults(defaults, full)); n != dnszone.MaxZoneRecords {
		t.Errorf("a nearly full zone got %d records with its defaults, want the limit %d", n, dnszone.MaxZoneRecords)
	}
}
