package controlplane

import (
	"reflect"
	"strings"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

// TestZoneFromFile: a zone restored from its BIND file gets the file's
// records, keeps the ids of the records the state also holds, leaves the
// glue out, and a damaged file changes nothing.
func TestZoneFromFile(t *testing.T) {
	zs := BackupStateZone{Name: "shop.example.com", Address: "192.0.2.1", Records: []store.ZoneRecord{
		{ID: "r1", Name: "shop.example.com.", Type: "A", Content: "192.0.2.1", TTL: 3600},
		{ID: "r2", Name: "shop.example.com.", Type: "MX", Content: "mail.shop.example.com.", TTL: 3600, Priority: 10},
		{ID: "r7", Name: "ns1.shop.example.com.", Type: "A", Content: "198.51.100.9", TTL: 300},
	}}
	file := "$ORIGIN shop.example.com.\n$TTL 3600\n" +
		"shop.example.com. 3600 IN SOA ns1.shop.example.com. hostmaster.shop.example.com. 5 10800 3600 604800 3600\n" +
		"shop.example.com. 3600 IN NS ns1.shop.example.com.\n" +
		"shop.example.com. 3600 IN NS ns2.shop.example.com.\n" +
		"shop.example.com. 3600 IN A 192.0.2.1\n" +
		"shop.example.com. 3600 IN MX 10 mail.shop.example.com.\n" +
		"ns1.shop.example.com. 300 IN A 198.51.100.9\n" + // the user's: in the state
		"ns2.shop.example.com. 3600 IN A 192.0.2.2\n" + // glue: not in the state
		"keep.shop.example.com. 300 IN TXT \"only in the file\"\n"
	got, err := zoneFromFile(zs, file)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.ZoneRecord{
		{ID: "", Name: "keep.shop.example.com.", Type: "TXT", Content: `"only in the file"`, TTL: 300},
		{ID: "r7", Name: "ns1.shop.example.com.", Type: "A", Content: "198.51.100.9", TTL: 300},
		{ID: "r1", Name: "shop.example.com.", Type: "A", Content: "192.0.2.1", TTL: 3600},
		{ID: "r2", Name: "shop.example.com.", Type: "MX", Content: "mail.shop.example.com.", TTL: 3600, Priority: 10},
	}
	if !reflect.DeepEqual(got.Records, want) {
		t.Fatalf("records\n got %+v\nwant %+v", got.Records, want)
	}
	if got.Name != zs.Name || got.Address != zs.Address {
		t.Fatalf("zone %+v", got)
	}
	// A refused line fails the zone instead of dropping the record.
	if _, err := zoneFromFile(zs, file+"bad.shop.example.com. 3600 IN A 300.1.2.3\n"); err == nil || !strings.Contains(err.Error(), "line 11") {
		t.Fatalf("damaged file: %v", err)
	}
	if _, err := zoneFromFile(zs, strings.Repeat("x", 5<<20)); err == nil {
		t.Fatal("oversized file accepted")
	}
}

// TestZoneFileWritesWhatThePrimaryServes: the file holds the records, the
// nameservers and the glue ensureSpec gives the primary; it round-trips
// back to the zone's records without the glue.
func TestZoneFileWritesWhatThePrimaryServes(t *testing.T) {
	z := &store.Zone{Name: "shop.example.com", Node: "web-1", Serial: 2026120601, Records: []store.ZoneRecord{
		{ID: "r1", Name: "shop.example.com.", Type: "A", Content: "192.0.2.1", TTL: 3600},
		{ID: "r2", Name: "www.shop.example.com.", Type: "CNAME", Content: "shop.example.com.", TTL: 3600},
	}}
	view := &dnsView{servers: map[string]dnsServer{"web-1": {host: "192.0.2.53"}}, order: []string{"web-1"}}
	text, err := zoneFile(z, view)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"shop.example.com. 3600 IN SOA ns1.shop.example.com. hostmaster.shop.example.com. 2026120601 ",
		"shop.example.com. 3600 IN NS ns1.shop.example.com.\n",
		"ns1.shop.example.com. 3600 IN A 192.0.2.53\n",
		"shop.example.com. 3600 IN A 192.0.2.1 ; id=r1\n",
		"www.shop.example.com. 3600 IN CNAME shop.example.com. ; id=r2\n",
	} {
		if !strings.Contains(text, line) {
			t.Errorf("zone file lacks %q:\n%s", line, text)
		}
	}
	back, err := zoneFromFile(BackupStateZone{Name: z.Name, Records: z.Records}, text)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Records, z.Records) {
		t.Fatalf("round trip\n got %+v\nwant %+v", back.Records, z.Records)
	}
	// The ids come from the file alone when the state holds no records
	// (backups since the records travel once); glue has none and stays
	// out.
	if back, err := zoneFromFile(BackupStateZone{Name: z.Name, RecordsInFile: true}, text); err != nil || !reflect.DeepEqual(back.Records, z.Records) {
		t.Fatalf("round trip from the file alone\n got %+v %v\nwant %+v", back.Records, err, z.Records)
	}
	// A primary that is not a running DNS server (or no DNS server at
	// all): the records and the NS set, without the glue nobody knows.
	text, err = zoneFile(&store.Zone{Name: z.Name, Node: "gone", Records: z.Records}, &dnsView{servers: map[string]dnsServer{}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "IN NS ns1.shop.example.com.\n") || strings.Contains(text, "ns1.shop.example.com. 3600 IN A") {
		t.Fatalf("zone file without a known primary:\n%s", text)
	}
	if back, err := zoneFromFile(BackupStateZone{Name: z.Name, Records: z.Records}, text); err != nil || !reflect.DeepEqual(back.Records, z.Records) {
		t.Fatalf("round trip without glue: %+v %v", back.Records, err)
	}
	// Records that do not validate are an error, reported as the item.
	if _, err := zoneFile(&store.Zone{Name: z.Name, Node: "web-1", Records: []store.ZoneRecord{{Name: "x.shop.example.com.", Type: "A", Content: "300.1.1.1", TTL: 3600}}}, view); err == nil {
		t.Fatal("a zone with a bad record was written")
	}
}

// TestNoteID: a line's id comes from its last "; id=" comment only when
// that is a record id; text inside a TXT record does not pass for one.
func TestNoteID(t *testing.T) {
	for line, want := range map[string]string{
		"a.example.com. 300 IN A 192.0.2.1 ; id=r12":                    "r12",
		"a.example.com. 300 IN A 192.0.2.1":                             "",
		`a.example.com. 300 IN TXT "x ; id=r5"`:                         "",
		`a.example.com. 300 IN TXT "x ; id=r5" ; id=r6`:                 "r6",
		"a.example.com. 300 IN A 192.0.2.1 ; id=12":                     "",
		"a.example.com. 300 IN A 192.0.2.1 ; id=r":                      "",
		"a.example.com. 300 IN A 192.0.2.1 ; id=r1 2":                   "",
		"a.example.com. 300 IN A 192.0.2.1 ; id=r123456789012345678901": "",
	} {
		if got := noteID(line); got != want {
			t.Errorf("noteID(%q) = %q, want %q", line, got, want)
		}
	}
}

func FuzzNoteID(f *testing.F) {
	for _, s := range []string{"x ; id=r1", `"; id=r2"`, " ; id=", " ; id=r99 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if id := noteID(line); id != "" && !validRecordID(id) {
			t.Fatalf("noteID(%q) = %q, not a record id", line, id)
		}
	})
}
