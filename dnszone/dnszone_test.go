package dnszone

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const z = "example.com."

func TestValidateRecordAccepted(t *testing.T) {
	tests := []struct {
		in   Record
		want string // canonical PDNSContent
	}{
		{Record{Name: "example.com", Type: "a", Content: "192.0.2.1"}, "192.0.2.1"},
		{Record{Name: "WWW.example.com.", Type: "AAAA", Content: "2001:DB8:0:0::1"}, "2001:db8::1"},
		{Record{Name: "www.example.com", Type: "CNAME", Content: "Example.COM"}, "example.com."},
		{Record{Name: "example.com", Type: "MX", Content: "mail.example.com", Priority: 10}, "10 mail.example.com."},
		{Record{Name: "example.com", Type: "MX", Content: "."}, "0 ."},
		{Record{Name: "example.com", Type: "TXT", Content: "v=spf1 -all"}, `"v=spf1 -all"`},
		{Record{Name: "example.com", Type: "TXT", Content: `"a b" "c\"d"`}, `"a b" "c\"d"`},
		{Record{Name: "example.com", Type: "TXT", Content: strings.Repeat("k", 300)}, `"` + strings.Repeat("k", 255) + `" "` + strings.Repeat("k", 45) + `"`},
		{Record{Name: "_dmarc.example.com", Type: "TXT", Content: "v=DMARC1; p=none"}, `"v=DMARC1; p=none"`},
		{Record{Name: "sub.example.com", Type: "NS", Content: "ns1.other.net"}, "ns1.other.net."},
		{Record{Name: "_sip._tcp.example.com", Type: "SRV", Content: "5 5060 sip.example.com", Priority: 10}, "10 5 5060 sip.example.com."},
		{Record{Name: "example.com", Type: "CAA", Content: `0 issue "letsencrypt.org"`}, `0 issue "letsencrypt.org"`},
		{Record{Name: "example.com", Type: "CAA", Content: `128 iodef "mailto:sec@example.com"`}, `128 iodef "mailto:sec@example.com"`},
		{Record{Name: "1.example.com", Type: "PTR", Content: "host.example.net"}, "host.example.net."},
		{Record{Name: "*.example.com", Type: "A", Content: "192.0.2.2"}, "192.0.2.2"},
	}
	for _, tt := range tests {
		got, err := ValidateRecord(z, tt.in, 3600)
		if err != nil {
			t.Errorf("%+v: %v", tt.in, err)
			continue
		}
		if got.PDNSContent() != tt.want || got.TTL != 3600 {
			t.Errorf("%+v = %q ttl %d, want %q", tt.in, got.PDNSContent(), got.TTL, tt.want)
		}
		// Canonical is a fixed point.
		again, err := ValidateRecord(z, got, 0)
		if err != nil || again != got {
			t.Errorf("not idempotent: %+v → %+v, %v", got, again, err)
		}
	}
}

