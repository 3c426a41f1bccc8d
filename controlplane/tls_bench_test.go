package controlplane_test

import (
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/testenv"
)

// BenchmarkCertificateThroughAPI times certificates end to end on a real
// node against a real Pebble, through GraphQL, the controller, the task
// and the agent's ACME order, until the node's nginx serves the
// certificate:
//
//   - NewSiteHTTP01: addDomain to the site's automatic certificate
//     (HTTP-01 through nginx) served;
//   - RequestHTTP01: requestCertificate of a site already served (HTTP-01
//     through nginx), to the new certificate served;
//   - RequestDNS01: the same for a wildcard (DNS-01 through the node's
//     PowerDNS).
//
// ns/op is the mean; p50-ms and p99-ms the spread. Each order is of a new
// site: the API's order gates allow a certificate few orders, and rightly.
// Orders are not paced here (TestCertOrderPacing covers the pacing). The
// agent's order alone, and bare lego beside it, are in
// nodeagent/actions/tls (BenchmarkIssue*, BenchmarkBareLego*).
func BenchmarkCertificateThroughAPI(b *testing.B) {
	n := startTLSNode(b, 0, false, func(c *controlplane.ACMEConfig) { c.OrderBurst, c.OrderEvery = 1000, time.Millisecond })
	admin := n.s.Admin.Token()
	user := testUsername(b)
	account, _ := n.accountWith(b, user, 200)
	root, err := n.pebble.Root(testenv.Context(b))
	roots := x509.NewCertPool()
	if err != nil || !roots.AppendCertsFromPEM(root) {
		b.Fatalf("Pebble's root: %v", err)
	}
	sites := 0
	// newSite adds a domain to the account and returns it with the time
	// its automatic certificate took to be served.
	newSite := func(b *testing.B) (string, time.Duration) {
		sites++
		domain := fmt.Sprintf("s%d-%s.example.com", sites, user)
		t0 := time.Now()
		q := `mutation($a: ID!, $d: String!) { addDomain(account: $a, domain: $d) { name } }`
		if err := n.gql(b, admin, q, map[string]any{"a": account, "d": domain}, nil); err != nil {
			b.Fatal(err)
		}
		c := n.waitCert(b, admin, domain, time.Minute, func(c *certView) bool { return c.Status == "ISSUED" })
		n.waitServed(b, domain, c.Serial, roots)
		return domain, time.Since(t0)
	}
	report := func(b *testing.B, took []time.Duration) {
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
	}

	b.Run("NewSiteHTTP01", func(b *testing.B) {
		var took []time.Duration
		for b.Loop() {
			_, d := newSite(b)
			took = append(took, d)
		}
		report(b, took)
	})
	// request times requestCertificate of a site already served, with the
	// given challenge and names, until nginx serves the new certificate.
	request := func(challenge string, sans func(domain string) string) func(b *testing.B) {
		return func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				b.StopTimer()
				domain, _ := newSite(b)
				prev := n.certificate(b, admin, domain)
				q := `mutation($d: String!) { requestCertificate(input: {domain: $d, sans: [` + sans(domain) + `], challenge: ` + challenge + `}) { id } }`
				var t0 time.Time
				for {
					// The API's gate lets a user order a burst of 5, then
					// one every 20 s: waited for off the clock.
					b.StartTimer()
					t0 = time.Now()
					err := n.gql(b, admin, q, map[string]any{"d": domain}, nil)
					if err == nil {
						break
					}
					b.StopTimer()
					if !strings.Contains(err.Error(), "too many certificate orders") {
						b.Fatal(err)
					}
					time.Sleep(time.Second)
				}
				c := n.waitCert(b, admin, domain, time.Minute, func(c *certView) bool { return c.Status == "ISSUED" && c.Serial != prev.Serial })
				n.waitServed(b, domain, c.Serial, roots)
				took = append(took, time.Since(t0))
			}
			report(b, took)
		}
	}
	b.Run("RequestHTTP01", request("HTTP01", func(d string) string { return `"www.` + d + `"` }))
	b.Run("RequestDNS01", request("DNS01", func(d string) string { return `"*.` + d + `"` }))
}
