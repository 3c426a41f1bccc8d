package dns

import (
	"context"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/npanel/npanel/internal/testenv/pdns"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestPrimaryZoneCRUD(t *testing.T) {
	srv := pdns.Start(t, pdns.Options{})
	env := envFor(t, srv)
	const zone = "crud.npanel-test.com"
	spec := primarySpec(zone)

	r1 := apply(t, env, testModule.NewEnsureZone(spec))
	if !r1.Changed || r1.Existed || r1.Serial == 0 {
		t.Fatalf("create: %+v", r1)
	}
	if got := serialAt(t, srv.DNSAddr, zone); got != r1.Serial {
		t.Fatalf("served serial %d, want %d\n%s", got, r1.Serial, srv.LogTail())
	}
	checks := []struct {
		name  string
		qtype uint16
		want  string
	}{
		{zone, mdns.TypeA, "192.0.2.10"},
		{zone, mdns.TypeAAAA, "2001:db8::10"},
		{zone, mdns.TypeMX, "10 mail.crud.npanel-test.com."},
		{zone, mdns.TypeTXT, `"v=spf1 mx -all"`},
		{zone, mdns.TypeCAA, `0 issue "letsencrypt.org"`},
		{"_sip._tcp." + zone, mdns.TypeSRV, "10 5 5060 sip.crud.npanel-test.com."},
		{zone, mdns.TypeNS, "ns1.crud.npanel-test.com."},
	}
	for _, c := range checks {
		got := answers(query(t, srv.DNSAddr, c.name, c.qtype, false))
		found := false
		for _, g := range got {
			found = found || g == c.want
		}
		if !found {
			t.Errorf("%s %s = %q, want %q", c.name, mdns.TypeToString[c.qtype], got, c.want)
		}
	}

	// The same spec again changes nothing, not even the serial.
	r2 := apply(t, env, testModule.NewEnsureZone(spec))
	if r2.Changed || r2.Serial != r1.Serial || !r2.Existed {
		t.Fatalf("repeat: %+v (first %+v)", r2, r1)
	}

	// Update one record, add one, delete one. Every answer the change
	// touches was looked up before it, so each may be cached, the new
	// name's NXDOMAIN included: the change must be answered at once.
	if m := query(t, srv.DNSAddr, "new."+zone, mdns.TypeA, false); m.Rcode != mdns.RcodeNameError {
		t.Fatalf("new name before it was added: rcode %s", mdns.RcodeToString[m.Rcode])
	}
	spec.Records[0].Content = "192.0.2.11"
	spec.Records = append(spec.Records, rec("new."+zone, "A", "192.0.2.12", 300, 0))
	spec.Records = append(spec.Records[:7], spec.Records[8:]...) // drop TXT
	r3 := apply(t, env, testModule.NewEnsureZone(spec))
	if !r3.Changed || !(r3.Serial > r1.Serial) {
		t.Fatalf("update: %+v", r3)
	}
	if got := answers(query(t, srv.DNSAddr, zone, mdns.TypeA, false)); len(got) != 1 || got[0] != "192.0.2.11" {
		t.Errorf("A after update = %q", got)
	}
	if got := answers(query(t, srv.DNSAddr, "new."+zone, mdns.TypeA, false)); len(got) != 1 || got[0] != "192.0.2.12" {
		t.Errorf("new A = %q", got)
	}
	if got := answers(query(t, srv.DNSAddr, zone, mdns.TypeTXT, false)); len(got) != 0 {
		t.Errorf("TXT after delete = %q", got)
	}
	if got := serialAt(t, srv.DNSAddr, zone); got != r3.Serial {
		t.Errorf("served serial %d, want %d", got, r3.Serial)
	}

	// An rrset added behind the agent's back is removed by the next ensure.
	c := testModule.client(srv.APIAddr, srv.APIKey)
	if err := c.patchZone(context.Background(), zone+".", []pdnsRRset{{Name: "rogue." + zone + ".", Type: "A", TTL: 60, ChangeType: "REPLACE", Records: []pdnsRecord{{Content: "192.0.2.66"}}}}); err != nil {
		t.Fatal(err)
	}
	r4 := apply(t, env, testModule.NewEnsureZone(spec))
	if !r4.Changed || !(r4.Serial > r3.Serial) {
		t.Fatalf("drift repair: %+v", r4)
	}
	if m := query(t, srv.DNSAddr, "rogue."+zone, mdns.TypeA, false); m.Rcode != mdns.RcodeNameError {
		t.Errorf("rogue record still answered: %v", m.Answer)
	}

	// A change is applied from what the agent remembers, without reading
	// the zone; a zone removed behind the agent's back makes that PATCH
	// fail, and the agent falls back to converging: the zone is back.
	if err := c.deleteZone(context.Background(), zone+"."); err != nil {
		t.Fatal(err)
	}
	spec.Records = append(spec.Records, rec("back."+zone+".", "A", "192.0.2.13", 300, 0))
	r5 := apply(t, env, testModule.NewEnsureZone(spec))
	if !r5.Changed || r5.Existed {
		t.Fatalf("ensure after the zone was removed: %+v", r5)
	}
	if got := answers(query(t, srv.DNSAddr, "back."+zone, mdns.TypeA, false)); len(got) != 1 || got[0] != "192.0.2.13" {
		t.Errorf("A of recreated zone = %q", got)
	}

	d1 := apply(t, env, testModule.NewDeleteZone(&agentpb.DeleteZoneAction{Zone: zone}))
	if !d1.Existed || !d1.Changed {
		t.Fatalf("delete: %+v", d1)
	}
	if m := query(t, srv.DNSAddr, zone, mdns.TypeA, false); m.Rcode != mdns.RcodeRefused {
		t.Errorf("deleted zone answers rcode %s", mdns.RcodeToString[m.Rcode])
	}
	d2 := apply(t, env, testModule.NewDeleteZone(&agentpb.DeleteZoneAction{Zone: zone}))
	if d2.Existed || d2.Changed {
		t.Fatalf("delete again: %+v", d2)
	}
}
