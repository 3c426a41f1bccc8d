package nodeagent

import (
	"crypto/sha256"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/nodeagent/agentmetrics"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestScrapeAuthOverStream: the agent reports where /metrics listens in its
// Hello, and admits the scrape tokens the gateway sends in ScrapeAuth,
// which it persists (digests only) for its next start.
func TestScrapeAuthOverStream(t *testing.T) {
	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	token, _, err := ca.NewJoinToken("node-1", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log, _ := newLogger(t)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: dir, Logger: log, MetricsListen: "127.0.0.1:0"})
	a.waitReady(t)
	s := gw.nextStream(t)
	addr := a.MetricsAddr()
	if addr == "" || s.hello.GetMetricsAddress() != addr {
		t.Fatalf("Hello.metrics_address %q, agent listens on %q", s.hello.GetMetricsAddress(), addr)
	}
	scrape := func(tok string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := scrape("nps_one"); code != http.StatusUnauthorized {
		t.Fatalf("before ScrapeAuth: %d", code)
	}
	sum := sha256.Sum256([]byte("nps_one"))
	s.msgs <- &agentpb.ServerMessage{Msg: &agentpb.ServerMessage_ScrapeAuth{ScrapeAuth: &agentpb.ScrapeAuth{TokenSha256: [][]byte{sum[:]}}}}
	waitFor(t, "token admitted", func() bool { return scrape("nps_one") == http.StatusOK })
	if code := scrape("nps_two"); code != http.StatusUnauthorized {
		t.Fatalf("other token: %d", code)
	}
	if fi, err := os.Stat(filepath.Join(dir, agentmetrics.ScrapeAuthFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("persisted set: %v, %v", fi, err)
	}
	// An empty set revokes every token.
	s.msgs <- &agentpb.ServerMessage{Msg: &agentpb.ServerMessage_ScrapeAuth{ScrapeAuth: &agentpb.ScrapeAuth{}}}
	waitFor(t, "token revoked", func() bool { return scrape("nps_one") == http.StatusUnauthorized })
}

// TestMailDeliveriesConsumer: with the mail module and /metrics, the agent
// has a log consumer for the tail engine, and its family is registered.
func TestMailDeliveriesConsumer(t *testing.T) {
	ca := newTestCA(t, 0)
	token, _, err := ca.NewJoinToken("node-1", nil, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Servers: []string{"127.0.0.1:1"}, JoinToken: token, DataDir: t.TempDir(), Platform: "debian12", Prefix: t.TempDir()}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(a.metricsLogConsumers()); n != 0 {
		t.Fatalf("%d consumers without the mail module", n)
	}
	cfg.DataDir, cfg.Modules, cfg.MetricsListen = t.TempDir(), []actions.Module{mail.NewModule()}, "127.0.0.1:0"
	if a, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if n := len(a.metricsLogConsumers()); n != 1 {
		t.Fatalf("%d consumers with the mail module", n)
	}
	if n, err := testutil.GatherAndCount(a.Registry(), "npanel_mail_deliveries_total"); err != nil || n != 4 {
		t.Fatalf("npanel_mail_deliveries_total: %d series, %v", n, err)
	}
}
