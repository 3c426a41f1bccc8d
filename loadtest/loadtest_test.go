package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/diskprobe"
)

// npanelBinary and etcdBinary are built once in TestMain so that the builds
// (slow on a cold cache) do not count against the runs' time bounds.
var npanelBinary, etcdBinary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "npanel-loadtest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	npanelBinary, etcdBinary = filepath.Join(dir, "npanel"), filepath.Join(dir, "etcd")
	ctx := context.Background()
	err = goBuild(ctx, npanelBinary, "./cmd/npanel", func(string, ...any) {})
	if err == nil {
		err = goBuild(ctx, etcdBinary, "go.etcd.io/etcd/server/v3", func(string, ...any) {})
	}
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logWriter sends progress lines to t.Log.
type logWriter struct {
	t  *testing.T
	mu sync.Mutex
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestRunSmall runs the whole load test small against a server it starts
// (the real binary as a child process): every account must reach ACTIVE,
// every figure must be there, and the JSON report must read back.
func TestRunSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real server and 10 simulated agents; skipped with -short")
	}
	rep := runSmall(t, Config{})
	if rep.EtcdProcess.Measured {
		t.Errorf("embedded etcd measured as a process of its own: %+v", rep.EtcdProcess)
	}
	// The embedded etcd's WAL is the server's own writing.
	if rep.Server.WrittenBytes <= 0 {
		t.Errorf("server wrote %d bytes to storage during the load", rep.Server.WrittenBytes)
	}
	if d := rep.Disk; !d.Measured || d.Latency.Count < 10 || d.Seconds <= 0 {
		t.Errorf("disk probe figures: %+v", d)
	}
}

// TestRunSmallExternalEtcd is TestRunSmall with the server on an etcd
// process of its own (--etcd external): etcd's figures come from that
// process, which is gone when the run returns.
func TestRunSmallExternalEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real etcd and server processes and 10 simulated agents; skipped with -short")
	}
	rep := runSmall(t, Config{Etcd: etcdExternal, EtcdBinary: etcdBinary})
	e := rep.EtcdProcess
	if !e.Measured || e.PID == 0 || e.PID == rep.Server.PID || e.PeakRSS <= 0 || e.LoadCPUSeconds <= 0 || e.WrittenBytes <= 0 {
		t.Errorf("etcd process figures: %+v", e)
	}
	if rep.Etcd.Proposals < 300 {
		t.Errorf("etcd committed %.0f proposals for 300 accounts: not the external member's metrics", rep.Etcd.Proposals)
	}
	if last := rep.Progress[len(rep.Progress)-1]; last.EtcdRSS <= 0 {
		t.Errorf("progress does not follow the etcd process: %+v", last)
	}
	if rep.Config.Etcd != etcdExternal {
		t.Errorf("report config etcd = %q", rep.Config.Etcd)
	}
	if readProc(e.PID).hasStats {
		t.Errorf("etcd pid %d still exists after run returned", e.PID)
	}
}

