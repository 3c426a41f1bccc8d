package controlplane_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// dnsBench is a server with two DNS nodes and one zone on dns-1.
type dnsBench struct {
	s         *testenv.Server
	primary   *testenv.Agent
	secondary *testenv.Agent
	zone      string
	apiKey    string
	ctx       context.Context
}

func newDNSBench(b *testing.B, secondary bool) *dnsBench {
	testenv.RequireDaemon(b, "/usr/sbin/pdns_server")
	s := testenv.StartServer(b)
	d := &dnsBench{s: s, ctx: context.Background(), zone: "bench-zone.example.com"}
	d.primary = s.StartAgent(b, "dns-1", testenv.WithModules(b, "dns"))
	if secondary {
		d.secondary = s.StartAgent(b, "dns-2", testenv.WithModules(b, "dns"))
	}
	if err := s.Store().CreateZone(d.ctx, pendingZone(d.zone, "dns-1"), store.AuditEvent{}); err != nil {
		b.Fatal(err)
	}
	testenv.WaitFor(b, 30*time.Second, "zone active", func() bool {
		z, _, err := s.Store().GetZone(d.ctx, d.zone)
		return err == nil && z.Status == store.ZoneActive
	})
	if secondary {
		testenv.WaitFor(b, 30*time.Second, "secondary serves the zone", func() bool {
			return serial(b, d.secondary.Config.DNSListen, d.zone) != ""
		})
	}
	key, err := os.ReadFile(filepath.Join(d.primary.Config.DataDir, "pdns-api-key"))
	if err != nil {
		b.Fatal(err)
	}
	d.apiKey = strings.TrimSpace(string(key))
	return d
}

func answeredBy(b *testing.B, addr, name, ip string, deadline time.Duration) bool {
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		if got := query(b, addr, name, dns.TypeA); len(got) == 1 && got[0] == ip {
			return true
		}
		time.Sleep(100 * time.Microsecond)
	}
	return false
}

// answered polls addr until name has an A record with content ip.
func answered(b *testing.B, addr, name, ip string, deadline time.Duration) {
	if !answeredBy(b, addr, name, ip, deadline) {
		b.Fatalf("%s A %s not answered by %s within %s", name, ip, addr, deadline)
	}
}

// BenchmarkAddRecordToAnswer measures an operator's addRecord through
// GraphQL until the primary's PowerDNS answers it, and, in the same run,
// a bare PowerDNS API PATCH to a zone beside it (plus the NOTIFY a change
// needs) until answered: the ratio is nPanel's overhead on the raw
// service.
// Run with -benchtime 200x.
func BenchmarkAddRecordToAnswer(b *testing.B) {
	d := newDNSBench(b, false)
	d.createBareZone(b)
	b.ResetTimer()
	ours, bare, api := d.compareAddRecord(b, b.N)
	b.StopTimer()
	reportPercentiles(b, ours)
	reportNamed(b, "bare_", bare)
	reportNamed(b, "api_", api)
	b.ReportMetric(median(ours)/median(bare), "ratio_p50")
}

// compareAddRecord adds n records to d.zone through GraphQL and n to
// bareZone with PowerDNS's API, alternately, and returns how long each
// took until the primary answered it, and how long our API calls took.
func (d *dnsBench) compareAddRecord(b *testing.B, n int) (ours, bare, api []time.Duration) {
	ttl := 300
	for i := range n {
		name := "r" + strconv.Itoa(i)
		ip := fmt.Sprintf("198.51.100.%d", i%250+1)
		start := time.Now()
		if _, err := d.s.Admin.AddRecord(d.ctx, d.zone, client.RecordInput{Name: name, Type: "A", Content: ip, TTL: &ttl}); err != nil {
			b.Fatal(err)
		}
		api = append(api, time.Since(start))
		if !answeredBy(b, d.primary.Config.DNSListen, name+"."+d.zone, ip, 10*time.Second) {
			z, _, _ := d.s.Store().GetZone(d.ctx, d.zone)
			t, _, _ := d.s.Store().GetTask(d.ctx, z.TaskID)
			b.Fatalf("record %d not answered; zone %+v task %+v", i, z, t)
		}
		ours = append(ours, time.Since(start))
		// Untimed: our change finishes (NOTIFY and all) before the bare
		// one starts, so that neither waits on the other's SQLite lock.
		testenv.WaitFor(b, 10*time.Second, "record change applied", func() bool {
			z, _, err := d.s.Store().GetZone(d.ctx, d.zone)
			return err == nil && z.AppliedGeneration == z.Generation && z.TaskID == ""
		})

		rawName := "raw" + strconv.Itoa(i) + "." + bareZone + "."
		start = time.Now()
		d.patch(b, rawName, ip)
		answered(b, d.primary.Config.DNSListen, rawName, ip, 10*time.Second)
		bare = append(bare, time.Since(start))
	}
	return ours, bare, api
}

