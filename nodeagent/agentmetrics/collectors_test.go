package agentmetrics

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/npanel/npanel/nodeagent/actions/account"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/dns"
	"github.com/npanel/npanel/nodeagent/hoststat"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/nodeagent/services"
)

func fakeSources(t testing.TB) Sources {
	host, err := hoststat.New()
	if err != nil {
		t.Fatal(err)
	}
	return Sources{
		Host: host,
		Services: func() []services.Status {
			return []services.Status{
				{Name: "nginx", State: services.Running, Version: "1.22.1", Restarts: 2},
				{Name: "pdns", State: services.Failed},
			}
		},
		DNS: func(context.Context) (dns.Stats, error) {
			return dns.Stats{UDPQueries: 10, TCPQueries: 3, Zones: 2}, nil
		},
		Databases: func(context.Context) ([]db.DatabaseSize, error) {
			return []db.DatabaseSize{{Engine: "mariadb", Name: "alice_wp", Bytes: 4096}, {Engine: "postgresql", Name: "bob_app", Bytes: 8192}}, nil
		},
		MailQueue: func(context.Context) (int, error) { return 0, ErrAbsent },
		AccountDisk: func(context.Context) ([]AccountDisk, error) {
			return []AccountDisk{{Account: "alice", UsedBytes: 1 << 20, QuotaBytes: 1 << 30, Inodes: 42}}, nil
		},
	}
}