// runSmall runs 300 accounts on 10 agents against a server it starts,
// with base's etcd settings, and checks what every run must report.
func runSmall(t *testing.T, base Config) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	begin := time.Now()
	rep, err := run(ctx, Config{
		Etcd:         base.Etcd,
		EtcdBinary:   base.EtcdBinary,
		ServerBinary: npanelBinary,
		Agents:       10,
		Accounts:     300,
		Rate:         200,
		Concurrency:  16,
		Latency:      5 * time.Millisecond,
		Timeout:      55 * time.Second,
		ListSamples:  20,
		Log:          &logWriter{t: t},
	})
	if rep != nil {
		var buf bytes.Buffer
		rep.print(&buf)
		t.Log(buf.String())
	}
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if took := time.Since(begin); took > 60*time.Second {
		t.Errorf("run took %v, want < 60s", took)
	}

	a := rep.Accounts
	if !rep.OK || a.Created != 300 || a.Attempted != 300 || len(a.Errors) != 0 {
		t.Errorf("accounts: ok %v, created %d of %d attempted, errors %v", rep.OK, a.Created, a.Attempted, a.Errors)
	}
	if a.Active != 300 || a.NotActive != 0 || a.Failed != 0 {
		t.Errorf("accounts: %d ACTIVE, %d not ACTIVE, %d FAILED; want all 300 ACTIVE", a.Active, a.NotActive, a.Failed)
	}
	if rep.Agents.Ready != 10 || rep.Agents.Results < 300 {
		t.Errorf("agents: %d ready, %d results; want 10 and >= 300", rep.Agents.Ready, rep.Agents.Results)
	}
	for name, d := range map[string]Dist{
		"createAccount": rep.CreateLatencyMs, "create to ACTIVE": rep.CreateToActiveMs,
	} {
		if d.Count != 300 || d.P50 <= 0 || d.P50 > d.P95 || d.P95 > d.P99 || d.P99 > d.Max {
			t.Errorf("%s latency is not a distribution of 300: %+v", name, d)
		}
	}
	if l := rep.ListLatencyMs; l.All.Count != 20 || l.Paged != 300 || l.ByStatus.Count == 0 || l.ByOwner.Count == 0 {
		t.Errorf("list latency: %+v", l)
	}
	if a.ActivePerSecond <= 0 || a.CreateRate <= 0 || a.CreateRate > 260 {
		t.Errorf("rates: %.1f ACTIVE/s, %.1f created/s (limit 200/s)", a.ActivePerSecond, a.CreateRate)
	}
	if s := rep.Server; !s.Measured || s.PID == 0 || s.PeakRSS <= 0 || s.TotalCPUSecs <= 0 {
		t.Errorf("server figures: %+v", s)
	}
	if !rep.Etcd.Measured || rep.Etcd.DBSize <= 0 {
		t.Errorf("etcd figures: %+v", rep.Etcd)
	}
	if k := rep.Keyspace; !k.Measured || k.Revision <= 0 || k.Keys <= 0 || !slices.ContainsFunc(k.Kinds, func(kk KeyKind) bool {
		return kk.Prefix == "/npanel/accounts/" && kk.Keys == 300 && kk.ValueBytes > 0
	}) {
		t.Errorf("keyspace census: %+v", k)
	}
	if len(rep.Targets) != 2 || len(rep.Progress) == 0 {
		t.Errorf("targets %+v, %d progress samples", rep.Targets, len(rep.Progress))
	}

	// The server was stopped and waited for before run returned.
	if readProc(rep.Server.PID).hasStats {
		t.Errorf("server pid %d still exists after run returned", rep.Server.PID)
	}

	path := filepath.Join(t.TempDir(), "results", "report.json")
	if err := rep.writeJSON(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatalf("report is not JSON: %v", err)
	}
	for _, k := range []string{"config", "accounts", "createAccountLatencyMs", "createAccountOver50ms", "createToActiveMs", "accountsFirst50LatencyMs", "server", "etcd", "keyspace", "targets"} {
		if _, ok := back[k]; !ok {
			t.Errorf("JSON report lacks %q", k)
		}
	}
	return rep
}

// TestDiskFigures sums a probe's writes up against the 50 ms bar.
func TestDiskFigures(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := func(from, to int) diskprobe.Span {
		return diskprobe.Span{Start: t0.Add(time.Duration(from) * time.Millisecond), End: t0.Add(time.Duration(to) * time.Millisecond)}
	}
	res := diskprobe.Result{Dir: "/d", Elapsed: 2 * time.Second, Writes: []diskprobe.Span{
		at(0, 1), at(10, 12), at(20, 70), at(80, 200), at(210, 211), at(220, 300),
	}}
	fig := diskFiguresOf(res)
	want := []diskprobe.Span{at(80, 200), at(220, 300)} // 50 ms exactly is not over
	if !fig.Measured || fig.Dir != "/d" || fig.IntervalMs != 10 || fig.Seconds != 2 || fig.Latency.Count != 6 || fig.Latency.Max != 120 ||
		fig.SlowWrites != 2 || !slices.Equal(fig.stalls, want) || fig.StalledSeconds != 0.1 || fig.StalledShare != 5 {
		t.Errorf("figures: %+v", fig)
	}
	if fig := diskFiguresOf(diskprobe.Result{Dir: "/d"}); fig.Measured || fig.SlowWrites != 0 || fig.StalledShare != 0 {
		t.Errorf("figures of a probe with no writes: %+v", fig)
	}
}

