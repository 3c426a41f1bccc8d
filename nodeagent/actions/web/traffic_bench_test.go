package web

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/logtail"
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
