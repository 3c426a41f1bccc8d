package web_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/benchstat"
	"github.com/npanel/npanel/nodeagent/actions/web"
)

// The figures of issue 4, measured against the real nginx on loopback.
// Sites are static and their accounts have no Linux user (fakeOwner): the
// figures are about the vhost path, and 1,000 useradds would measure
// useradd. Run with -benchtime=1x: each iteration is a whole scenario.

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// waitOK polls host until it answers 200.
func (s *stack) waitOK(b testing.TB, host string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _, _, err := s.tryGet(host, "/"); err == nil && code == 200 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s never answered 200", host)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkCreateToFirst200: one vhost after another, 200 in all, from the
// start of Ensure to the first 200 response.
func BenchmarkCreateToFirst200(b *testing.B) {
	const n = 200
	for range b.N {
		s := startStack(b)
		var lat []time.Duration
		for i := range n {
			o := s.fakeOwner(b)
			d := fmt.Sprintf("npt-c%d.example.com", i)
			start := time.Now()
			if _, err := s.web.Ensure(context.Background(), s.env, o, spec(site(d, "public_html", "")), false); err != nil {
				b.Fatal(err)
			}
			s.waitOK(b, d)
			lat = append(lat, time.Since(start))
		}
		b.ReportMetric(ms(benchstat.Percentile(lat, 0.5)), "p50-ms")
		b.ReportMetric(ms(benchstat.Percentile(lat, 0.99)), "p99-ms")
	}
}

// BenchmarkBurst1000: 1,000 accounts' Ensure calls at once; then, on the
// same nginx with those 1,000 vhosts, bare reloads (HUP and wait for the new
// workers) for comparison. 100 bare reloads are timed and scaled to 1,000.
func BenchmarkBurst1000(b *testing.B) {
	const n, bare = 1000, 100
	for range b.N {
		s := startStack(b)
		owners := make([]web.Owner, n)
		for i := range owners {
			owners[i] = s.fakeOwner(b)
		}
		reloads := s.m.Reloads("nginx")
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := time.Now()
		for i, o := range owners {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = s.web.Ensure(context.Background(), s.env, o, spec(site(fmt.Sprintf("npt-b%d.example.com", i), "public_html", "")), false)
			}()
		}
		wg.Wait()
		total := time.Since(start)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		s.waitOK(b, "npt-b999.example.com")
		b.ReportMetric(ms(total), "burst-ms")
		b.ReportMetric(float64(s.m.Reloads("nginx")-reloads), "reloads")

		start = time.Now()
		for range bare {
			if err := s.m.Reload(context.Background(), "nginx"); err != nil {
				b.Fatal(err)
			}
		}
		per := time.Since(start) / bare
		b.ReportMetric(ms(per), "bare-reload-ms")
		b.ReportMetric(ms(per*n), "1000-bare-reloads-ms")
	}
}

// BenchmarkEnsureOverhead: adding one vhost through Ensure vs by hand
// (write the file, nginx -t, HUP and wait), alternating, on a node that
// already serves 200 sites.
func BenchmarkEnsureOverhead(b *testing.B) {
	const base, rounds = 200, 30
	for range b.N {
		s := startStack(b)
		for i := range base {
			o := s.fakeOwner(b)
			if _, err := s.web.Ensure(context.Background(), s.env, o, spec(site(fmt.Sprintf("npt-o%d.example.com", i), "public_html", "")), false); err != nil {
				b.Fatal(err)
			}
		}
		w := s.env.Profile.Web()
		var ours, hand []time.Duration
		for i := range rounds {
			o := s.fakeOwner(b)
			start := time.Now()
			if _, err := s.web.Ensure(context.Background(), s.env, o, spec(site(fmt.Sprintf("npt-e%d.example.com", i), "public_html", "")), false); err != nil {
				b.Fatal(err)
			}
			ours = append(ours, time.Since(start))

			// The same server block, written and loaded by hand.
			o2 := s.fakeOwner(b)
			conf, err := os.ReadFile(filepath.Join(w.VhostDir, "npanel-"+o.Username+"_"+fmt.Sprintf("npt-e%d.example.com", i)+".conf"))
			if err != nil {
				b.Fatal(err)
			}
			conf = []byte(strings.NewReplacer(o.Username, o2.Username, fmt.Sprintf("npt-e%d.", i), fmt.Sprintf("npt-h%d.", i)).Replace(string(conf)))
			start = time.Now()
			if err := os.WriteFile(filepath.Join(w.VhostDir, "hand-"+o2.Username+".conf"), conf, 0o644); err != nil {
				b.Fatal(err)
			}
			if out, err := exec.Command(w.Nginx, "-t", "-q", "-p", w.NginxPrefix, "-c", w.NginxConf).CombinedOutput(); err != nil {
				b.Fatalf("nginx -t: %v %s", err, out)
			}
			if err := s.m.Reload(context.Background(), "nginx"); err != nil {
				b.Fatal(err)
			}
			hand = append(hand, time.Since(start))
		}
		b.ReportMetric(ms(benchstat.Percentile(ours, 0.5)), "ensure-p50-ms")
		b.ReportMetric(ms(benchstat.Percentile(hand, 0.5)), "by-hand-p50-ms")
		b.ReportMetric(float64(benchstat.Percentile(ours, 0.5))/float64(benchstat.Percentile(hand, 0.5)), "ratio")
	}
}
