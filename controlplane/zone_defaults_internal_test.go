package controlplane

import (
	"fmt"
	"slices"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
)

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
