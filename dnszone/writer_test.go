package dnszone

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// roundTrip writes z and parses the file back; every line must import and
// the zone must come back as ValidateZone has it.
func roundTrip(t *testing.T, z Zone, serial uint32) {
	t.Helper()
	want, err := ValidateZone(z)
	if err != nil {
		t.Fatalf("zone does not validate: %v", err)
	}
	text, err := WriteZone(z, serial)
	if err != nil {
		t.Fatalf("WriteZone: %v", err)
	}
	im, err := ParseZone(z.Name, text)
	if err != nil {
		t.Fatalf("ParseZone of the written file: %v\n%s", err, text)
	}
	for _, l := range im.Lines {
		if !l.Imported {
			t.Fatalf("line %d %q refused: %s\n%s", l.Line, l.Text, l.Reason, text)
		}
	}
	if im.SOA == nil || *im.SOA != want.SOA {
		t.Fatalf("SOA = %+v, want %+v", im.SOA, want.SOA)
	}
	if !reflect.DeepEqual(im.Nameservers, want.Nameservers) {
		t.Fatalf("nameservers = %v, want %v", im.Nameservers, want.Nameservers)
	}
	if len(im.Records) != len(want.Records) || (len(want.Records) > 0 && !reflect.DeepEqual(im.Records, want.Records)) {
		t.Fatalf("records differ:\n got %v\nwant %v\n%s", im.Records, want.Records, text)
	}
}

func TestWriteZoneRoundTrip(t *testing.T) {
	b, err := os.ReadFile("testdata/example.com.zone")
	if err != nil {
		t.Fatal(err)
	}
	im, err := ParseZone("example.com", string(b))
	if err != nil {
		t.Fatal(err)
	}
	z := Zone{Name: im.Zone, SOA: *im.SOA, Nameservers: im.Nameservers, Records: im.Records}
	roundTrip(t, z, 2026120601)
	// A zone as the control plane holds it: no SOA fields, TXT with
	// quotes and escapes, a CAA, a null MX, glue.
	roundTrip(t, Zone{Name: "shop.example", Nameservers: []string{"ns1.shop.example", "ns2.elsewhere.net"}, Records: []Record{
		{Name: "ns1.shop.example.", Type: TypeA, Content: "192.0.2.1"},
		{Name: "shop.example.", Type: TypeTXT, Content: `"a \"quoted\" ; not a comment ( nor a paren" "\\ and \200"`, TTL: 300},
		{Name: "shop.example.", Type: TypeCAA, Content: `0 issue "letsencrypt.org; validationmethods=dns-01"`},
		{Name: "nomail.shop.example.", Type: TypeMX, Content: ".", Priority: 0},
		{Name: "_sip._udp.shop.example.", Type: TypeSRV, Content: "0 5060 .", Priority: 10},
		{Name: "*.shop.example.", Type: TypeAAAA, Content: "2001:db8::1", TTL: 60},
	}}, 1)
	if _, err := WriteZone(Zone{Name: "x.example"}, 1); err == nil {
		t.Fatal("a zone without nameservers was written")
	}
}

func TestWriteZoneLines(t *testing.T) {
	text, err := WriteZone(Zone{Name: "example.com", Nameservers: []string{"ns1.example.net"}, Records: []Record{
		{Name: "www.example.com.", Type: TypeCNAME, Content: "example.com", TTL: 300},
	}}, 7)
	if err != nil {
		t.Fatal(err)
	}
	want := "$ORIGIN example.com.\n$TTL 3600\n" +
		"example.com. 3600 IN SOA ns1.example.net. hostmaster.example.com. 7 10800 3600 604800 3600\n" +
		"example.com. 3600 IN NS ns1.example.net.\n" +
		"www.example.com. 300 IN CNAME example.com.\n"
	if text != want {
		t.Fatalf("got\n%s\nwant\n%s", text, want)
	}
}

// FuzzWriteZoneRoundTrip: whatever ParseZone imports, WriteZone writes a
// file ParseZone reads back to the same zone.
func FuzzWriteZoneRoundTrip(f *testing.F) {
	b, _ := os.ReadFile("testdata/example.com.zone")
	f.Add(string(b), uint32(1))
	f.Add("@ IN TXT \"a\\\"b;c(\" \"\\255\"\nx IN CAA 0 iodef \"mailto:a@b.c\"\n", uint32(0))
	f.Add("_a._tcp 60 IN SRV 1 2 3 .\n@ IN MX 0 .\n* IN A 192.0.2.1\n", uint32(4294967295))
	f.Fuzz(func(t *testing.T, text string, serial uint32) {
		im, err := ParseZone("example.com", text)
		if err != nil || strings.Count(text, "\n") > 200 {
			return
		}
		z := Zone{Name: im.Zone, Nameservers: im.Nameservers, Records: im.Records}
		if im.SOA != nil {
			z.SOA = *im.SOA
		}
		if len(z.Nameservers) == 0 {
			z.Nameservers = []string{"ns1.example.net."}
		}
		if _, err := ValidateZone(z); err != nil {
			// The SOA's TTL defaults records' TTL 0 only; an imported set
			// is already valid, so only the SOA can be refused here.
			if im.SOA == nil {
				t.Fatalf("imported zone does not validate: %v", err)
			}
			return
		}
		roundTrip(t, z, serial)
	})
}

// TestParseZoneNumericTargets: "MX 10 192.0.2.1" is a relative name in a
// zone file, an address written where a name belongs, and is refused; the
// same target written absolute is a host name (one WriteZone writes) and
// imports.
func TestParseZoneNumericTargets(t *testing.T) {
	im, err := ParseZone("example.com", "a IN MX 10 192.0.2.1\nb IN MX 10 192.0.2.1.example.com.\nc IN CNAME ( 192.0.2.2.example.com. )\n")
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]bool{}
	for _, l := range im.Lines {
		got[l.Line] = l.Imported
	}
	if got[1] || !got[2] || !got[3] {
		t.Fatalf("imported by line %v: %+v", got, im.Lines)
	}
}
