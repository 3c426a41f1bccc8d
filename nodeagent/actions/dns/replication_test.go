package dns

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/internal/testenv/pdns"
	"github.com/npanel/npanel/protos/agentpb"
)

// pair starts a primary on 127.0.0.1 and a secondary on 127.0.0.2.
func pair(t testing.TB) (prim, sec *pdns.Server) {
	return pdns.Start(t, pdns.Options{IP: "127.0.0.1"}), pdns.Start(t, pdns.Options{IP: "127.0.0.2"})
}

func TestReplicationAndHealing(t *testing.T) {
	prim, sec := pair(t)
	penv, senv := envFor(t, prim), envFor(t, sec)
	zones := []string{"rep1.npanel-test.com", "rep2.npanel-test.com"}
	sync := agentpb.SyncSecondaryZonesAction{Buckets: 1} // the whole set
	for _, z := range zones {
		spec := primarySpec(z)
		spec.Secondaries = []string{sec.DNSAddr}
		apply(t, penv, testModule.NewEnsureZone(spec))
		sync.Zones = append(sync.Zones, &agentpb.SecondaryZone{Zone: z, Masters: []string{prim.DNSAddr}})
	}
	// One zone through ensure_zone SECONDARY, the other through sync.
	r := apply(t, senv, testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: zones[0], Kind: agentpb.ZoneKind_ZONE_KIND_SECONDARY, Masters: []string{prim.DNSAddr}}))
	if !r.Changed || r.Kind != "Slave" {
		t.Fatalf("ensure secondary: %+v", r)
	}
	out, err := testModule.NewSyncSecondaryZones(&sync).Apply(context.Background(), senv)
	if err != nil {
		t.Fatal(err)
	}
	if sr := out.(*agentpb.SyncSecondaryZonesResult); len(sr.Added) != 1 || sr.Unchanged != 1 {
		t.Fatalf("sync: %+v", sr)
	}
	for _, z := range zones {
		want := serialAt(t, prim.DNSAddr, z)
		waitFor(t, 10*time.Second, z+" on the secondary", func() bool { return serialAt(t, sec.DNSAddr, z) == want })
	}

	// A change reaches the secondary through NOTIFY.
	spec := primarySpec(zones[0])
	spec.Secondaries = []string{sec.DNSAddr}
	spec.Records[0].Content = "192.0.2.99"
	start := time.Now()
	r = apply(t, penv, testModule.NewEnsureZone(spec))
	d := waitFor(t, 10*time.Second, "new serial on the secondary", func() bool { return serialAt(t, sec.DNSAddr, zones[0]) == r.Serial })
	t.Logf("change → secondary serves serial %d after %s (apply %s)", r.Serial, time.Since(start).Round(time.Millisecond), d.Round(time.Millisecond))
	if got := answers(query(t, sec.DNSAddr, zones[0], mdns.TypeA, false)); len(got) != 1 || got[0] != "192.0.2.99" {
		t.Errorf("secondary A = %q", got)
	}

	// AXFR only to the secondary's address.
	if err := axfr(prim.DNSAddr, zones[0], "127.0.0.1"); err == nil {
		t.Error("AXFR from 127.0.0.1 allowed, only the secondary 127.0.0.2 should be")
	}
	if err := axfr(prim.DNSAddr, zones[0], "127.0.0.2"); err != nil {
		t.Errorf("AXFR from the secondary: %v", err)
	}

	// Wipe the secondary (and give it a stray Slave zone and a primary zone
	// of its own); sync heals it and leaves the primary zone alone.
	sc := testModule.client(sec.APIAddr, sec.APIKey)
	ctx := context.Background()
	for _, z := range zones {
		if err := sc.deleteZone(ctx, z+"."); err != nil {
			t.Fatal(err)
		}
	}
	if err := sc.createZone(ctx, &pdnsZone{Name: "stray.npanel-test.com.", Kind: "Slave", Masters: []string{prim.DNSAddr}}); err != nil {
		t.Fatal(err)
	}
	own := primarySpec("own.npanel-test.com")
	apply(t, senv, testModule.NewEnsureZone(own))
	if m := query(t, sec.DNSAddr, zones[0], mdns.TypeSOA, false); m.Rcode != mdns.RcodeRefused {
		t.Fatalf("wiped secondary still answers: %v", m)
	}
	start = time.Now()
	out, err = testModule.NewSyncSecondaryZones(&sync).Apply(ctx, senv)
	if err != nil {
		t.Fatalf("%v\n%s", err, sec.LogTail())
	}
	sr := out.(*agentpb.SyncSecondaryZonesResult)
	if len(sr.Added) != 2 || len(sr.Removed) != 1 || sr.Removed[0] != "stray.npanel-test.com." {
		t.Fatalf("heal: %+v", sr)
	}
	for _, z := range zones {
		want := serialAt(t, prim.DNSAddr, z)
		waitFor(t, 10*time.Second, z+" healed", func() bool { return serialAt(t, sec.DNSAddr, z) == want })
	}
	t.Logf("wiped secondary healed in %s", time.Since(start).Round(time.Millisecond))
	if serialAt(t, sec.DNSAddr, "own.npanel-test.com") == 0 {
		t.Error("sync removed the node's own primary zone")
	}
	// Nothing to do the second time.
	out, err = testModule.NewSyncSecondaryZones(&sync).Apply(ctx, senv)
	if err != nil {
		t.Fatal(err)
	}
	if sr := out.(*agentpb.SyncSecondaryZonesResult); len(sr.Added)+len(sr.Removed)+len(sr.Updated)+len(sr.Refreshed) != 0 || sr.Unchanged != 2 {
		t.Fatalf("repeat sync: %+v", sr)
	}

	// A change touches only what it names: the stray zone is back, the
	// change removes zones[0] and leaves the stray one alone.
	if err := sc.createZone(ctx, &pdnsZone{Name: "stray.npanel-test.com.", Kind: "Slave", Masters: []string{prim.DNSAddr}}); err != nil {
		t.Fatal(err)
	}
	out, err = testModule.NewSyncSecondaryZones(&agentpb.SyncSecondaryZonesAction{Removed: []string{zones[0]}}).Apply(ctx, senv)
	if err != nil {
		t.Fatal(err)
	}
	if sr := out.(*agentpb.SyncSecondaryZonesResult); len(sr.Removed) != 1 || sr.Removed[0] != zones[0]+"." || len(sr.Added) != 0 {
		t.Fatalf("change: %+v", sr)
	}
	// The bucket holding the stray zone removes it and puts zones[0]
	// back if it is in that bucket; the other bucket's zones stay.
	const buckets = 2
	stray := dnszone.Bucket("stray.npanel-test.com", buckets)
	bucket := &agentpb.SyncSecondaryZonesAction{Bucket: stray, Buckets: buckets}
	for _, z := range sync.Zones {
		if dnszone.Bucket(z.Zone, buckets) == stray {
			bucket.Zones = append(bucket.Zones, z)
		}
	}
	out, err = testModule.NewSyncSecondaryZones(bucket).Apply(ctx, senv)
	if err != nil {
		t.Fatal(err)
	}
	if sr := out.(*agentpb.SyncSecondaryZonesResult); len(sr.Removed) != 1 || sr.Removed[0] != "stray.npanel-test.com." {
		t.Fatalf("bucket %d: %+v", stray, sr)
	}
	for _, z := range zones[1:] {
		if serialAt(t, sec.DNSAddr, z) == 0 {
			t.Fatalf("%s gone after a sync of bucket %d", z, stray)
		}
	}
	if _, err := testModule.NewSyncSecondaryZones(&sync).Apply(ctx, senv); err != nil {
		t.Fatal(err)
	}
	for _, z := range zones {
		want := serialAt(t, prim.DNSAddr, z)
		waitFor(t, 10*time.Second, z+" back", func() bool { return serialAt(t, sec.DNSAddr, z) == want })
	}

	// A change the secondary never heard of (a PATCH sends no NOTIFY, and
	// no refresh was asked for): it would wait for the SOA refresh, hours.
	// The sync names the primary's serial and the secondary catches up.
	pc := testModule.client(prim.APIAddr, prim.APIKey)
	z, err := dnszone.ValidateZone(ZoneFromProto(primarySpec(zones[1])))
	if err != nil {
		t.Fatal(err)
	}
	before := serialAt(t, sec.DNSAddr, zones[1])
	apex := setKey{zones[1] + ".", "A"}
	if err := pc.patchZone(ctx, zones[1]+".", []pdnsRRset{replaceSet(apex, rrset{ttl: 300, contents: []string{"192.0.2.77"}}), soaSet(z, before+1)}); err != nil {
		t.Fatal(err)
	}
	if err := pc.flushCache(ctx, zones[1]+"."); err != nil {
		t.Fatal(err)
	}
	for _, sz := range sync.Zones {
		sz.Serial = serialAt(t, prim.DNSAddr, sz.Zone)
	}
	if sync.Zones[1].Serial != before+1 || serialAt(t, sec.DNSAddr, zones[1]) != before {
		t.Fatalf("primary at %d, secondary at %d: want %d and %d", sync.Zones[1].Serial, serialAt(t, sec.DNSAddr, zones[1]), before+1, before)
	}
	out, err = testModule.NewSyncSecondaryZones(&sync).Apply(ctx, senv)
	if err != nil {
		t.Fatal(err)
	}
	if sr := out.(*agentpb.SyncSecondaryZonesResult); len(sr.Refreshed) != 1 || sr.Refreshed[0] != zones[1]+"." || sr.Unchanged != 1 {
		t.Fatalf("sync with serials: %+v", sr)
	}
	waitFor(t, 10*time.Second, "secondary caught up", func() bool { return serialAt(t, sec.DNSAddr, zones[1]) == before+1 })
	if got := answers(query(t, sec.DNSAddr, zones[1], mdns.TypeA, false)); len(got) != 1 || got[0] != "192.0.2.77" {
		t.Errorf("secondary A = %q after catching up", got)
	}
}

