package controlplane_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// BenchmarkSecondarySync creates NPANEL_BENCH_ZONES zones (default 5,000)
// spread over three fake DNS nodes, each the secondary of the others'
// zones, as fast as the store takes them, and reports what the
// secondaries were sent until the syncs settle: sync-tasks, sync-MB (the
// tasks' encoded size, all nodes), zones-named (a zone counted in each
// task that names it), max-task-KB (the largest task). Zone changes are
// debounced (500 ms), so the figures depend on the creation rate; what
// matters is how they grow with the zone count. Each node's first sync
// is its complete set; the periodic complete set (every minute) is not
// reached in a run this short.
func BenchmarkSecondarySync(b *testing.B) {
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("NPANEL_BENCH_ZONES")); err == nil && v > 0 {
		n = v
	}
	for b.Loop() {
		// The production resync (testenv's is 2 s): the figures are
		// what changes cost, not the periodic complete sets.
		s := testenv.StartServer(b, func(c *controlplane.Config) { c.ZoneSecondaryResync = time.Minute })
		var fakes []*fakeCertNode
		for i := range 3 {
			name := fmt.Sprintf("dns-%d", i)
			s.FakeNode(b, name, nil, 100, 100_000)
			fakes = append(fakes, startFakeCertNode(b, s, name))
		}
		st := s.Store()
		ctx := testenv.Context(b)
		for i := range n {
			if err := st.CreateZone(ctx, pendingZone(fmt.Sprintf("z%06d.example.com", i), fmt.Sprintf("dns-%d", i%3)), store.AuditEvent{}); err != nil {
				b.Fatal(err)
			}
		}
		sent := func() (tasks int64) {
			for _, f := range fakes {
				tasks += f.syncTasks.Load()
			}
			return tasks
		}
		testenv.WaitFor(b, 30*time.Minute, "every zone active", func() bool {
			zs, _, err := st.ListZoneStates(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, z := range zs {
				if z.Status != store.ZoneActive {
					return false
				}
			}
			return len(zs) == n
		})
		// Settled: no sync for three debounce periods.
		last, quiet := sent(), time.Now()
		for time.Since(quiet) < 1500*time.Millisecond {
			time.Sleep(100 * time.Millisecond)
			if now := sent(); now != last {
				last, quiet = now, time.Now()
			}
		}
		var bytes, zones, most int64
		for _, f := range fakes {
			bytes += f.syncBytes.Load()
			zones += f.syncZones.Load()
			most = max(most, f.syncMax.Load())
		}
		b.ReportMetric(float64(last), "sync-tasks")
		b.ReportMetric(float64(bytes)/(1<<20), "sync-MB")
		b.ReportMetric(float64(zones), "zones-named")
		b.ReportMetric(float64(most)/1024, "max-task-KB")
	}
}