func TestCollectors(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	closeSources, err := Register(reg, fakeSources(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeSources)
	want := `
# HELP npanel_service_up 1 while a daemon the agent manages is running, 0 otherwise (stopped, failed, starting).
# TYPE npanel_service_up gauge
npanel_service_up{service="nginx"} 1
npanel_service_up{service="pdns"} 0
# HELP npanel_service_restarts_total Restarts of a daemon after it exited unexpectedly: the agent's supervisor's count, or the unit's NRestarts on systemd nodes (reset when the unit is started by hand).
# TYPE npanel_service_restarts_total counter
npanel_service_restarts_total{service="nginx"} 2
npanel_service_restarts_total{service="pdns"} 0
# HELP npanel_service_info Always 1; the daemon's version as a label (empty until known).
# TYPE npanel_service_info gauge
npanel_service_info{service="nginx",version="1.22.1"} 1
npanel_service_info{service="pdns",version=""} 1
# HELP npanel_dns_queries_total Queries PowerDNS answered since it started, by transport.
# TYPE npanel_dns_queries_total counter
npanel_dns_queries_total{protocol="tcp"} 3
npanel_dns_queries_total{protocol="udp"} 10
# HELP npanel_dns_zones Zones the node's PowerDNS serves (primary and secondary).
# TYPE npanel_dns_zones gauge
npanel_dns_zones 2
# HELP npanel_database_size_bytes Size of a database (MariaDB: data and index length; PostgreSQL: pg_database_size).
# TYPE npanel_database_size_bytes gauge
npanel_database_size_bytes{database="alice_wp",engine="mariadb"} 4096
npanel_database_size_bytes{database="bob_app",engine="postgresql"} 8192
# HELP npanel_account_disk_used_bytes Disk space an account uses: its quota's count, or a walk of its home where quotas are off.
# TYPE npanel_account_disk_used_bytes gauge
npanel_account_disk_used_bytes{account="alice"} 1.048576e+06
# HELP npanel_account_disk_quota_bytes An account's disk quota; 0 when it has none.
# TYPE npanel_account_disk_quota_bytes gauge
npanel_account_disk_quota_bytes{account="alice"} 1.073741824e+09
# HELP npanel_account_inodes_used Inodes (files and directories) an account uses.
# TYPE npanel_account_inodes_used gauge
npanel_account_inodes_used{account="alice"} 42
# HELP npanel_agent_metrics_source_up 1 when the last read of a cached metrics source (dns, databases, mail_queue, account_disk) succeeded, 0 when it failed.
# TYPE npanel_agent_metrics_source_up gauge
npanel_agent_metrics_source_up{source="account_disk"} 1
npanel_agent_metrics_source_up{source="databases"} 1
npanel_agent_metrics_source_up{source="dns"} 1
`
	names := []string{"npanel_service_up", "npanel_service_restarts_total", "npanel_service_info",
		"npanel_dns_queries_total", "npanel_dns_zones", "npanel_database_size_bytes", "npanel_mail_queue_messages",
		"npanel_account_disk_used_bytes", "npanel_account_disk_quota_bytes", "npanel_account_inodes_used",
		"npanel_agent_metrics_source_up"}
	// source_up is collected alongside the first reads of the sources
	// and may miss them: compare the second scrape.
	_, _ = reg.Gather()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// The host families, read from this machine.
	for _, name := range []string{"npanel_node_cpu_seconds_total", "npanel_node_cpus", "npanel_node_load1",
		"npanel_node_load5", "npanel_node_load15", "npanel_node_memory_total_bytes", "npanel_node_memory_available_bytes",
		"npanel_node_boot_time_seconds", "npanel_node_filesystem_size_bytes", "npanel_node_filesystem_avail_bytes",
		"npanel_node_filesystem_files", "npanel_node_filesystem_files_free"} {
		if n, err := testutil.GatherAndCount(reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}
	if n, _ := testutil.GatherAndCount(reg, "npanel_node_cpu_seconds_total"); n != 8 {
		t.Errorf("cpu modes: %d series, want 8", n)
	}
}

// TestLint: every family the agent's collectors export passes promlint
// (what `promtool check metrics` runs).
func TestLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	closeSources, err := Register(reg, fakeSources(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeSources)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestSourceDown(t *testing.T) {
	reg := prometheus.NewRegistry()
	closeSources, err := Register(reg, Sources{
		DNS:       func(context.Context) (dns.Stats, error) { return dns.Stats{}, errors.New("connection refused") },
		MailQueue: func(context.Context) (int, error) { return 7, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeSources)
	want := `
# HELP npanel_agent_metrics_source_up 1 when the last read of a cached metrics source (dns, databases, mail_queue, account_disk) succeeded, 0 when it failed.
# TYPE npanel_agent_metrics_source_up gauge
npanel_agent_metrics_source_up{source="dns"} 0
npanel_agent_metrics_source_up{source="mail_queue"} 1
# HELP npanel_mail_queue_messages Messages in Exim's queue.
# TYPE npanel_mail_queue_messages gauge
npanel_mail_queue_messages 7
`
	// The first gather waits for the first values; source_up may be
	// collected before them, so gather twice.
	_, _ = reg.Gather()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "npanel_agent_metrics_source_up", "npanel_mail_queue_messages", "npanel_dns_zones"); err != nil {
		t.Fatal(err)
	}
}

// TestCachedRefresh: a stale value starts one background refresh and the
// scrape answers at once with the old value.
func TestCachedRefresh(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	now := time.Unix(1000, 0)
	c := newCached(context.Background(), "x", time.Minute, time.Minute, nil, func(context.Context) (int, error) {
		n := calls.Add(1)
		if n > 1 {
			<-release
		}
		return int(n), nil
	})
	c.now = func() time.Time { return now }
	if v, ok := c.get(); !ok || v != 1 {
		t.Fatalf("first get = %d, %v", v, ok)
	}
	if v, _ := c.get(); v != 1 || calls.Load() != 1 {
		t.Fatalf("fresh get refreshed: %d calls", calls.Load())
	}
	now = now.Add(time.Minute)
	start := time.Now()
	for range 3 {
		if v, ok := c.get(); !ok || v != 1 {
			t.Fatalf("stale get = %d, %v", v, ok)
		}
	}
	if time.Since(start) > time.Second {
		t.Fatal("a stale get waited for the refresh")
	}
	close(release)
	for deadline := time.Now().Add(5 * time.Second); ; {
		if v, _ := c.get(); v == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("refresh never landed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if calls.Load() != 2 {
		t.Fatalf("%d refreshes, want 2 (one per stale period)", calls.Load())
	}
}

// TestDiskUsageWalk: without quotas, homes are walked at most every
// walkEvery, a round cut short resumes where it stopped, and deleted
// accounts drop out.
func TestDiskUsageWalk(t *testing.T) {
	dir := t.TempDir()
	p, err := platform.ProfileFor(platform.NameDebian12, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := account.HomeQuotas(p); ok {
		t.Skip("the temp dir's filesystem enforces user quotas; the walk is not used there")
	}
	var passwd strings.Builder
	for i, name := range []string{"alice", "bob", "carol"} {
		home := filepath.Join(p.HomeBase, name)
		if err := os.MkdirAll(filepath.Join(home, "public_html"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(home, "public_html", "index.html"), make([]byte, 10000), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&passwd, "%s:x:%d:%d:%s:%s:/bin/bash\n", name, 5000+i, 5000+i, account.GECOSMarker, home)
	}
	passwd.WriteString("root:x:0:0:root:/root:/bin/bash\n")
	p.Passwd = filepath.Join(dir, "passwd")
	if err := os.WriteFile(p.Passwd, []byte(passwd.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	d := NewDiskUsage(p)
	now := time.Unix(1000, 0)
	d.now = func() time.Time { return now }
	var walked []string
	stopAfter := 2
	ctx, cancel := context.WithCancel(context.Background())
	d.walk = func(c context.Context, home string) (uint64, uint64, error) {
		walked = append(walked, filepath.Base(home))
		if len(walked) == stopAfter {
			cancel() // the round's deadline
		}
		return account.WalkUsage(context.Background(), home)
	}
	got, err := d.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Account != "alice" || got[1].Account != "bob" {
		t.Fatalf("first round = %+v", got)
	}
	// Two directories and a file of 10,000 bytes (at least 3 blocks).
	if got[0].Inodes != 3 || got[0].UsedBytes < 12288 || got[0].QuotaBytes != 0 {
		t.Fatalf("alice = %+v", got[0])
	}
	// Within walkEvery: no walk, same figures.
	if got, _ := d.Read(context.Background()); len(got) != 2 || len(walked) != 2 {
		t.Fatalf("early read walked: %v, %+v", walked, got)
	}
	now = now.Add(walkEvery)
	stopAfter = -1
	if got, _ := d.Read(context.Background()); len(got) != 3 {
		t.Fatalf("second round = %+v", got)
	}
	if strings.Join(walked, ",") != "alice,bob,carol,alice,bob" {
		t.Fatalf("walk order %v: the second round must resume at carol", walked)
	}
	if err := os.WriteFile(p.Passwd, []byte(strings.Replace(passwd.String(), "bob:", "#bob:", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Read(context.Background()); len(got) != 2 || got[1].Account != "carol" {
		t.Fatalf("after deleting bob = %+v", got)
	}
}

// BenchmarkScrape is one /metrics request through promhttp with the host
// families, a few daemons and 1,000 accounts' disk series (the cached
// sources already filled, as at every scrape but the first).
func BenchmarkScrape(b *testing.B) {
	src := fakeSources(b)
	disk := make([]AccountDisk, 1000)
	for i := range disk {
		disk[i] = AccountDisk{Account: fmt.Sprintf("user%04d", i), UsedBytes: uint64(i) << 20, QuotaBytes: 1 << 30, Inodes: uint64(i * 10)}
	}
	src.AccountDisk = func(context.Context) ([]AccountDisk, error) { return disk, nil }
	dbs := make([]db.DatabaseSize, 1000)
	for i := range dbs {
		dbs[i] = db.DatabaseSize{Engine: "mariadb", Name: fmt.Sprintf("user%04d_wp", i), Bytes: int64(i) << 16}
	}
	src.Databases = func(context.Context) ([]db.DatabaseSize, error) { return dbs, nil }
	reg := prometheus.NewRegistry()
	closeSources, err := Register(reg, src)
	if err != nil {
		b.Fatal(err)
	}
	defer closeSources()
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	h.ServeHTTP(httptest.NewRecorder(), req) // fills the caches
	b.ReportAllocs()
	// CPU time besides wall time: on a shared machine ns/op includes
	// waiting for a core.
	var before, after syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	var size int
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		size = w.Body.Len()
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(size), "bytes/scrape")
}
