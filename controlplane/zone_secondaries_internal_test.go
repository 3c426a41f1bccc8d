package controlplane

import (
	"fmt"
	"slices"
	"testing"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/protos/agentpb"
)

func secondaryZones(master string, n int) []*agentpb.SecondaryZone {
	var out []*agentpb.SecondaryZone
	for i := range n {
		out = append(out, &agentpb.SecondaryZone{Zone: fmt.Sprintf("z%05d.example.com", i), Masters: []string{master}, Serial: uint32(i)})
	}
	return out
}

// TestCompleteSync: a complete set is one bucket up to maxSyncZones, then
// a power of two of buckets of about that many, every zone once and in its
// bucket, an empty set one empty bucket.
func TestCompleteSync(t *testing.T) {
	for _, tc := range []struct{ zones, buckets int }{{0, 1}, {1, 1}, {maxSyncZones, 1}, {maxSyncZones + 1, 2}, {10_000, 16}, {100_000, 128}} {
		want := secondaryZones("192.0.2.1:53", tc.zones)
		specs := completeSync(want)
		if len(specs) != tc.buckets {
			t.Fatalf("%d zones: %d buckets, want %d", tc.zones, len(specs), tc.buckets)
		}
		seen := map[string]bool{}
		most := 0
		for i, s := range specs {
			if s.Bucket != uint32(i) || s.Buckets != uint32(tc.buckets) || len(s.Removed) != 0 {
				t.Fatalf("%d zones: bucket %d is %d of %d, removing %v", tc.zones, i, s.Bucket, s.Buckets, s.Removed)
			}
			for _, z := range s.Zones {
				if dnszone.Bucket(z.Zone, s.Buckets) != s.Bucket || seen[z.Zone] {
					t.Fatalf("%s in bucket %d of %d (seen before: %v)", z.Zone, s.Bucket, s.Buckets, seen[z.Zone])
				}
				seen[z.Zone] = true
			}
			most = max(most, len(s.Zones))
		}
		if len(seen) != tc.zones || most > maxSyncZones*5/4 {
			t.Fatalf("%d zones: %d sent, largest bucket %d", tc.zones, len(seen), most)
		}
	}
}

// TestChangeSync: a change names the zones added or moved to another
// master and those gone, not those whose serial alone changed, in tasks of
// at most maxSyncZones names.
func TestChangeSync(t *testing.T) {
	last := map[string]string{"a.com": "192.0.2.1:53", "b.com": "192.0.2.1:53", "c.com": "192.0.2.1:53", "gone.com": "192.0.2.1:53"}
	want := []*agentpb.SecondaryZone{
		{Zone: "a.com", Masters: []string{"192.0.2.1:53"}, Serial: 7}, // new serial only
		{Zone: "b.com", Masters: []string{"192.0.2.2:53"}},            // moved
		{Zone: "c.com", Masters: []string{"192.0.2.1:53"}},
		{Zone: "new.com", Masters: []string{"192.0.2.1:53"}},
	}
	specs := changeSync(last, want)
	if len(specs) != 1 || specs[0].Buckets != 0 {
		t.Fatalf("specs %v", specs)
	}
	var names []string
	for _, z := range specs[0].Zones {
		names = append(names, z.Zone)
	}
	if !slices.Equal(names, []string{"b.com", "new.com"}) || !slices.Equal(specs[0].Removed, []string{"gone.com"}) {
		t.Fatalf("changed %v, removed %v", names, specs[0].Removed)
	}
	if specs := changeSync(map[string]string{"a.com": "192.0.2.1:53"}, want[:1]); len(specs) != 0 {
		t.Fatalf("nothing changed, sent %v", specs)
	}
	// A bulk change is split.
	specs = changeSync(map[string]string{"gone.com": "192.0.2.1:53"}, secondaryZones("192.0.2.1:53", 2*maxSyncZones))
	n := 0
	for _, s := range specs {
		if len(s.Zones)+len(s.Removed) > maxSyncZones {
			t.Fatalf("a task of %d names", len(s.Zones)+len(s.Removed))
		}
		n += len(s.Zones) + len(s.Removed)
	}
	if len(specs) != 3 || n != 2*maxSyncZones+1 {
		t.Fatalf("%d tasks with %d names", len(specs), n)
	}
}