func TestValidateRecordRefused(t *testing.T) {
	tests := []struct {
		in   Record
		want string
	}{
		{Record{Name: "x.example.org", Type: "A", Content: "192.0.2.1"}, "out of zone"},
		{Record{Name: "example.com", Type: "A", Content: "192.0.2.1", TTL: 10}, "TTL 10 out of range"},
		{Record{Name: "example.com", Type: "A", Content: "192.0.2.1", TTL: 9999999}, "out of range"},
		{Record{Name: "example.com", Type: "A", Content: "300.1.1.1"}, "not an IPv4 address"},
		{Record{Name: "example.com", Type: "A", Content: "2001:db8::1"}, "not an IPv4 address"},
		{Record{Name: "example.com", Type: "AAAA", Content: "192.0.2.1"}, "not an IPv6 address"},
		{Record{Name: "example.com", Type: "MX", Content: "192.0.2.1", Priority: 10}, "is an IP address"},
		{Record{Name: "sub.example.com", Type: "NS", Content: "192.0.2.1"}, "is an IP address"},
		{Record{Name: "_s._tcp.example.com", Type: "SRV", Content: "1 80 192.0.2.1"}, "is an IP address"},
		{Record{Name: "_s._tcp.example.com", Type: "SRV", Content: "80 host.example.com"}, "weight port target"},
		{Record{Name: "_s._tcp.example.com", Type: "SRV", Content: "1 70000 host.example.com"}, "0..65535"},
		{Record{Name: "www.example.com", Type: "CNAME", Content: "www.example.com"}, "points to itself"},
		{Record{Name: "example.com", Type: "A", Content: "192.0.2.1", Priority: 5}, "only MX and SRV"},
		{Record{Name: "example.com", Type: "MX", Content: "mx.example.com", Priority: 70000}, "exceeds 65535"},
		{Record{Name: "example.com", Type: "SOA", Content: "x"}, "managed by the server"},
		{Record{Name: "example.com", Type: "DNSKEY", Content: "x"}, "DNSSEC"},
		{Record{Name: "example.com", Type: "HINFO", Content: "x"}, "not supported"},
		{Record{Name: "example.com", Type: "CAA", Content: `0 foo "x"`}, "CAA tag"},
		{Record{Name: "example.com", Type: "CAA", Content: `3 issue "x"`}, "CAA flags"},
		{Record{Name: "example.com", Type: "TXT", Content: "bad\x01"}, "control character"},
		{Record{Name: "example.com", Type: "TXT", Content: `"unterminated`}, "does not parse"},
		{Record{Name: "a..example.com", Type: "A", Content: "192.0.2.1"}, "empty label"},
		{Record{Name: "a.*.example.com", Type: "A", Content: "192.0.2.1"}, "wildcard"},
		{Record{Name: "ex ample.example.com", Type: "A", Content: "192.0.2.1"}, "contains"},
		{Record{Name: "bücher.example.com", Type: "A", Content: "192.0.2.1"}, "punycode"},
		{Record{Name: "example.com", Type: "MX", Content: "mx_1.example.com"}, "'_'"},
		{Record{Name: "*.example.com", Type: "NS", Content: "ns.example.net"}, "wildcard"},
		{Record{Name: "example.com", Type: "A", Content: ""}, "empty"},
		{Record{Name: "example.com", Type: "TXT", Content: strings.Repeat("x", MaxContentLen+1)}, "at most"},
	}
	for _, tt := range tests {
		_, err := ValidateRecord(z, tt.in, 3600)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v = %v, want error containing %q", tt.in, err, tt.want)
		}
	}
}

