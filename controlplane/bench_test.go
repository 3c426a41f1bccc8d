package controlplane_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/diskprobe"
	"github.com/npanel/npanel/internal/testenv"
)

// diskWatch runs a disk probe (internal/diskprobe) beside a benchmark's
// timed requests, in the filesystem its daemons write to, so that a p99
// over the bar can be told apart from the disk stalling under it: every
// change waits for etcd's, the agents' and PowerDNS's syncs.
type diskWatch struct {
	probe *diskprobe.Probe
	spans []diskprobe.Span
}

func watchDisk(b *testing.B) *diskWatch {
	return &diskWatch{probe: diskprobe.Start(b.TempDir())}
}

// timed records a request that started at start and ends now, and returns
// how long it took.
func (w *diskWatch) timed(start time.Time) time.Duration {
	s := diskprobe.Span{Start: start, End: time.Now()}
	w.spans = append(w.spans, s)
	return s.Took()
}

// report stops the probe and adds to the output the share of the run the
// disk stalled past bar (a probe write took longer), how many requests
// overlapped such a stall, and p50/p99 of the others (clear_).
func (w *diskWatch) report(b *testing.B, bar time.Duration) {
	res, err := w.probe.Stop()
	if err != nil {
		b.Fatal(err)
	}
	stalls := res.Over(bar)
	var unstalled []time.Duration
	for _, s := range w.spans {
		if diskprobe.Overlapping([]diskprobe.Span{s}, stalls) == 0 {
			unstalled = append(unstalled, s.Took())
		}
	}
	b.ReportMetric(res.StalledPercent(bar), "disk_stalled_pct")
	b.ReportMetric(float64(len(w.spans)-len(unstalled)), "in_disk_stall")
	reportNamed(b, "clear_", unstalled)
}

// reportPercentiles adds p50/p99 of d (milliseconds) to the benchmark output.
func reportPercentiles(b *testing.B, d []time.Duration) { reportNamed(b, "", d) }

// reportNamed is reportPercentiles with a prefix for the metrics' names.
func reportNamed(b *testing.B, prefix string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(p float64) float64 {
		return float64(s[min(len(s)-1, int(p*float64(len(s))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(at(0.50), prefix+"p50_ms")
	b.ReportMetric(at(0.99), prefix+"p99_ms")
}

// BenchmarkPingRoundTrip measures the whole task path as an operator sees it:
// GraphQL runNodeAction → task written to etcd → gateway watch → agent over
// the mTLS stream → result stored in etcd → the resolver's watch answers.
// Run with -benchtime 1000x for the figure the issue asks for.
func BenchmarkPingRoundTrip(b *testing.B) {
	s := testenv.StartServer(b)
	s.StartAgent(b, "node-a")
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		task, err := s.Admin.Ping(ctx, "node-a", "bench", 10)
		if err != nil || task.Status != "SUCCEEDED" {
			b.Fatalf("ping: %+v, %v", task, err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// BenchmarkEnrolment measures one node's enrolment as the agent does it: a
// fresh key, a CSR and the Enroll RPC (token check, single-use record in
// etcd, signing, node state update). Declaring the node is not timed.
func BenchmarkEnrolment(b *testing.B) {
	s := testenv.StartServer(b)
	ctx := context.Background()
	c := enrollClientB(b, s)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		name := "bench-" + strconv.Itoa(i)
		tok, err := s.Admin.CreateJoinToken(ctx, name, "127.0.0.1", []string{"WEB"}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := testenv.EnrollNode(ctx, c, tok.Token, name); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// BenchmarkServerColdStart measures New+Run until Ready on an empty data dir:
// embedded etcd start, CA and admin creation, listeners, election.
func BenchmarkServerColdStart(b *testing.B) {
	lat := make([]time.Duration, 0, b.N)
	for range b.N {
		b.StopTimer()
		cfg := controlplane.Config{
			DataDir: b.TempDir(), APIListen: testenv.FreeAddr(b), AgentListen: testenv.FreeAddr(b),
			GossipListen:  "127.0.0.1:0",
			AdminPassword: testenv.AdminPassword, Logger: testenv.Logger(),
		}
		srv, err := controlplane.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- srv.Run(ctx) }()
		select {
		case <-srv.Ready():
		case err := <-done:
			b.Fatalf("server exited: %v", err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		cancel()
		<-done
	}
	reportPercentiles(b, lat)
}
