package controlplane_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// BenchmarkCertRenewalWave drives the certificate controller itself (not a
// model of its schedule: BenchmarkRenewalSweep10k) over the automatic
// certificates of NPANEL_BENCH_CERTS accounts (10,000), spread over 10 fake
// web nodes (two of them DNS nodes, primary and secondary for one another:
// the zones' secondaries are not what is measured) that answer every
// order at once with a certificate of a 90 s
// lifetime, so that the whole population comes due for renewal about a
// minute after its first issue. The sweep runs every second and orders are
// not paced: what is measured is the controller, etcd and the task path,
// not the CA's rate limits (TestCertOrderPacing covers the pacing).
// Reported:
//
//   - issue-s: first createAccount to every certificate ISSUED;
//   - renew-s: first to last renewal recorded (new serial);
//   - orders: issue orders the nodes received, first issues included
//     (2 per certificate when nothing is ordered twice);
//   - max-renewals/s: the most renewals recorded in one second;
//   - min-lead-s: the shortest time left on a replaced certificate when
//     its renewal was recorded (negative: one expired first);
//   - expired: certificates seen EXPIRED.
//
// Not part of make test: it runs only with -bench, about three minutes.
func BenchmarkCertRenewalWave(b *testing.B) {
	n := 10000
	if v := os.Getenv("NPANEL_BENCH_CERTS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("NPANEL_BENCH_CERTS=%q: want a positive count", v)
		}
	}
	const nodes = 10
	const lifetime = 90 * time.Second
	for b.Loop() {
		s := testenv.StartServer(b, func(c *controlplane.Config) {
			c.ACME = controlplane.ACMEConfig{DirectoryURL: "https://acme.test/dir", Email: "ops@example.net",
				RenewSweep: time.Second, RetryBase: time.Second, RetryMax: 5 * time.Second,
				OrderBurst: n, OrderEvery: time.Millisecond}
		})
		var fakes []*fakeCertNode
		for i := range nodes {
			name := fmt.Sprintf("n%d", i)
			s.FakeNode(b, name, nil, n/nodes+n/20+10, int64(n)*100)
			if i >= 2 {
				if _, err := s.Admin.UpdateNode(testenv.Context(b), name, client.NodeUpdate{Roles: []string{"WEB"}}); err != nil {
					b.Fatal(err)
				}
			}
			f := startFakeCertNode(b, s, name)
			f.lifetime.Store(int64(lifetime))
			fakes = append(fakes, f)
		}
		ctx := context.Background()
		if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 10, BandwidthMB: 1000, Domains: 1, PHPVersions: []string{"8.2"}}); err != nil {
			b.Fatal(err)
		}

		start := time.Now()
		ids := make(chan int)
		var wg sync.WaitGroup
		errs := make(chan error, 1)
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range ids {
					in := client.CreateAccountInput{Username: fmt.Sprintf("rw%05d", i), Domain: fmt.Sprintf("rw%05d.example.com", i), Plan: "web"}
					if _, err := s.Admin.CreateAccount(ctx, in); err != nil {
						select {
						case errs <- err:
						default:
						}
						return
					}
				}
			}()
		}
		for i := range n {
			ids <- i
		}
		close(ids)
		wg.Wait()
		select {
		case err := <-errs:
			b.Fatal(err)
		default:
		}

		// first[id] is a certificate's first serial and expiry; renewed
		// is when its renewal was issued (the new certificate's
		// NotBefore, which the node sets to the second it issued it).
		type served struct {
			serial   string
			notAfter time.Time
		}
		first := map[string]served{}
		renewed := map[string]time.Time{}
		var issued time.Duration
		minLead := lifetime
		expired := map[string]bool{}
		// Listing 10,000 records is work for the server too: once a second.
		done := func() bool {
			certs, err := s.Store().ListCertificates(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for _, c := range certs {
				st := c.Status
				if st.State == store.CertExpired {
					expired[c.ID] = true
				}
				if st.Serial == "" {
					continue
				}
				f, ok := first[c.ID]
				switch {
				case !ok:
					first[c.ID] = served{st.Serial, st.NotAfter}
					issued = max(issued, st.NotBefore.Sub(start))
				case st.Serial != f.serial && renewed[c.ID].IsZero():
					renewed[c.ID] = st.NotBefore
					minLead = min(minLead, f.notAfter.Sub(st.NotBefore))
				}
			}
			return len(renewed) == n
		}
		for deadline := time.Now().Add(10 * time.Minute); !done(); time.Sleep(time.Second) {
			if time.Now().After(deadline) {
				b.Fatalf("after 10 minutes: %d of %d certificates issued, %d renewed", len(first), n, len(renewed))
			}
		}

		orders := 0
		for _, f := range fakes {
			orders += len(f.tasks("issue_certificate"))
		}
		times := make([]time.Time, 0, len(renewed))
		for _, at := range renewed {
			times = append(times, at)
		}
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		perSecond := map[int64]int{}
		maxPerSecond := 0
		for _, at := range times {
			k := at.Unix()
			perSecond[k]++
			maxPerSecond = max(maxPerSecond, perSecond[k])
		}
		b.ReportMetric(issued.Seconds(), "issue-s")
		b.ReportMetric(times[len(times)-1].Sub(times[0]).Seconds(), "renew-s")
		b.ReportMetric(float64(orders), "orders")
		b.ReportMetric(float64(maxPerSecond), "max-renewals/s")
		b.ReportMetric(minLead.Seconds(), "min-lead-s")
		b.ReportMetric(float64(len(expired)), "expired")
		b.ReportMetric(float64(n), "certificates")
	}
}