func TestCheckRecordsSetRules(t *testing.T) {
	tests := []struct {
		name string
		recs []Record
		want string
	}{
		{"cname beside A", []Record{{Name: "www.example.com", Type: "CNAME", Content: "example.com"}, {Name: "www.example.com", Type: "A", Content: "192.0.2.1"}}, "cannot coexist"},
		{"two cnames", []Record{{Name: "www.example.com", Type: "CNAME", Content: "a.example.com"}, {Name: "www.example.com", Type: "CNAME", Content: "b.example.com"}}, "only one CNAME"},
		{"cname at apex", []Record{{Name: "example.com", Type: "CNAME", Content: "other.net"}}, "apex"},
		{"apex NS", []Record{{Name: "example.com", Type: "NS", Content: "ns.example.net"}}, "nameservers"},
		{"duplicate", []Record{{Name: "example.com", Type: "A", Content: "192.0.2.1"}, {Name: "example.com", Type: "A", Content: "192.0.2.1"}}, "listed twice"},
		{"ttl split", []Record{{Name: "example.com", Type: "A", Content: "192.0.2.1", TTL: 300}, {Name: "example.com", Type: "A", Content: "192.0.2.2", TTL: 600}}, "one TTL"},
	}
	for _, tt := range tests {
		_, err := ValidateRecords(z, tt.recs, 3600)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	ok := []Record{{Name: "example.com", Type: "A", Content: "192.0.2.1"}, {Name: "example.com", Type: "A", Content: "192.0.2.2"}, {Name: "www.example.com", Type: "CNAME", Content: "example.com"}}
	if _, err := ValidateRecords(z, ok, 3600); err != nil {
		t.Errorf("valid set: %v", err)
	}
}

func TestValidateZone(t *testing.T) {
	got, err := ValidateZone(Zone{Name: "Example.com", Nameservers: []string{"ns1.example.net", "ns2.example.net."}})
	if err != nil {
		t.Fatal(err)
	}
	if got.SOA.MName != "ns1.example.net." || got.SOA.RName != "hostmaster.example.com." || got.SOA.Refresh != 10800 {
		t.Errorf("defaults: %+v", got.SOA)
	}
	bad := []struct {
		z    Zone
		want string
	}{
		{Zone{Name: "example.com"}, "at least one nameserver"},
		{Zone{Name: "com", Nameservers: []string{"ns.example.net"}}, "at least 2 labels"},
		{Zone{Name: "example.com", Nameservers: []string{"192.0.2.1"}}, "IP address"},
		{Zone{Name: "example.com", Nameservers: []string{"a.example.net", "a.example.net"}}, "twice"},
		{Zone{Name: "example.com", Nameservers: []string{"a.example.net"}, SOA: SOA{Refresh: 5}}, "refresh 5"},
		{Zone{Name: "example.com", Nameservers: []string{"a.example.net"}, SOA: SOA{RName: "first.last@example.com"}}, "local part"},
	}
	for _, b := range bad {
		if _, err := ValidateZone(b.z); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: %v, want %q", b.z, err, b.want)
		}
	}
}

func TestOwnerName(t *testing.T) {
	for in, want := range map[string]string{"": z, "@": z, "www": "www.example.com.", "www.example.com": "www.example.com.", "WWW.Example.Com.": "www.example.com.", "a.b": "a.b.example.com."} {
		if got, err := OwnerName("example.com", in); err != nil || got != want {
			t.Errorf("OwnerName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := OwnerName("example.com", "www.example.org."); err == nil || !strings.Contains(err.Error(), "out of zone") {
		t.Errorf("absolute outside: %v", err)
	}
}

func TestNextSerial(t *testing.T) {
	day := time.Date(2025, 3, 15, 12, 0, 0, 0, time.UTC)
	tests := []struct{ prev, want uint32 }{
		{0, 2025031500},
		{1, 2025031500},
		{2024123199, 2025031500},
		{2025031500, 2025031501},
		{2025031599, 2025031600}, // > 100 changes run into the next day's numbers
		{2025031700, 2025031701}, // a serial from the future still grows
		{4000000000, 4000000001}, // newer in serial arithmetic than the date
		{^uint32(0), 2025031500}, // 2^32-1 precedes the date in serial arithmetic
	}
	for _, tt := range tests {
		got := NextSerial(tt.prev, day)
		if got != tt.want || !SerialLess(tt.prev, got) {
			t.Errorf("NextSerial(%d) = %d, want %d", tt.prev, got, tt.want)
		}
	}
}

func TestReverseZones(t *testing.T) {
	tests := []struct {
		cidr string
		want []string
		err  string
	}{
		{cidr: "192.0.2.0/24", want: []string{"2.0.192.in-addr.arpa."}},
		{cidr: "10.0.0.0/8", want: []string{"10.in-addr.arpa."}},
		{cidr: "198.51.100.0/22", want: []string{"100.51.198.in-addr.arpa.", "101.51.198.in-addr.arpa.", "102.51.198.in-addr.arpa.", "103.51.198.in-addr.arpa."}},
		{cidr: "2001:db8::/32", want: []string{"8.b.d.0.1.0.0.2.ip6.arpa."}},
		{cidr: "2001:db8:aa00::/39", want: []string{"a.a.8.b.d.0.1.0.0.2.ip6.arpa.", "b.a.8.b.d.0.1.0.0.2.ip6.arpa."}},
		{cidr: "192.0.2.0/26", err: "RFC 2317"},
		{cidr: "192.0.2.1/24", err: "host bits"},
		{cidr: "0.0.0.0/4", err: "too short"},
		{cidr: "2000::/12", err: "too short"},
		{cidr: "nonsense", err: "cidr"},
	}
	for _, tt := range tests {
		got, err := ReverseZones(tt.cidr)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: %v, want %q", tt.cidr, err, tt.err)
			}
			continue
		}
		if err != nil || strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("%s = %v, %v; want %v", tt.cidr, got, err, tt.want)
		}
		for _, g := range got {
			if _, err := ZoneName(g); err != nil {
				t.Errorf("%s: zone %s invalid: %v", tt.cidr, g, err)
			}
		}
	}
}