func TestSlowCreatesOverlap(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := func(from, to int) diskprobe.Span {
		return diskprobe.Span{Start: t0.Add(time.Duration(from) * time.Millisecond), End: t0.Add(time.Duration(to) * time.Millisecond)}
	}
	stalls := []diskprobe.Span{at(100, 200), at(500, 560), at(1000, 1400)}
	creates := []diskprobe.Span{
		at(0, 60),      // before every stall
		at(50, 110),    // into the first
		at(150, 210),   // inside it, past its end
		at(200, 260),   // starts as it ends: no overlap
		at(300, 360),   // between stalls
		at(540, 600),   // out of the second
		at(1100, 1160), // inside the third
		at(1500, 1560), // after every stall
	}
	sc := slowCreatesOf(creates, 400, DiskFigures{Measured: true, stalls: stalls}, t0)
	if sc.Count != 8 || sc.Percent != 2 || sc.DuringDiskStall != 4 {
		t.Errorf("slow creates: %+v, want 8 (2%%), 4 during a stall", sc)
	}
	// Creates that overlap one another are one hold-up; the lone ones are
	// episodes of their own.
	wantEpisodes := []SlowEpisode{
		{At: 0, Seconds: 0.11, Creates: 2, DiskStall: true},
		{At: 0.15, Seconds: 0.11, Creates: 2, DiskStall: true},
		{At: 0.3, Seconds: 0.06, Creates: 1},
		{At: 0.54, Seconds: 0.06, Creates: 1, DiskStall: true},
		{At: 1.1, Seconds: 0.06, Creates: 1, DiskStall: true},
		{At: 1.5, Seconds: 0.06, Creates: 1},
	}
	if !slices.Equal(sc.Episodes, wantEpisodes) {
		t.Errorf("episodes:\n got %+v\nwant %+v", sc.Episodes, wantEpisodes)
	}
	if sc := slowCreatesOf(creates, 400, DiskFigures{}, t0); sc.DuringDiskStall != 0 {
		t.Errorf("no probe: %+v", sc)
	}
	if sc := slowCreatesOf(nil, 0, DiskFigures{stalls: stalls}, t0); sc.Count != 0 || sc.Percent != 0 || sc.DuringDiskStall != 0 || sc.Episodes != nil {
		t.Errorf("no creates: %+v", sc)
	}
}

func TestSlowEpisodes(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := func(from, to int) diskprobe.Span {
		return diskprobe.Span{Start: t0.Add(time.Duration(from) * time.Millisecond), End: t0.Add(time.Duration(to) * time.Millisecond)}
	}
	// Out of order, one inside another, and one starting as another ends.
	got := episodes([]diskprobe.Span{at(300, 360), at(0, 100), at(20, 60), at(100, 150), at(400, 460)})
	want := []episode{{at(0, 150), 3}, {at(300, 360), 1}, {at(400, 460), 1}}
	if !slices.Equal(got, want) {
		t.Errorf("episodes:\n got %+v\nwant %+v", got, want)
	}
	line := episodesString([]SlowEpisode{
		{At: 1, Seconds: 0.1, Creates: 3, DiskStall: true},
		{At: 2, Seconds: 0.07, Creates: 2},
		{At: 3, Seconds: 0.2, Creates: 9},
	}, true)
	if want := "3, 2 with no disk stall (11 creates); largest: 9 at 3.0s for 200 ms, 2 at 2.0s for 70 ms"; line != want {
		t.Errorf("summary line:\n got %q\nwant %q", line, want)
	}
}