// BenchmarkAddRecordToSecondary measures addRecord until the secondary
// answers with the zone's new serial (the primary applied it and sent
// NOTIFY, the controller asked the secondary to refresh, the secondary
// transferred the zone). The secondary is asked for the SOA every
// millisecond over UDP, as a resolver would: PowerDNS answers that from its
// packet cache until the transfer's commit purges it, so the polling costs
// the two busy cores almost nothing. (Polling its API instead made every
// step of the change slower: each API request opens PowerDNS's backend.)
//
// PowerDNS transfers whole zones (it serves no IXFR), so the figure
// depends on the zone's size: the zone holds NPANEL_BENCH_ZONE_RECORDS
// records besides SOA and NS (default 10, an account's defaults and a few
// more), and each added record is deleted again, untimed, before the next.
// A disk probe runs beside the changes: clear_p99_ms leaves out those that
// overlapped a stall of the disk past the 20 ms bar (in_disk_stall).
// Run with -benchtime 500x.
func BenchmarkAddRecordToSecondary(b *testing.B) {
	size := 10
	if v, err := strconv.Atoi(os.Getenv("NPANEL_BENCH_ZONE_RECORDS")); err == nil && v > 0 {
		size = v
	}
	d := newDNSBench(b, true)
	sec := d.secondary.Config.DNSListen
	ttl := 300
	add := func(name, ip string) *client.DNSRecord {
		r, err := d.s.Admin.AddRecord(d.ctx, d.zone, client.RecordInput{Name: name, Type: "A", Content: ip, TTL: &ttl})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	// moved waits until the secondary serves a serial other than prev and
	// returns it: one change is in flight at a time. A query that gets no
	// authoritative answer is counted, not taken for a new serial.
	unanswered := 0
	moved := func(prev uint32) uint32 {
		deadline := time.Now().Add(30 * time.Second)
		for {
			switch got := servedSerial(b, sec, d.zone); {
			case got == 0:
				unanswered++
			case got != prev:
				return got
			}
			if time.Now().After(deadline) {
				b.Fatalf("secondary still at serial %d", prev)
			}
			time.Sleep(time.Millisecond)
		}
	}
	settled := func(got uint32) {
		testenv.WaitFor(b, 30*time.Second, "primary applied", func() bool {
			z, _, err := d.s.Store().GetZone(d.ctx, d.zone)
			return err == nil && z.AppliedGeneration == z.Generation && z.TaskID == ""
		})
		if z, _, _ := d.s.Store().GetZone(d.ctx, d.zone); z.Serial != got {
			b.Fatalf("secondary moved to serial %d, the primary applied %d", got, z.Serial)
		}
	}
	for i := 1; i < size; i++ {
		add("fill"+strconv.Itoa(i), fmt.Sprintf("198.51.100.%d", i%250+1))
	}
	var prev uint32
	testenv.WaitFor(b, 30*time.Second, "secondary caught up", func() bool {
		z, _, err := d.s.Store().GetZone(d.ctx, d.zone)
		if err != nil || z.AppliedGeneration != z.Generation || z.TaskID != "" {
			return false
		}
		prev = z.Serial
		return servedSerial(b, sec, d.zone) == prev
	})
	var lat []time.Duration
	disk := watchDisk(b)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		r := add("s"+strconv.Itoa(i), fmt.Sprintf("203.0.113.%d", i%250+1))
		got := moved(prev)
		lat = append(lat, disk.timed(start))
		b.StopTimer()
		settled(got)
		if err := d.s.Admin.DeleteRecord(d.ctx, d.zone, r.ID); err != nil {
			b.Fatal(err)
		}
		prev = moved(got)
		settled(prev)
		b.StartTimer()
	}
	b.StopTimer()
	z, _, err := d.s.Store().GetZone(d.ctx, d.zone)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(z.Records)), "zone_records")
	b.ReportMetric(float64(unanswered), "unanswered_soa")
	reportPercentiles(b, lat)
	disk.report(b, 20*time.Millisecond)
}