func TestParseZoneFile(t *testing.T) {
	b, err := os.ReadFile("testdata/example.com.zone")
	if err != nil {
		t.Fatal(err)
	}
	im, err := ParseZone("example.com", string(b))
	if err != nil {
		t.Fatal(err)
	}
	if im.SOA == nil || im.SOA.MName != "ns1.example.net." || im.SOA.Refresh != 10800 || im.SOA.Expire != 604800 {
		t.Errorf("SOA = %+v", im.SOA)
	}
	if strings.Join(im.Nameservers, " ") != "ns1.example.net. ns2.example.net." {
		t.Errorf("nameservers = %v", im.Nameservers)
	}
	refused := map[int]string{}
	for _, l := range im.Lines {
		if !l.Imported {
			refused[l.Line] = l.Reason
		}
	}
	wantRefused := map[int]string{
		30: "IP address", 33: "cannot coexist", 34: "holds a CNAME", 35: "out of zone",
		36: "not supported", 37: "out of range", 38: "bad A", 39: "$INCLUDE",
	}
	for line, want := range wantRefused {
		if !strings.Contains(refused[line], want) {
			t.Errorf("line %d: reason %q, want %q", line, refused[line], want)
		}
	}
	if len(refused) != len(wantRefused) {
		t.Errorf("refused %v", refused)
	}
	has := func(s string) bool {
		for _, r := range im.Records {
			if r.String() == s {
				return true
			}
		}
		return false
	}
	for _, s := range []string{
		"www.example.com. 300 IN CNAME example.com.",
		"example.com. 3600 IN MX 10 mail.example.com.",
		"_sip._tcp.example.com. 3600 IN SRV 10 60 5060 sipserver.example.com.",
		"shop.example.com. 3600 IN A 192.0.2.40",
		"api.shop.example.com. 3600 IN AAAA 2001:db8::40",
		"*.dev.example.com. 3600 IN A 192.0.2.30",
		`default._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=rsa; " "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYt"`,
	} {
		if !has(s) {
			t.Errorf("missing %s", s)
		}
	}
	if len(im.Records) != 17 {
		t.Errorf("%d records imported, want 17", len(im.Records))
	}
	if _, err := ValidateRecords(im.Zone, im.Records, 3600); err != nil {
		t.Errorf("imported set does not validate: %v", err)
	}
}

func FuzzParseZone(f *testing.F) {
	b, _ := os.ReadFile("testdata/example.com.zone")
	f.Add(string(b))
	f.Add("$TTL 1h\n@ IN A 192.0.2.1\n (\n")
	f.Add("www IN TXT \"a\\\"b\" ; c\n  IN A 1.2.3.4\n")
	f.Fuzz(func(t *testing.T, text string) {
		im, err := ParseZone("example.com", text)
		if err != nil {
			return
		}
		// Everything imported is a valid set PowerDNS accepts.
		if _, err := ValidateRecords(im.Zone, im.Records, DefaultTTL); err != nil {
			t.Fatalf("imported records refused: %v", err)
		}
		for _, r := range im.Records {
			if _, err := dns.NewRR(r.String()); err != nil {
				t.Fatalf("imported %q does not parse: %v", r.String(), err)
			}
		}
	})
}

