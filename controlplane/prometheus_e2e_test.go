package controlplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// prometheusBin is Debian's prometheus (make deps).
const prometheusBin = "/usr/bin/prometheus"

// startPrometheus runs a Prometheus with config; it returns its base URL.
func startPrometheus(t *testing.T, config string) string {
	t.Helper()
	if _, err := os.Stat(prometheusBin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prometheus is not installed (make deps)")
		}
		t.Skip("prometheus is not installed (make deps)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prometheusBin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	log, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	base := "http://" + addr
	testenv.WaitFor(t, 30*time.Second, "prometheus ready", func() bool {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return base
}

func promGet(t *testing.T, base, path string, out any) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v: %s", path, err, b)
	}
}

// A real Prometheus discovers the cluster through /v1/prometheus/sd with
// a scrape token, keeps the nodes' labels, and scrapes the server's
// /metrics with the same token: npanel_node_up answers a PromQL query.
func TestPrometheusDiscoversCluster(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	s.FakeNode(t, "prom-a", map[string]string{"zone": "eu"}, 10, 1000)
	// An agent that reported a metrics address nobody listens on: it is
	// discovered, and down.
	dead := testenv.FreeAddr(t)
	if err := s.Store().UpdateNodeState(ctx, "prom-a", func(st *store.NodeState) bool { st.MetricsAddr = dead; return true }); err != nil {
		t.Fatal(err)
	}
	tok, _, err := s.Admin.CreateScrapeToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	sdURL := strings.Replace(s.URL(), "https://", "http://", 1) + "/v1/prometheus/sd"
	base := startPrometheus(t, fmt.Sprintf(`
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: npanel
    authorization:
      credentials_file: %[1]s
    http_sd_configs:
      - url: %[2]s
        refresh_interval: 1s
        authorization:
          credentials_file: %[1]s
`, tokFile, sdURL))

	type target struct {
		Labels    map[string]string `json:"labels"`
		Health    string            `json:"health"`
		LastError string            `json:"lastError"`
	}
	var targets struct {
		Data struct {
			ActiveTargets []target `json:"activeTargets"`
		} `json:"data"`
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("targets: %+v", targets.Data.ActiveTargets)
			evs, _, _, _ := s.Store().ListAudit(context.Background(), store.AuditFilter{Action: "badToken"}, "", 5)
			t.Logf("refusals: %+v", evs)
			code, _ := scrapeDo(t, s, "GET", "/v1/prometheus/sd", tok, nil, nil)
			t.Logf("SD from the test: %d", code)
		}
	})
	testenv.WaitFor(t, 30*time.Second, "both targets scraped", func() bool {
		promGet(t, base, "/api/v1/targets", &targets)
		var agent, server bool
		for _, tg := range targets.Data.ActiveTargets {
			switch tg.Labels["service"] {
			case "agent":
				agent = tg.Labels["node"] == "prom-a" && tg.Labels["label_zone"] == "eu" && tg.Labels["instance"] == dead && tg.Health == "down"
			case "server":
				server = tg.Labels["server"] == s.ID() && tg.Health == "up"
			}
		}
		return agent && server
	})
	var q struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	testenv.WaitFor(t, 30*time.Second, "npanel_node_up of prom-a", func() bool {
		promGet(t, base, "/api/v1/query?query="+url.QueryEscape(`npanel_node_up{node="prom-a",service="server"}`), &q)
		return len(q.Data.Result) == 1 && q.Data.Result[0].Value[1] == "1"
	})
}
