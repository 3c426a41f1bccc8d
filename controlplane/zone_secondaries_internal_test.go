package controlplane

import (
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

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
