package dns

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/npanel/npanel/internal/benchstat"
	"github.com/npanel/npanel/internal/testenv/pdns"
	"github.com/npanel/npanel/protos/agentpb"
)

func answersA(b *testing.B, addr, name, want string) bool {
	for _, a := range answers(query(b, addr, name, mdns.TypeA, false)) {
		if a == want {
			return true
		}
	}
	return false
}

// BenchmarkRecordChange measures one changed record through ensure_zone
// until the primary answers it, against a bare PowerDNS PATCH of the same
// rrset (and PATCH + NOTIFY, the least a correct change needs).
func BenchmarkRecordChange(b *testing.B) {
	srv := pdns.Start(b, pdns.Options{})
	env := envFor(b, srv)
	const zone = "bench.npanel-test.com"
	spec := primarySpec(zone)
	apply(b, env, testModule.NewEnsureZone(spec))
	c := testModule.client(srv.APIAddr, srv.APIKey)
	ctx := context.Background()
	n := 0
	nextIP := func() string { n++; return fmt.Sprintf("198.51.%d.%d", n/250%250, n%250+1) }

	b.Run("ensure_zone", func(b *testing.B) {
		var apply, served []time.Duration
		for i := 0; i < b.N; i++ {
			ip := nextIP()
			spec.Records[0].Content = ip
			a := testModule.NewEnsureZone(spec)
			if err := a.Validate(); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if _, err := a.Apply(ctx, env); err != nil {
				b.Fatal(err)
			}
			apply = append(apply, time.Since(start))
			for !answersA(b, srv.DNSAddr, zone, ip) {
			}
			served = append(served, time.Since(start))
		}
		benchstat.Report(b, "apply", apply)
		benchstat.Report(b, "served", served)
	})
	for _, withNotify := range []bool{false, true} {
		name := "bare_patch"
		if withNotify {
			name = "bare_patch+notify"
		}
		b.Run(name, func(b *testing.B) {
			var apply, served []time.Duration
			for i := 0; i < b.N; i++ {
				ip := nextIP()
				start := time.Now()
				err := c.patchZone(ctx, zone+".", []pdnsRRset{{Name: zone + ".", Type: "A", TTL: 300, ChangeType: "REPLACE", Records: []pdnsRecord{{Content: ip}}}})
				if err == nil && withNotify {
					err = c.notify(ctx, zone+".")
				}
				if err != nil {
					b.Fatal(err)
				}
				apply = append(apply, time.Since(start))
				for !answersA(b, srv.DNSAddr, zone, ip) {
				}
				served = append(served, time.Since(start))
			}
			benchstat.Report(b, "apply", apply)
			benchstat.Report(b, "served", served)
		})
	}
}

// BenchmarkRecordChangeSecondary measures a changed record until the
// secondary serves it (NOTIFY, then the secondary's transfer). Run with a
// small -benchtime (e.g. 20x): each change takes about a second.
func BenchmarkRecordChangeSecondary(b *testing.B) {
	prim, sec := pdns.Start(b, pdns.Options{IP: "127.0.0.1"}), pdns.Start(b, pdns.Options{IP: "127.0.0.2"})
	penv, senv := envFor(b, prim), envFor(b, sec)
	const zone = "benchsec.npanel-test.com"
	spec := primarySpec(zone)
	spec.Secondaries = []string{sec.DNSAddr}
	apply(b, penv, testModule.NewEnsureZone(spec))
	apply(b, senv, testModule.NewEnsureZone(&agentpb.EnsureZoneAction{Zone: zone, Kind: agentpb.ZoneKind_ZONE_KIND_SECONDARY, Masters: []string{prim.DNSAddr}}))
	waitFor(b, 10*time.Second, "first transfer", func() bool { return serialAt(b, sec.DNSAddr, zone) != 0 })
	// notify: the secondary acts on the primary's NOTIFY alone; refresh:
	// refresh_secondary_zone follows the change, as the controller sends it.
	for _, refresh := range []bool{false, true} {
		name := map[bool]string{false: "notify", true: "refresh"}[refresh]
		b.Run(name, func(b *testing.B) {
			var served, applied []time.Duration
			for i := 0; i < b.N; i++ {
				ip := fmt.Sprintf("203.0.113.%d", i%250+1)
				spec.Records[0].Content = ip
				start := time.Now()
				res := apply(b, penv, testModule.NewEnsureZone(spec))
				applied = append(applied, time.Since(start))
				if refresh {
					apply(b, senv, testModule.NewRefreshSecondaryZone(&agentpb.RefreshSecondaryZoneAction{Zone: zone, Serial: res.Serial}))
				}
				waitFor(b, 30*time.Second, "secondary", func() bool { return serialAt(b, sec.DNSAddr, zone) == res.Serial })
				served = append(served, time.Since(start))
			}
			benchstat.Report(b, "primary-applied", applied)
			benchstat.Report(b, "secondary-served", served)
		})
	}
}

// BenchmarkCreateZones creates NPANEL_BENCH_ZONES zones (default 2000) on
// one node through ensure_zone, four at a time, and reports zones/s.
func BenchmarkCreateZones(b *testing.B) {
	count := 2000
	if v, err := strconv.Atoi(os.Getenv("NPANEL_BENCH_ZONES")); err == nil && v > 0 {
		count = v
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		srv := pdns.Start(b, pdns.Options{})
		env := envFor(b, srv)
		b.StartTimer()
		var next atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Value
		start := time.Now()
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					k := next.Add(1)
					if k > int64(count) {
						return
					}
					a := testModule.NewEnsureZone(primarySpec(fmt.Sprintf("z%d.npanel-test.com", k)))
					if err := a.Validate(); err != nil {
						failed.Store(err)
						return
					}
					if _, err := a.Apply(context.Background(), env); err != nil {
						failed.Store(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatal(err)
		}
		el := time.Since(start)
		b.ReportMetric(float64(count)/el.Seconds(), "zones/s")
		b.ReportMetric(float64(count), "zones")
		// One more list of all zones, as sync_secondary_zones would do.
		t0 := time.Now()
		zs, err := testModule.client(srv.APIAddr, srv.APIKey).zones(context.Background())
		if err != nil || len(zs) != count {
			b.Fatalf("list: %d zones, %v", len(zs), err)
		}
		b.ReportMetric(float64(time.Since(t0).Milliseconds()), "list-all-ms")
		b.StopTimer()
		srv.Stop()
		b.StartTimer()
	}
}
