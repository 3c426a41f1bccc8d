package web

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/logtail"
	"github.com/npanel/npanel/protos/agentpb"
)

// trafficSources are n domains' access log sources.
func trafficSources(n int) []*logtail.Source {
	out := make([]*logtail.Source, n)
	for i := range out {
		out[i] = &logtail.Source{Service: "nginx", Account: fmt.Sprintf("user%03d", i/3), Domain: fmt.Sprintf("site%04d.example.com", i), Kind: "access"}
	}
	return out
}

// BenchmarkTrafficConsume: lines counted per second on one core (batches
// of 64 lines, runs of one domain as the tail engine hands them over),
// with the hourly store on.
func BenchmarkTrafficConsume(b *testing.B) {
	now := time.Now()
	srcs := trafficSources(1000)
	lines := make([][]byte, 64)
	for i := range lines {
		lines[i] = []byte(accessLine(now, 200+(i%4)*100, 1000+i, fmt.Sprintf("0.%03d", i*7%1000)))
	}
	tr := NewTraffic()
	if err := tr.Open(b.Context(), b.TempDir()); err != nil {
		b.Fatal(err)
	}
	batch := make([]logtail.Entry, 64)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		src := srcs[n%len(srcs)]
		for i := range batch {
			batch[i] = logtail.Entry{Source: src, Time: now, Line: lines[i]}
		}
		tr.Consume(batch)
		n++
	}
	b.ReportMetric(float64(n*len(batch))/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(n*len(batch)), "ns/line")
}

func BenchmarkParseAccess(b *testing.B) {
	line := []byte(accessLine(time.Now(), 200, 5120, "0.012"))
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		parseAccess(line)
	}
}

// BenchmarkTrafficCollect: one scrape of 1,000 domains' series through a
// registry, as /metrics does; also reports the counters' memory.
func BenchmarkTrafficCollect(b *testing.B) {
	now := time.Now()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tr := NewTraffic()
	for i, src := range trafficSources(1000) {
		tr.Consume([]logtail.Entry{
			{Source: src, Time: now, Line: []byte(accessLine(now, 200, i, "0.010"))},
			{Source: src, Time: now, Line: []byte(accessLine(now, 404, i, "0.200"))},
		})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	reg := prometheus.NewRegistry()
	reg.MustRegister(tr)
	b.ReportAllocs()
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil || len(mfs) != 3 {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1000, "heap-bytes/domain")
}

// BenchmarkReadTrafficMonth: read_traffic of one domain over 30 days
// (DAY step) on a node with 1,000 domains busy every hour of those days.
func BenchmarkReadTrafficMonth(b *testing.B) {
	now := time.Now().UTC()
	dir := b.TempDir()
	tr := NewTraffic()
	tr.now = func() time.Time { return now }
	if err := tr.Open(b.Context(), dir); err != nil {
		b.Fatal(err)
	}
	srcs := trafficSources(1000)
	for d := 29; d >= 0; d-- {
		day := now.AddDate(0, 0, -d)
		for h := range 24 {
			at := time.Date(day.Year(), day.Month(), day.Day(), h, 0, 0, 0, time.UTC)
			if at.After(now) {
				break
			}
			l := []byte(accessLine(at, 200, 100, "0.010"))
			for _, src := range srcs {
				tr.Consume([]logtail.Entry{{Source: src, Time: now, Line: l}})
			}
		}
		tr.now = func() time.Time { return day.Add(24 * time.Hour) } // let Flush drop the day
		if err := tr.Flush(); err != nil {
			b.Fatal(err)
		}
		tr.now = func() time.Time { return now }
	}
	fi, _ := os.Stat(filepath.Join(dir, dayName(now.Add(-24*time.Hour).Unix()/86400)+".json"))
	b.ReportMetric(float64(fi.Size()), "day-file-bytes")
	for b.Loop() {
		res, err := tr.Read(srcs[7].Account, []string{srcs[7].Domain}, now.AddDate(0, 0, -30), agentpb.TrafficStep_TRAFFIC_STEP_DAY)
		if err != nil || len(res[0].Buckets) < 29 {
			b.Fatalf("%v %v", res, err)
		}
	}
}

// BenchmarkTrafficMemory reports the heap of the counters and the hourly
// buckets not written yet per domain after 1,000 domains were busy all
// day (written every hour here, every minute in the agent).
func BenchmarkTrafficMemory(b *testing.B) {
	end := time.Now().UTC().Truncate(24 * time.Hour).Add(24*time.Hour - time.Second)
	srcs := trafficSources(1000)
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tr := NewTraffic()
		tr.now = func() time.Time { return end }
		if err := tr.Open(b.Context(), b.TempDir()); err != nil {
			b.Fatal(err)
		}
		for h := range 24 {
			at := end.Truncate(24 * time.Hour).Add(time.Duration(h) * time.Hour)
			l := []byte(accessLine(at, 200, 100, "0.010"))
			for _, src := range srcs {
				tr.Consume([]logtail.Entry{{Source: src, Time: end, Line: l}})
			}
			if h < 23 {
				if err := tr.Flush(); err != nil {
					b.Fatal(err)
				}
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1000, "heap-bytes/domain")
		runtime.KeepAlive(tr)
	}
}
