package controlplane_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// A real Prometheus finds two real agents through the server's discovery,
// scrapes them with a scrape token, and PromQL shows the server's view of
// the nodes and a site's request counter moving after requests were sent
// to its vhost.
func TestPrometheusScrapesAgents(t *testing.T) {
	testenv.RequireDaemon(t, prometheusBin)
	s, _, httpAddr := startWebNode(t)
	s.StartAgent(t, "web-2", testenv.WithModules(t, "web"))
	testenv.WaitFor(t, 10*time.Second, "web-2 READY", func() bool { return nodeStatus(t, s, "web-2") == "READY" })
	ctx := testenv.Context(t)

	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testUsername(t)
	domain := user + ".example.com"
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: "web", Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, domain, "ACTIVE")

	tok, _, err := s.Admin.CreateScrapeToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	sdURL := strings.Replace(s.URL(), "https://", "http://", 1) + "/v1/prometheus/sd"
	job := func(name, service string) string {
		return fmt.Sprintf(`
  - job_name: %[1]s
    authorization:
      credentials_file: %[3]s
    http_sd_configs:
      - url: %[4]s
        refresh_interval: 1s
        authorization:
          credentials_file: %[3]s
    relabel_configs:
      - source_labels: [service]
        regex: %[2]s
        action: keep
      # The agents' own service label (npanel_service_up{service}) keeps
      # its name: the discovery label has done its job.
      - regex: service
        action: labeldrop
`, name, service, tokFile, sdURL)
	}
	base := startPrometheus(t, `
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:`+job("npanel-agents", "agent")+job("npanel-servers", "server"))

	query := func(q string) []promSample {
		var out struct {
			Data struct {
				Result []promSample `json:"result"`
			} `json:"data"`
		}
		promGet(t, base, "/api/v1/query?query="+url.QueryEscape(q), &out)
		return out.Data.Result
	}
	nodes := func(q string) map[string]bool {
		m := map[string]bool{}
		for _, r := range query(q) {
			m[r.Metric["node"]] = true
		}
		return m
	}
	testenv.WaitFor(t, 60*time.Second, "both agents scraped", func() bool {
		up := nodes(`up{job="npanel-agents"} == 1`)
		return up["web-1"] && up["web-2"]
	})
	testenv.WaitFor(t, 30*time.Second, "npanel_node_up of both nodes", func() bool {
		up := nodes(`npanel_node_up == 1`)
		return up["web-1"] && up["web-2"]
	})
	if up := nodes(`npanel_service_up{service="nginx"} == 1`); !up["web-1"] || !up["web-2"] {
		t.Errorf("nginx up on %v, want web-1 and web-2", up)
	}

	requests := func(code string) float64 {
		var sum float64
		for _, r := range query(fmt.Sprintf(`npanel_domain_requests_total{domain=%q,code=%q}`, domain, code)) {
			if r.Metric["node"] != "web-1" || r.Metric["account"] != user {
				t.Errorf("series %v: want node web-1, account %s", r.Metric, user)
			}
			sum += r.value(t)
		}
		return sum
	}
	for range 20 {
		get(t, httpAddr, domain, "/")
	}
	testenv.WaitFor(t, 30*time.Second, "the site's 2xx counter in Prometheus", func() bool { return requests("2xx") >= 20 })
	for range 30 {
		get(t, httpAddr, domain, "/missing")
	}
	testenv.WaitFor(t, 30*time.Second, "its 4xx counter moved by 30", func() bool { return requests("4xx") >= 30 })
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (p promSample) value(t *testing.T) float64 {
	t.Helper()
	s, _ := p.Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("sample value %v: %v", p.Value, err)
	}
	return v
}
