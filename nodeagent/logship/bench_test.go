package logship

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/logtail"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkShip measures the whole path of a line: appended to an nginx
// JSON access log, read by the tail engine, batched, compressed, written to
// the disk buffer and pushed to a receiver (that only reads the body; the
// shipped counter says when all arrived). lines/cpu-s is lines per second
// of one core, the process's CPU time including the writer and receiver.
func BenchmarkShip(b *testing.B) {
	dir := b.TempDir()
	logs := filepath.Join(dir, "domains")
	p := filepath.Join(logs, "alice", "a.example.access.log")
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, nil, 0o644)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	s, err := New(Config{URL: srv.URL, DataDir: dir, Node: "n1", Registry: reg, BatchWait: 100 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	defer s.Close()
	e, err := logtail.New(logtail.Config{DataDir: dir, DomainLogDir: logs, Consumers: []logtail.Consumer{s},
		PollInterval: 10 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	e.Start()
	defer e.Close()
	time.Sleep(50 * time.Millisecond)

	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	shipped := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "npanel_agent_log_shipped_lines_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	var chunk []byte
	b.SetBytes(0)
	b.ResetTimer()
	cpu0, t0 := cpuTime(), time.Now()
	for i := range b.N {
		chunk = fmt.Appendf(chunk, `{"time":"2026-12-06T12:00:00+00:00","status":"200","bytes":"%d","rt":"0.003","method":"GET","uri":"/index.php?p=%d","host":"a.example","remote":"192.0.2.7","ua":"Mozilla/5.0 (X11; Linux x86_64)","ref":"-","proto":"HTTP/1.1"}`+"\n", 1000+i%5000, i)
		if len(chunk) > 64<<10 || i == b.N-1 {
			f.Write(chunk)
			chunk = chunk[:0]
		}
	}
	for shipped() < float64(b.N) {
		time.Sleep(time.Millisecond)
	}
	wall, cpu := time.Since(t0), cpuTime()-cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/wall.Seconds(), "lines/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "lines/cpu-s")
}

// BenchmarkVhosts is the load: 1,000 vhosts (an access and an
// error log each) receiving 1,000 requests/s in total, followed by the
// tail engine and shipped. It runs a fixed 10 s per iteration and reports
// the process's CPU use in percent of one core (the writer included) and
// the Go heap in use.
func BenchmarkVhosts(b *testing.B) {
	// rate=0 is the cost of following 2,000 idle files.
	for _, rate := range []int{0, 1000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) { benchVhosts(b, rate) })
	}
}

func benchVhosts(b *testing.B, rate int) {
	const vhosts, period = 1000, 10 * time.Second
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
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	s, err := New(Config{URL: srv.URL, DataDir: dir, Node: "n1", Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	defer s.Close()
	e, err := logtail.New(logtail.Config{DataDir: dir, DomainLogDir: logs, Consumers: []logtail.Consumer{s}})
	if err != nil {
		b.Fatal(err)
	}
	e.Start()
	defer e.Close()
	time.Sleep(time.Second)
	b.ResetTimer()
	var cpu time.Duration
	var wall time.Duration
	for range b.N {
		cpu0, t0 := cpuTime(), time.Now()
		tick := time.NewTicker(10 * time.Millisecond)
		n := 0
		for time.Since(t0) < period {
			<-tick.C
			for range rate / 100 {
				fmt.Fprintf(files[n%vhosts], `{"time":"2026-12-06T12:00:00+00:00","status":"200","bytes":"%d","rt":"0.003","method":"GET","uri":"/index.php?p=%d","host":"site%d.example","remote":"192.0.2.7","ua":"Mozilla/5.0","ref":"-","proto":"HTTP/1.1"}`+"\n", 1000+n, n, n%vhosts)
				n++
			}
		}
		tick.Stop()
		cpu += cpuTime() - cpu0
		wall += time.Since(t0)
	}
	b.StopTimer()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%cpu")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
}