// axfr transfers zone from server addr with the query sent from local ip.
func axfr(addr, zone, local string) error {
	tr := &mdns.Transfer{}
	tr.DialTimeout, tr.ReadTimeout = 2*time.Second, 2*time.Second
	conn, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 2 * time.Second}).Dial("tcp", addr)
	if err != nil {
		return err
	}
	tr.Conn = &mdns.Conn{Conn: conn}
	m := new(mdns.Msg)
	m.SetAxfr(mdns.Fqdn(zone))
	ch, err := tr.In(m, addr)
	if err != nil {
		return err
	}
	n := 0
	for env := range ch {
		if env.Error != nil {
			return env.Error
		}
		n += len(env.RR)
	}
	if n == 0 {
		return net.ErrClosed
	}
	return nil
}

// TestRefreshSecondaryZone: a secondary behind the primary's serial starts
// a transfer when refresh_secondary_zone names the new serial and gets it;
// a current, missing or primary zone is left alone.
func TestRefreshSecondaryZone(t *testing.T) {
	prim, sec := pair(t)
	penv, senv := envFor(t, prim), envFor(t, sec)
	ctx := context.Background()
	zone := "refresh.npanel-test.com"
	spec := primarySpec(zone)
	spec.Secondaries = []string{sec.DNSAddr}
	apply(t, penv, testModule.NewEnsureZone(spec))
	apply(t, senv, testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: zone, Kind: agentpb.ZoneKind_ZONE_KIND_SECONDARY, Masters: []string{prim.DNSAddr}}))
	first := serialAt(t, prim.DNSAddr, zone)
	waitFor(t, 10*time.Second, "the secondary's first transfer", func() bool { return serialAt(t, sec.DNSAddr, zone) == first })

	// Already at the serial: nothing to do.
	refresh := func(serial uint32) *agentpb.ZoneResult {
		return apply(t, senv, testModule.NewRefreshSecondaryZone(&agentpb.RefreshSecondaryZoneAction{Zone: zone, Serial: serial}))
	}
	if r := refresh(first); r.Changed || !r.Existed || r.Serial != first {
		t.Fatalf("refresh at the current serial: %+v", r)
	}

	// A new serial on the primary, set through its API directly. (PowerDNS
	// notices it and notifies too, at its next tick; the refresh starts the
	// transfer before that, and must succeed against the real API.)
	pc := testModule.client(prim.APIAddr, prim.APIKey)
	var soa *mdns.SOA
	for _, rr := range query(t, prim.DNSAddr, zone, mdns.TypeSOA, false).Answer {
		soa, _ = rr.(*mdns.SOA)
	}
	if soa == nil {
		t.Fatal("no SOA on the primary")
	}
	soa.Serial++
	if err := pc.patchZone(ctx, zone+".", []pdnsRRset{{Name: zone + ".", Type: "SOA", TTL: soa.Hdr.Ttl, ChangeType: "REPLACE",
		Records: []pdnsRecord{{Content: strings.TrimPrefix(soa.String(), soa.Hdr.String())}}}}); err != nil {
		t.Fatal(err)
	}
	if got := serialAt(t, prim.DNSAddr, zone); got != soa.Serial {
		t.Fatalf("primary serves serial %d after the bump, want %d", got, soa.Serial)
	}
	if r := refresh(soa.Serial); !r.Changed || r.Serial != soa.Serial || r.Kind != "Slave" {
		t.Fatalf("refresh to a newer serial: %+v", r)
	}
	// The refresh returns once the transfer landed, its answers flushed.
	if got := serialAt(t, sec.DNSAddr, zone); got != soa.Serial {
		t.Fatalf("secondary serves serial %d after the refresh, want %d", got, soa.Serial)
	}

	// The primary's own zone and a zone the secondary does not hold.
	if r := apply(t, penv, testModule.NewRefreshSecondaryZone(&agentpb.RefreshSecondaryZoneAction{Zone: zone, Serial: soa.Serial + 1})); r.Changed || !r.Existed {
		t.Fatalf("refresh on the primary: %+v", r)
	}
	if r := apply(t, senv, testModule.NewRefreshSecondaryZone(&agentpb.RefreshSecondaryZoneAction{Zone: "absent.npanel-test.com", Serial: 5})); r.Changed || r.Existed {
		t.Fatalf("refresh of an absent zone: %+v", r)
	}
}

func TestRefreshSecondaryZoneValidate(t *testing.T) {
	for _, req := range []*agentpb.RefreshSecondaryZoneAction{
		{Zone: "", Serial: 1},
		{Zone: "bad..npanel-test.com", Serial: 1},
		{Zone: "ok.npanel-test.com"},
	} {
		if err := testModule.NewRefreshSecondaryZone(req).Validate(); err == nil {
			t.Errorf("%+v: accepted", req)
		}
	}
	if err := testModule.NewRefreshSecondaryZone(&agentpb.RefreshSecondaryZoneAction{Zone: "ok.npanel-test.com", Serial: 1}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestSerialOlder(t *testing.T) {
	for _, tc := range []struct {
		ours, theirs uint32
		want         bool
	}{
		{1, 2, true}, {2, 2, false}, {3, 2, false},
		{4294967295, 1, true}, // wrapped: 1 is newer
		{1, 4294967295, false},
	} {
		if got := serialOlder(tc.ours, tc.theirs); got != tc.want {
			t.Errorf("serialOlder(%d, %d) = %v, want %v", tc.ours, tc.theirs, got, tc.want)
		}
	}
}
