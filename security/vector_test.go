// Package security holds nPanel's red-team suite: table-driven attack
// vectors against every service, each run against one real cluster (a
// server, an agent running nginx, PHP-FPM, PowerDNS, MariaDB and
// PostgreSQL, two resellers and their accounts) started once per test
// binary. See README.md for how to add a vector.
package security

import (
	"os"
	"strings"
	"testing"
)

// Services the suite covers. A later service (mail, TLS, backups) adds its
// name here and a table in a file of its own.
const (
	svcAPI     = "api"
	svcWeb     = "web"
	svcDNS     = "dns"
	svcDB      = "db"
	svcGateway = "gateway"
)

// minVectors is how many vectors each service must hold at least.
const minVectors = 50

// vector is one attack: what an attacker tries and what must happen
// instead. run performs the attack against the shared cluster and fails
// the test if the refusal does not hold; it must leave the cluster as it
// found it (or only add objects no other vector depends on).
type vector struct {
	name    string
	attempt string // what is attempted, in a sentence
	refusal string // the expected refusal: error code, HTTP status, or the effect that must not happen
	run     func(t *testing.T, c *cluster)
	// parallel vectors touch nothing another vector reads and mostly wait
	// (an expiring token): they run together, after their service's
	// serial vectors.
	parallel bool
}

// suite is one service's table.
type suite struct {
	service string
	vectors func() []vector
	// findings are vectors that fail on the current code: each is a new
	// finding, skipped with its reason so that it stays visible.
	findings func() []vector
}

// suites lists every service's table in the order they run.
func suites() []suite {
	return []suite{
		{svcAPI, apiVectors, apiFindings},
		{svcWeb, webVectors, webFindings},
		{svcDNS, dnsVectors, dnsFindings},
		{svcDB, dbVectors, dbFindings},
		{svcGateway, gatewayVectors, gatewayFindings},
	}
}

// TestVectorTables checks the tables themselves, without a cluster: every
// service has enough vectors, every vector says what it attempts and what
// refusal it expects, and names are unique (they are subtest names).
func TestVectorTables(t *testing.T) {
	for _, s := range suites() {
		vs := s.vectors()
		if len(vs) < minVectors {
			t.Errorf("%s: %d vectors, want at least %d", s.service, len(vs), minVectors)
		}
		seen := map[string]bool{}
		for _, v := range append(vs, s.findings()...) {
			if v.name == "" || strings.TrimSpace(v.attempt) == "" || strings.TrimSpace(v.refusal) == "" || v.run == nil {
				t.Errorf("%s: vector %q lacks a name, an attempt, a refusal or a run", s.service, v.name)
			}
			if seen[v.name] {
				t.Errorf("%s: vector name %q used twice", s.service, v.name)
			}
			seen[v.name] = true
		}
		t.Logf("%s: %d vectors (%d known findings)", s.service, len(vs), len(s.findings()))
	}
}

// TestSecurity runs every service's vectors against one cluster.
func TestSecurity(t *testing.T) {
	if testing.Short() {
		t.Skip("the security suite starts a cluster with real daemons")
	}
	c := startCluster(t)
	for _, s := range suites() {
		t.Run(s.service, func(t *testing.T) {
			for _, v := range s.vectors() {
				t.Run(v.name, func(t *testing.T) {
					if v.parallel {
						t.Parallel()
					}
					v.run(t, c)
				})
			}
			for _, v := range s.findings() {
				t.Run(v.name, func(t *testing.T) {
					// NPANEL_SECURITY_FINDINGS=1 runs them, to check a fix.
					if os.Getenv("NPANEL_SECURITY_FINDINGS") == "" {
						t.Skipf("finding: %s (expected: %s)", v.attempt, v.refusal)
					}
					v.run(t, c)
				})
			}
		})
	}
}