func FuzzValidateRecord(f *testing.F) {
	f.Add("www.example.com", "A", "192.0.2.1", uint32(300), uint32(0))
	f.Add("example.com", "MX", "mail.example.com", uint32(0), uint32(10))
	f.Add("example.com", "TXT", `"a" "b\"c"`, uint32(0), uint32(0))
	f.Add("_s._tcp.example.com", "SRV", "1 80 x.example.com", uint32(60), uint32(1))
	f.Add("example.com", "CAA", `0 issue "ca.example"`, uint32(60), uint32(0))
	f.Fuzz(func(t *testing.T, name, typ, content string, ttl, prio uint32) {
		r, err := ValidateRecord("example.com", Record{Name: name, Type: typ, Content: content, TTL: ttl, Priority: prio}, DefaultTTL)
		if err != nil {
			return
		}
		if _, err := dns.NewRR(r.String()); err != nil {
			t.Fatalf("accepted %q does not parse: %v", r.String(), err)
		}
		again, err := ValidateRecord("example.com", r, DefaultTTL)
		if err != nil || again != r {
			t.Fatalf("canonical form not stable: %+v → %+v %v", r, again, err)
		}
	})
}

// FuzzSetRulesAtOneName checks what the API relies on to check a change
// at the names it writes only: for a zone whose records pass the set
// rules, a new record breaks them exactly when it breaks them among the
// records at its own name.
func FuzzSetRulesAtOneName(f *testing.F) {
	f.Add("www", "CNAME", "example.com", "www", "A", "192.0.2.1", "@", "MX", "mail.example.com", "www", "TXT", "x", uint32(300))
	f.Add("a", "A", "192.0.2.1", "a", "A", "192.0.2.2", "b", "TXT", "x", "a", "A", "192.0.2.1", uint32(300))
	f.Add("a", "A", "192.0.2.1", "b", "A", "192.0.2.2", "c", "TXT", "x", "a", "A", "192.0.2.3", uint32(600))
	f.Add("@", "A", "192.0.2.1", "b", "A", "192.0.2.2", "c", "TXT", "x", "@", "CNAME", "b.example.com", uint32(300))
	f.Fuzz(func(t *testing.T, n1, t1, c1, n2, t2, c2, n3, t3, c3, nr, tr, cr string, ttl uint32) {
		const zone = "example.com."
		var base []Record
		for _, in := range [][3]string{{n1, t1, c1}, {n2, t2, c2}, {n3, t3, c3}} {
			owner, err := OwnerName(zone, in[0])
			if err != nil {
				continue
			}
			if r, err := ValidateRecord(zone, Record{Name: owner, Type: in[1], Content: in[2], TTL: 300}, DefaultTTL); err == nil {
				base = append(base, r)
			}
		}
		set, _ := CheckRecords(zone, base, DefaultTTL)
		if _, errs := CheckRecords(zone, set, DefaultTTL); len(errs) > 0 {
			t.Fatalf("accepted records refused on a second check: %v", errs[0])
		}
		owner, err := OwnerName(zone, nr)
		if err != nil {
			return
		}
		r, err := ValidateRecord(zone, Record{Name: owner, Type: tr, Content: cr, TTL: ttl}, DefaultTTL)
		if err != nil {
			return
		}
		_, whole := CheckRecords(zone, append(slices.Clone(set), r), DefaultTTL)
		var at []Record
		for _, x := range set {
			if x.Name == r.Name {
				at = append(at, x)
			}
		}
		_, local := CheckRecords(zone, append(at, r), DefaultTTL)
		if (len(whole) > 0) != (len(local) > 0) {
			t.Fatalf("adding %+v to %+v: whole zone refuses %v, its name %v", r, set, whole, local)
		}
	})
}

