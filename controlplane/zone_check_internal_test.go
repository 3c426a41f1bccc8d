package controlplane

import (
	"testing"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

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
