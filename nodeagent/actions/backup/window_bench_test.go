package backup

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv/webd"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

const nginxBin = "/usr/sbin/nginx"

// Shape of the window benchmark's accounts and site load.
const (
	windowFilesPerAccount = 50
	windowFileSize        = 20 << 10 // 50 x 20 KiB = 1000 KiB a home
	windowClients         = 4        // concurrent HTTP clients
	windowPace            = 5 * time.Millisecond
	windowIdle            = 5 * time.Second
)

// BenchmarkBackupWindow is the node's backup window: N accounts
// (NPANEL_BENCH_ACCOUNTS, default 100), each a home of 50 small
// incompressible files (~1 MB) and a LOCAL repository, all backed up
// through one Module at once, as the control plane sends them; the
// Module's concurrency limit (default 2) queues them. A real nginx serves
// a static page on loopback, hit by a few paced HTTP clients: first idle
// for 5 s, then during the window. Reports the window's wall time,
// backups/s and the page's p50/p99 latency idle and during the window.
// Run with -benchtime=1x.
func BenchmarkBackupWindow(b *testing.B) {
	accounts := 100
	if s := os.Getenv("NPANEL_BENCH_ACCOUNTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("NPANEL_BENCH_ACCOUNTS=%q: a positive integer", s)
		}
		accounts = v
	}
	if _, err := os.Stat(nginxBin); err != nil {
		b.Skipf("%s is not installed (make deps)", nginxBin)
	}
	n := newNode(b, nodeOpts{})
	site := startStaticNginx(b)

	accts := make([]*node, accounts)
	accts[0] = n
	for i := 1; i < accounts; i++ {
		a := &node{env: n.env, m: n.m, log: n.log, user: validate.TestUserPrefix + hex.EncodeToString(randBytes(4))}
		a.home = filepath.Join(n.env.Profile.HomeBase, a.user)
		if err := os.MkdirAll(a.home, 0o711); err != nil {
			b.Fatal(err)
		}
		if err := os.Chown(a.home, testUID, testUID); err != nil {
			b.Fatal(err)
		}
		a.password = "pw-" + hex.EncodeToString(randBytes(16))
		accts[i] = a
	}
	for _, a := range accts {
		for j := range windowFilesPerAccount {
			a.writeFile(b, filepath.Join("public_html", fmt.Sprintf("d%d", j/10), fmt.Sprintf("f%02d.bin", j)), randBytes(windowFileSize))
		}
	}

	idle := site.load(b, func() { time.Sleep(windowIdle) })

	b.ResetTimer()
	for iter := range b.N {
		var (
			wall   time.Duration
			mu     sync.Mutex
			failed []string
		)
		during := site.load(b, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			t0 := time.Now()
			for i, a := range accts {
				wg.Go(func() {
					act := a.m.NewBackupAccount(&agentpb.BackupAccountAction{
						BackupId:   fmt.Sprintf("w%d-%d", iter, i),
						Repository: a.repo(),
						StateJson:  []byte(`{"sites":["example.com"]}`),
					})
					act.AllowTestUsernames()
					err := act.Validate()
					if err == nil {
						_, err = act.Apply(ctx, a.env)
					}
					if err != nil {
						mu.Lock()
						failed = append(failed, a.user+": "+err.Error())
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			wall = time.Since(t0)
		})
		if len(failed) > 0 {
			b.Fatalf("%d of %d backups failed, first: %s", len(failed), accounts, failed[0])
		}
		b.ReportMetric(float64(accounts), "accounts")
		b.ReportMetric(wall.Seconds(), "window-s")
		b.ReportMetric(float64(accounts)/wall.Seconds(), "backups/s")
		idle.report(b, "idle") // here: ResetTimer drops metrics reported before it
		during.report(b, "window")
		b.Logf("%d accounts (%d files, ~%d KiB each), concurrency %d: window %v (%.2f backups/s)",
			accounts, windowFilesPerAccount, windowFilesPerAccount*windowFileSize>>10, cap(n.m.sem), wall.Round(time.Millisecond), float64(accounts)/wall.Seconds())
	}
}

// staticSite is an nginx serving one static page on loopback.
type staticSite struct {
	url    string
	client *http.Client
}

// startStaticNginx runs nginx (through webd, stopped at cleanup) with a
// docroot holding index.html (4 KiB) under a fresh temporary prefix.
func startStaticNginx(t testing.TB) *staticSite {
	t.Helper()
	prefix := t.TempDir()
	// TempDir's directories are 0700; nginx's workers (nobody) must pass.
	for _, d := range []string{filepath.Dir(prefix), prefix} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	www := filepath.Join(prefix, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		t.Fatal(err)
	}
	page := make([]byte, 4<<10)
	for i := range page {
		page[i] = 'a' + byte(i%26)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), page, 0o644); err != nil {
		t.Fatal(err)
	}
	// A port free a moment ago (internal/testenv's FreeAddr: importing
	// testenv here would be an import cycle through nodeagent).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	conf := filepath.Join(prefix, "nginx.conf")
	cfg := fmt.Sprintf(`daemon off;
user nobody nogroup;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s;
		root %[3]s;
		location / { }
	}
}
`, prefix, addr, www)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	m := webd.NewManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = m.Ensure(ctx, services.Spec{
		Name:         "nginx",
		Binary:       nginxBin,
		Args:         []string{"-c", conf, "-e", filepath.Join(prefix, "error.log")},
		ReloadSignal: syscall.SIGHUP,
		StopSignal:   syscall.SIGQUIT,
		Ready: func(ctx context.Context) error {
			c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
			if err == nil {
				_ = c.Close()
			}
			return err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: windowClients, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &staticSite{url: "http://" + addr + "/index.html", client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// latencies are request durations, sorted.
type latencies []time.Duration

func (l latencies) pct(p float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(p*float64(len(l))+0.5) - 1
	return l[min(max(i, 0), len(l)-1)]
}

func (l latencies) report(b *testing.B, name string) {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(l.pct(0.50)), "p50-"+name+"-ms")
	b.ReportMetric(ms(l.pct(0.99)), "p99-"+name+"-ms")
	b.Logf("site %-6s %6d requests: p50 %v p99 %v max %v", name, len(l),
		l.pct(0.50).Round(time.Microsecond), l.pct(0.99).Round(time.Microsecond), l.pct(1).Round(time.Microsecond))
}

// load runs windowClients clients, each a GET of the page every
// windowPace, while f runs, and returns their requests' latencies. Any
// failed request fails the benchmark.
func (s *staticSite) load(b *testing.B, f func()) latencies {
	b.Helper()
	stop := make(chan struct{})
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		all  latencies
		errs []error
	)
	for range windowClients {
		wg.Go(func() {
			var mine latencies
			tick := time.NewTicker(windowPace)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					mu.Lock()
					all = append(all, mine...)
					mu.Unlock()
					return
				case <-tick.C:
				}
				t0 := time.Now()
				err := s.get()
				d := time.Since(t0)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					continue
				}
				mine = append(mine, d)
			}
		})
	}
	f()
	close(stop)
	wg.Wait()
	if len(errs) > 0 {
		b.Fatalf("%d requests failed, first: %v", len(errs), errs[0])
	}
	slices.Sort(all)
	return all
}

func (s *staticSite) get() error {
	resp, err := s.client.Get(s.url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	total, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || total != 4<<10 {
		return fmt.Errorf("GET %s: %s, %d bytes", s.url, resp.Status, total)
	}
	return nil
}
