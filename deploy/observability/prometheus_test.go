package observability

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const prometheusBin = "/usr/bin/prometheus"

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// certPEM encodes a certificate as a PEM file.
func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// requireBearer answers 401 unless the request carries the token.
func requireBearer(token string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

// TestPrometheusExample runs a real Prometheus on the example
// prometheus.yml, against a discovery endpoint that answers as the control
// plane does, and checks the series come out labelled as the rules and
// dashboards expect: the daemon's name in `service` (not exported_service),
// the SD labels node and roles, job npanel-agent / npanel-server.
// Only the SD URL, the token file and the intervals differ from the example.
func TestPrometheusExample(t *testing.T) {
	if _, err := os.Stat(prometheusBin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v (CI installs the prometheus package)", prometheusBin, err)
		}
		t.Skipf("%s not installed (apt-get install prometheus): %v", prometheusBin, err)
	}
	const token = "nps_exampletest"

	// The agent serves TLS with a certificate naming its address,
	// 127.0.0.1, as a node's does; its CA stands in for the cluster root,
	// so the scrape succeeds only if Prometheus verifies with ca_file.
	agent := httptest.NewTLSServer(requireBearer(token, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, "# TYPE npanel_service_up gauge\nnpanel_service_up{service=\"nginx\"} 1\n"+
			"# TYPE npanel_node_cpus gauge\nnpanel_node_cpus 2\n")
	}))
	agent.Config.ErrorLog = log.New(io.Discard, "", 0)
	t.Cleanup(agent.Close)
	// The server job scrapes over TLS with the system's roots, which do not
	// hold httptest's CA: its scrape fails, and only its labels are checked.
	server := httptest.NewUnstartedServer(http.NotFoundHandler())
	server.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	server.StartTLS()
	t.Cleanup(server.Close)
	sd := httptest.NewServer(requireBearer(token, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/prometheus/sd" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode([]map[string]any{
			{"targets": []string{strings.TrimPrefix(agent.URL, "https://")},
				"labels": map[string]string{"node": "n1", "roles": "web", "label_zone": "eu-1", "service": "agent"}},
			{"targets": []string{strings.TrimPrefix(server.URL, "https://")},
				"labels": map[string]string{"service": "server", "server": "s1"}},
		})
	}))
	t.Cleanup(sd.Close)

	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(prometheusDir, "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(filepath.Join(prometheusDir, "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(cfg)
	for _, r := range []struct{ old, new string }{
		{tokenPath, filepath.Join(dir, "token")},
		{rootPath, filepath.Join(dir, "root.crt")},
		{"https://npanel.example.com/v1/prometheus/sd", sd.URL + "/v1/prometheus/sd"},
		{"scrape_interval: 30s", "scrape_interval: 1s"},
		{"scrape_timeout: 10s", "scrape_timeout: 1s"},
		{"refresh_interval: 1m", "refresh_interval: 1s"},
	} {
		if !strings.Contains(text, r.old) {
			t.Fatalf("prometheus.yml no longer contains %q: update this test", r.old)
		}
		text = strings.ReplaceAll(text, r.old, r.new)
	}
	for name, data := range map[string][]byte{
		"token": []byte(token + "\n"), "rules.yml": rules, "prometheus.yml": []byte(text),
		"root.crt": certPEM(agent.Certificate()),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// A port picked by the kernel and released for Prometheus: another
	// process taking it in between only fails this test.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs lockedBuffer
	cmd := exec.Command(prometheusBin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})

	// query returns the label sets of an instant query's result.
	query := func(q string) ([]map[string]string, error) {
		resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var body struct {
			Status string
			Data   struct {
				Result []struct {
					Metric map[string]string
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return nil, err
		}
		if body.Status != "success" {
			return nil, fmt.Errorf("query %s: status %q", q, body.Status)
		}
		var out []map[string]string
		for _, r := range body.Data.Result {
			out = append(out, r.Metric)
		}
		return out, nil
	}
	// waitFor polls q until it returns one series; bounded, the scrape
	// interval being 1 s.
	waitFor := func(q string) map[string]string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got, err := query(q)
			if err == nil && len(got) == 1 {
				return got[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: got %v, %v after 30 s; prometheus logs:\n%s", q, got, err, logs.String())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	svc := waitFor(`npanel_service_up`)
	for k, v := range map[string]string{"service": "nginx", "node": "n1", "roles": "web", "label_zone": "eu-1", "job": "npanel-agent"} {
		if svc[k] != v {
			t.Errorf("npanel_service_up: %s=%q, want %q (labels %v)", k, svc[k], v, svc)
		}
	}
	if _, ok := svc["exported_service"]; ok {
		t.Errorf("npanel_service_up has exported_service: the SD label service collided with the agent's (labels %v)", svc)
	}
	if cpus := waitFor(`npanel_node_cpus`); cpus["service"] != "" {
		t.Errorf("npanel_node_cpus: service=%q, want none (the SD label is dropped)", cpus["service"])
	}
	if up := waitFor(`up{job="npanel-agent"} == 1`); up["node"] != "n1" {
		t.Errorf(`up{job="npanel-agent"}: labels %v, want node n1`, up)
	}
	srv := waitFor(`up{job="npanel-server"}`)
	if srv["server"] != "s1" || srv["service"] != "" {
		t.Errorf(`up{job="npanel-server"}: labels %v, want server s1 and no service`, srv)
	}
}
