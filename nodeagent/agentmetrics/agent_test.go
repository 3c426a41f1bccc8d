package agentmetrics_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/agentmetrics"
	"github.com/npanel/npanel/pki"
)

// TestAgentMetrics runs a real agent with the web module (nginx and
// PHP-FPM supervised) against a test server and scrapes its /metrics:
// refused without a token, served with a token the agent was given and
// with the cluster certificate, and, after a restart of the agent, still
// served with the token persisted in its data dir.
func TestAgentMetrics(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/nginx")
	testenv.RequireDaemon(t, "/usr/sbin/php-fpm8.2")
	if os.Geteuid() != 0 {
		t.Skip("the web module's daemons run as www-data: needs root")
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "web-1", testenv.WithModules(t, "web"))
	addr := ag.MetricsAddr()
	if addr == "" || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("metrics address %q", addr)
	}
	// A task, so that the task families have series.
	if _, err := s.Admin.Ping(testenv.Context(t), "web-1", "x", 10); err != nil {
		t.Fatal(err)
	}

	hc := &http.Client{Timeout: 10 * time.Second}
	scrape := func(c *http.Client, url, token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	url := "http://" + addr + "/metrics"
	if code, _ := scrape(hc, url, ""); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := scrape(hc, url, "nps_test"); code != 401 {
		t.Fatalf("token not yet given: %d", code)
	}
	sum := sha256.Sum256([]byte("nps_test"))
	if err := ag.SetScrapeAuth([][]byte{sum[:]}); err != nil {
		t.Fatal(err)
	}
	var body string
	testenv.WaitFor(t, 20*time.Second, "nginx up in /metrics", func() bool {
		var code int
		code, body = scrape(hc, url, "nps_test")
		if code != 200 {
			t.Fatalf("right token: %d %s", code, body)
		}
		return strings.Contains(body, `npanel_service_up{service="nginx"} 1`)
	})
	for _, want := range []string{
		`npanel_node_cpus `, `npanel_node_memory_available_bytes `, `npanel_node_filesystem_avail_bytes{`,
		`npanel_node_cpu_seconds_total{mode="idle"}`, `npanel_service_info{service="nginx",version="`,
		`npanel_agent_connected 1`, `npanel_agent_tasks_in_flight 0`,
		`npanel_agent_task_apply_seconds_count{action="ping",status="succeeded"} 1`,
		`npanel_agent_tasks_applied_total{action="ping",status="succeeded"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	start := time.Now()
	for range 10 {
		scrape(hc, url, "nps_test")
	}
	t.Logf("scrape of a web node: %v on average, %d bytes", time.Since(start)/10, len(body))

	// `promtool check metrics` on the real output, where Debian's
	// prometheus package is installed (make deps installs it).
	if _, err := os.Stat("/usr/bin/promtool"); err == nil {
		cmd := exec.Command("/usr/bin/promtool", "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	} else if os.Getenv("CI") == "true" {
		t.Error("promtool is not installed")
	}

	// TLS on the same port with the node's own certificate as the client's:
	// a certificate of the cluster CA needs no token.
	dir := ag.Config.DataDir
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(dir, "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pki.ParseCertsPEM(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(roots[0])
	tc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{cert},
		// A node certificate names the node in a URI SAN, not a host name:
		// verify the chain against the cluster root, not the name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}}}
	if code, body := scrape(tc, "https://"+addr+"/metrics", ""); code != 200 || !strings.Contains(body, "npanel_node_cpus") {
		t.Fatalf("TLS with the cluster certificate: %d", code)
	}

	// The token set survives a restart: the test server sends no
	// ScrapeAuth, so only the persisted file can admit the token now.
	fi, err := os.Stat(filepath.Join(dir, agentmetrics.ScrapeAuthFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("persisted scrape tokens: %v, %v", fi, err)
	}
	ag.Stop()
	ag.Start()
	testenv.WaitFor(t, 20*time.Second, "metrics listener back", func() bool { return ag.MetricsAddr() != "" })
	if code, _ := scrape(hc, "http://"+ag.MetricsAddr()+"/metrics", "nps_test"); code != 200 {
		t.Fatalf("token after restart: %d", code)
	}
}
