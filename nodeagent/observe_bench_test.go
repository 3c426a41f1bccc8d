package nodeagent_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/nodeagent/logship"
	"github.com/npanel/npanel/nodeagent/logtail"
)

// BenchmarkObservabilityLoad is the figure: what metrics and log
// shipping add to an agent whose 1,000 vhosts receive 1,000 requests/s in
// total. "writer" appends the access lines only (nginx's part); "all"
// also runs the tail engine, the traffic counters with their day files,
// the Loki shipper to a receiver, and a /metrics gather every 15 s. The
// difference of their %cpu is the agent's share; extra-rss-MiB is the
// resident set added by the observability parts; gather-ms is one
// gather of the traffic and log families of the 1,000 vhosts.
func BenchmarkObservabilityLoad(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "writer"
		if on {
			name = "all"
		}
		b.Run(name, func(b *testing.B) { benchObservability(b, on) })
	}
}

func benchObservability(b *testing.B, on bool) {
	const vhosts, rate, period = 1000, 1000, 10 * time.Second
	dir := b.TempDir()
	logs := filepath.Join(dir, "domains")
	files := make([]*os.File, vhosts)
	for i := range vhosts {
		d := filepath.Join(logs, fmt.Sprintf("user%d", i%50))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, fmt.Sprintf("site%d.example.error.log", i)), nil, 0o644)
		f, err := os.OpenFile(filepath.Join(d, fmt.Sprintf("site%d.example.access.log", i)), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		files[i] = f
	}
	rss0 := vmRSS(b)
	stopScrape := make(chan struct{})
	reg := prometheus.NewRegistry()
	if on {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.WriteHeader(http.StatusNoContent)
		}))
		defer srv.Close()
		traffic := web.NewTraffic()
		if err := traffic.Open(b.Context(), filepath.Join(dir, "traffic")); err != nil {
			b.Fatal(err)
		}
		reg.MustRegister(traffic)
		ship, err := logship.New(logship.Config{URL: srv.URL, DataDir: dir, Node: "n1", Registry: reg})
		if err != nil {
			b.Fatal(err)
		}
		ship.Start()
		defer ship.Close()
		eng, err := logtail.New(logtail.Config{DataDir: dir, DomainLogDir: logs, Registry: reg,
			Consumers: []logtail.Consumer{traffic, ship}})
		if err != nil {
			b.Fatal(err)
		}
		eng.Start()
		defer eng.Close()
		go func() {
			tick := time.NewTicker(15 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stopScrape:
					return
				case <-tick.C:
					if _, err := reg.Gather(); err != nil {
						b.Error(err)
					}
				}
			}
		}()
	}
	defer close(stopScrape)
	time.Sleep(time.Second)
	b.ResetTimer()
	var cpu, wall time.Duration
	n := 0
	for range b.N {
		cpu0, t0 := cpuTime(), time.Now()
		tick := time.NewTicker(10 * time.Millisecond)
		for time.Since(t0) < period {
			<-tick.C
			for range rate / 100 {
				fmt.Fprintf(files[n%vhosts], `{"time":"%s","status":%d,"bytes":%d,"rt":0.003,"method":"GET","uri":"/index.php?p=%d","host":"site%d.example","remote":"192.0.2.7","ua":"Mozilla/5.0","ref":"-","proto":"HTTP/1.1"}`+"\n",
					time.Now().UTC().Format(time.RFC3339), 200+100*(n%4), 1000+n, n, n%vhosts)
				n++
			}
		}
		tick.Stop()
		cpu += cpuTime() - cpu0
		wall += time.Since(t0)
	}
	b.StopTimer()
	if on {
		// The figure counts only if the lines were read and shipped.
		deadline := time.Now().Add(10 * time.Second)
		for counterValue(b, reg, "npanel_agent_log_shipped_lines_total") < float64(n) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if got := counterValue(b, reg, "npanel_agent_log_shipped_lines_total"); got < float64(n) {
			b.Fatalf("%v of %d lines shipped", got, n)
		}
		// A scrape's gather with every vhost's series present.
		t0 := time.Now()
		const scrapes = 5
		for range scrapes {
			if _, err := reg.Gather(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(time.Since(t0).Milliseconds())/scrapes, "gather-ms")
	}
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%cpu")
	b.ReportMetric(float64(vmRSS(b)-rss0)/(1<<20), "extra-rss-MiB")
}

func counterValue(b *testing.B, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmRSS is the process's resident set in bytes.
func vmRSS(b *testing.B) int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