func TestUsername(t *testing.T) {
	for _, tc := range []struct {
		i    int
		want string
	}{{0, "ltab1200000"}, {35, "ltab120000z"}, {36, "ltab1200010"}, {99999, "ltab120255r"}} {
		if got := username("ltab12", tc.i); got != tc.want {
			t.Errorf("username(%d) = %q, want %q", tc.i, got, tc.want)
		}
	}
	// Names sort in creation order, which keeps the paged order readable.
	if username("lt", 35) >= username("lt", 36) {
		t.Error("usernames do not sort in creation order")
	}
}

func TestDist(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	d := distOf(ds)
	if d.Count != 100 || d.P50 != 50 || d.P95 != 95 || d.P99 != 99 || d.Max != 100 || d.Mean != 50.5 {
		t.Errorf("distOf(1..100 ms) = %+v", d)
	}
	if (distOf(nil) != Dist{}) {
		t.Error("distOf(nil) is not zero")
	}
}

func TestMetrics(t *testing.T) {
	parse := func(fsyncs [3]int, sum float64) metricSet {
		return parseMetrics(strings.NewReader(fmt.Sprintf(`# HELP etcd_mvcc_db_total_size_in_bytes Total size.
# TYPE etcd_mvcc_db_total_size_in_bytes gauge
etcd_mvcc_db_total_size_in_bytes 2.4576e+07
etcd_mvcc_db_total_size_in_use_in_bytes{a="b"} 3
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} %d
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} %d
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} %d
etcd_disk_wal_fsync_duration_seconds_sum %g
etcd_disk_wal_fsync_duration_seconds_count %d
`, fsyncs[0], fsyncs[1], fsyncs[2], sum, fsyncs[2])))
	}
	before := parse([3]int{10, 10, 10}, 0.005)
	if v, ok := before.value("etcd_mvcc_db_total_size_in_bytes"); !ok || v != 24576000 {
		t.Errorf("db size = %v, %v", v, ok)
	}
	if _, ok := before.value("etcd_mvcc_db_total_size_in_use_in_bytes"); ok {
		t.Error("a labelled series was read as unlabelled")
	}
	// 100 more fsyncs, 98 under 1 ms and 2 under 2 ms, 0.1 s in all.
	after := parse([3]int{108, 110, 110}, 0.105)
	h := histDelta(before, after, "etcd_disk_wal_fsync_duration_seconds")
	if h.Count != 100 || h.MeanMs != 1 || h.P99Ms != 2 {
		t.Errorf("histDelta = %+v, want 100 observations, mean 1 ms, p99 <= 2 ms", h)
	}
	if (histDelta(after, after, "etcd_disk_wal_fsync_duration_seconds") != histStats{}) {
		t.Error("histDelta of no observations is not zero")
	}
}

func TestReadProcSelf(t *testing.T) {
	p := readProc(os.Getpid())
	if !p.hasStats || p.peakRSS <= 0 || p.rss <= 0 || p.peakRSS < p.rss {
		t.Errorf("readProc(self) = %+v", p)
	}
	if readProc(0).hasStats {
		t.Error("readProc(0) has stats")
	}
}

// TestKindOf groups keys as the census reports them.
func TestKindOf(t *testing.T) {
	for key, want := range map[string]string{
		"/npanel/accounts/01ABC":             "/npanel/accounts/",
		"/npanel/names/domain/a.example.com": "/npanel/names/domain/",
		"/npanel/done/account/01ABC/01T":     "/npanel/done/account/",
		"/npanel/cluster/ca":                 "/npanel/cluster/",
		"/npanel/names":                      "/npanel/names",
		"/other/key":                         "(other)",
	} {
		if got := kindOf([]byte(key)); got != want {
			t.Errorf("kindOf(%q) = %q, want %q", key, got, want)
		}
	}
}