// BenchmarkValidateZone500 validates a 500-record zone, which the API and
// the agent each do on every change of it.
func BenchmarkValidateZone500(b *testing.B) {
	in := Zone{Name: "bench.example.com", Nameservers: []string{"ns1.example.net", "ns2.example.net"}}
	in.Records = append(in.Records,
		Record{Name: "bench.example.com", Type: "MX", Content: "mail.bench.example.com", Priority: 10},
		Record{Name: "bench.example.com", Type: "TXT", Content: "v=spf1 a mx -all"},
		Record{Name: "www.bench.example.com", Type: "CNAME", Content: "bench.example.com"})
	for i := len(in.Records); i < 500; i++ {
		in.Records = append(in.Records, Record{Name: "r" + strconv.Itoa(i) + ".bench.example.com", Type: "A", Content: "198.51.100." + strconv.Itoa(i%250+1), TTL: 300})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ValidateZone(in); err != nil {
			b.Fatal(err)
		}
	}
}

// A file of more records than a zone holds is an error, not an import
// that reports every line imported and imports none.
func TestParseZoneTooManyRecords(t *testing.T) {
	file := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "h%d 300 IN A 192.0.2.1\n", i)
		}
		return b.String()
	}
	if _, err := ParseZone("example.com", file(MaxRecords+1)); !errors.Is(err, ErrTooManyRecords) {
		t.Fatalf("%d records: %v", MaxRecords+1, err)
	}
	im, err := ParseZone("example.com", file(MaxRecords))
	if err != nil || len(im.Records) != MaxRecords {
		t.Fatalf("%d records: %v", MaxRecords, err)
	}
	if MaxZoneRecords+MaxGlueRecords > MaxRecords {
		t.Fatalf("the API's limit %d plus %d glue records exceeds what a node accepts (%d)", MaxZoneRecords, MaxGlueRecords, MaxRecords)
	}
}

// A second line in a record's content was accepted and silently dropped by
// the TXT and CAA parsers (security suite finding).
func TestRecordContentControlCharacters(t *testing.T) {
	for _, r := range []Record{
		{Name: "example.com", Type: "TXT", Content: "\"ok\"\nevil 3600 IN A 192.0.2.66"},
		{Name: "example.com", Type: "TXT", Content: "ok\rmore"},
		{Name: "example.com", Type: "CAA", Content: "0 issue \"ca.example.com\"\nx A 192.0.2.66"},
		{Name: "example.com", Type: "MX", Content: "mail.example.com.\x00", Priority: 10},
	} {
		if _, err := ValidateRecord("example.com", r, 3600); err == nil || !strings.Contains(err.Error(), "control character") {
			t.Errorf("%s %q: got %v, want a control character refusal", r.Type, r.Content, err)
		}
	}
	if _, err := ValidateRecord("example.com", Record{Name: "example.com", Type: "TXT", Content: "\"v=spf1 -all\"\n"}, 3600); err != nil {
		t.Errorf("a trailing line break is whitespace: %v", err)
	}
}

// TestBucket: a name falls in the same bucket however it is written, and
// names spread over the buckets.
func TestBucket(t *testing.T) {
	if Bucket("Example.COM.", 16) != Bucket("example.com", 16) {
		t.Fatal("the same zone in two buckets")
	}
	if Bucket("example.com", 0) != 0 || Bucket("example.com", 1) != 0 {
		t.Fatal("one bucket is bucket 0")
	}
	counts := make([]int, 8)
	for i := range 8000 {
		counts[Bucket(fmt.Sprintf("z%d.example.com", i), 8)]++
	}
	for b, n := range counts {
		if n < 800 || n > 1200 {
			t.Fatalf("bucket %d holds %d of 8000 zones: %v", b, n, counts)
		}
	}
}