// BenchmarkZones creates NPANEL_BENCH_ZONES zones (default 1,000) on one
// node through the controller and reports zones/s until every one is
// served, then zones(first:50) p50/p99 through GraphQL over 200 pages,
// then, on the node now serving them all, the add-record ratio of
// BenchmarkAddRecordToAnswer over 200 records (add_*).
func BenchmarkZones(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("NPANEL_BENCH_ZONES")); err == nil && v > 0 {
		n = v
	}
	d := newDNSBench(b, false)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for i := range n {
			_ = d.s.Store().CreateZone(d.ctx, pendingZone(fmt.Sprintf("z%06d.example.com", i), "dns-1"), store.AuditEvent{})
		}
		last := fmt.Sprintf("z%06d.example.com", n-1)
		testenv.WaitFor(b, 30*time.Minute, "all zones served", func() bool {
			z, _, err := d.s.Store().GetZone(d.ctx, last)
			if err != nil || z.Status != store.ZoneActive {
				return false
			}
			zs, _, err := d.s.Store().ListZoneStates(d.ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, z := range zs {
				if z.Status != store.ZoneActive {
					return false
				}
			}
			return true
		})
		b.ReportMetric(float64(n)/time.Since(start).Seconds(), "zones/s")
	}
	b.StopTimer()
	var lat []time.Duration
	after := ""
	for range 200 {
		start := time.Now()
		zs, next, err := d.s.Admin.Zones(d.ctx, "", 50, after)
		if err != nil || len(zs) == 0 {
			b.Fatalf("zones: %d %v", len(zs), err)
		}
		lat = append(lat, time.Since(start))
		after = next
	}
	reportNamed(b, "list50_", lat)
	// The add-record ratio on the node that now serves them all.
	d.createBareZone(b)
	ours, bare, _ := d.compareAddRecord(b, 200)
	reportNamed(b, "add_", ours)
	reportNamed(b, "add_bare_", bare)
	b.ReportMetric(median(ours)/median(bare), "add_ratio_p50")
}

// bareZone is the zone the bare PATCHes go to: beside nPanel's, on the
// same PowerDNS, made the way a panel on PowerDNS's API alone would make it
// (PowerDNS bumps its serial on every PATCH: SOA-EDIT-API DEFAULT).
const bareZone = "bare-zone.example.com"

func (d *dnsBench) createBareZone(b *testing.B) {
	body := fmt.Sprintf(`{"name":"%s.","kind":"Master","nameservers":["ns1.%s."],"soa_edit_api":"DEFAULT"}`, bareZone, bareZone)
	d.api(b, http.MethodPost, "http://"+d.primary.Config.DNSAPIListen+"/api/v1/servers/localhost/zones", body)
}

// patch adds an A record to bareZone with PowerDNS's own API and sends
// the NOTIFY a change needs to reach secondaries, as a hand-rolled panel
// would.
func (d *dnsBench) patch(b *testing.B, name, ip string) {
	body := fmt.Sprintf(`{"rrsets":[{"name":%q,"type":"A","ttl":300,"changetype":"REPLACE","records":[{"content":%q,"disabled":false}]}]}`, name, ip)
	base := "http://" + d.primary.Config.DNSAPIListen + "/api/v1/servers/localhost/zones/" + bareZone + "."
	d.api(b, http.MethodPatch, base, body)
	d.api(b, http.MethodPut, base+"/notify", "")
}

// api sends one request to the primary's PowerDNS API.
func (d *dnsBench) api(b *testing.B, method, url, body string) {
	// PowerDNS answers 500 when its SQLite backend is busy (the agent's
	// client retries the same way).
	for attempt := 0; ; attempt++ {
		r, _ := http.NewRequest(method, url, bytes.NewBufferString(body))
		r.Header.Set("X-API-Key", d.apiKey)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			b.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return
		}
		if resp.StatusCode != http.StatusInternalServerError || attempt == 6 {
			b.Fatalf("%s %s: %s %s", method, url, resp.Status, msg)
		}
		time.Sleep(10 * time.Millisecond << attempt)
	}
}

func median(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2])
}

// servedSerial is the serial of zone's SOA as addr answers it (0: none).
func servedSerial(b *testing.B, addr, zone string) uint32 {
	n, _ := strconv.ParseUint(serial(b, addr, zone), 10, 32)
	return uint32(n)
}
