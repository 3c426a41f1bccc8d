package web_test

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/actions/web"
)

// BenchmarkTLS1000: issue 27's figures. 1,000 accounts' sites (each with
// HTTPS and its self-signed certificate) created in one burst; then on that
// nginx: nginx -t and a bare reload (HUP, wait for the new workers) with
// 1,000 TLS vhosts; then 1,000 certificates from a test CA installed at
// once, counting nginx reloads. Run with -benchtime=1x.
func BenchmarkTLS1000(b *testing.B) {
	const n, bare = 1000, 20
	for range b.N {
		s := startStack(b)
		owners := make([]web.Owner, n)
		names := make([]string, n)
		for i := range owners {
			owners[i] = s.fakeOwner(b)
			names[i] = fmt.Sprintf("npt-t%d.example.com", i)
		}
		burst := func(f func(i int) error) time.Duration {
			var wg sync.WaitGroup
			errs := make([]error, n)
			start := time.Now()
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = f(i)
				}()
			}
			wg.Wait()
			d := time.Since(start)
			for _, err := range errs {
				if err != nil {
					b.Fatal(err)
				}
			}
			return d
		}
		reloads := s.m.Reloads("nginx")
		created := burst(func(i int) error {
			_, err := s.web.Ensure(context.Background(), s.env, owners[i], spec(site(names[i], "public_html", "", "www."+names[i])), false)
			return err
		})
		b.ReportMetric(ms(created), "create-burst-ms")
		b.ReportMetric(float64(s.m.Reloads("nginx")-reloads), "create-reloads")
		if r, err := s.tlsGet(names[n-1], "/", nil); err != nil || r.code != 200 || r.alpn != "h2" {
			b.Fatalf("last site over HTTPS: %+v %v", r, err)
		}

		w := s.env.Profile.Web()
		start := time.Now()
		for range 5 {
			if out, err := exec.Command(w.Nginx, "-t", "-q", "-p", w.NginxPrefix, "-c", w.NginxConf).CombinedOutput(); err != nil {
				b.Fatalf("nginx -t: %v %s", err, out)
			}
		}
		b.ReportMetric(ms(time.Since(start)/5), "nginx-t-ms")
		start = time.Now()
		for range bare {
			if err := s.m.Reload(context.Background(), "nginx"); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(ms(time.Since(start)/bare), "reload-ms")

		ca := newTestCA(b)
		pairs := make([][2][]byte, n)
		for i := range pairs {
			c, k, _ := ca.issue(b, names[i], "www."+names[i])
			pairs[i] = [2][]byte{c, k}
		}
		reloads = s.m.Reloads("nginx")
		installed := burst(func(i int) error {
			_, err := s.web.InstallCertificate(context.Background(), s.env, names[i], pairs[i][0], pairs[i][1])
			return err
		})
		b.ReportMetric(ms(installed), "install-burst-ms")
		b.ReportMetric(float64(s.m.Reloads("nginx")-reloads), "install-reloads")
		for _, i := range []int{0, n / 2, n - 1} {
			if r, err := s.tlsGet(names[i], "/", ca.pool); err != nil || r.code != 200 {
				b.Fatalf("%s after install: %+v %v", names[i], r, err)
			}
		}
	}
}
