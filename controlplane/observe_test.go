package controlplane_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// scrapeGet fetches path from the API with a bearer token ("" for none);
// cert is presented as a client certificate when not nil.
func scrapeDo(t *testing.T, s *testenv.Server, method, path, token string, body []byte, cert *tls.Certificate) (int, []byte) {
	t.Helper()
	tr := &http.Transport{}
	if s.ClientTLS != nil {
		cfg := s.ClientTLS.Clone()
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		tr.TLSClientConfig = cfg
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(method, s.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type sdGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// Prometheus' HTTP SD: a scrape token lists every agent that serves
// /metrics (with the node's address for an unspecified host) and every
// replica; no token, a wrong one or a deleted one is refused.
func TestPrometheusSD(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	s.FakeNode(t, "sd-a", map[string]string{"zone": "eu", "rack-no": "3"}, 10, 1000)
	s.FakeNode(t, "sd-b", nil, 10, 1000)
	if err := s.Store().UpdateNodeState(ctx, "sd-a", func(st *store.NodeState) bool { st.MetricsAddr = "[::]:9469"; return true }); err != nil {
		t.Fatal(err)
	}
	if code, _ := scrapeDo(t, s, "GET", "/v1/prometheus/sd", "", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("no token: %d", code)
	}
	if code, _ := scrapeDo(t, s, "GET", "/v1/prometheus/sd", "nps_not-a-token", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d", code)
	}
	tok, st, err := s.Admin.CreateScrapeToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "nps_") {
		t.Errorf("token %q", tok)
	}
	var groups []sdGroup
	testenv.WaitFor(t, 10*time.Second, "SD with the new token", func() bool {
		code, b := scrapeDo(t, s, "GET", "/v1/prometheus/sd", tok, nil, nil)
		if code != http.StatusOK {
			return false
		}
		if err := json.Unmarshal(b, &groups); err != nil {
			t.Fatalf("SD answer %s: %v", b, err)
		}
		return true
	})
	if len(groups) != 2 {
		t.Fatalf("groups: %+v", groups)
	}
	a := groups[0]
	if !slices.Equal(a.Targets, []string{"127.0.0.1:9469"}) || a.Labels["node"] != "sd-a" || a.Labels["roles"] != "db,dns,mail,web" ||
		a.Labels["label_zone"] != "eu" || a.Labels["label_rack_no"] != "3" || a.Labels["service"] != "agent" {
		t.Errorf("agent group: %+v", a)
	}
	r := groups[1]
	if !slices.Equal(r.Targets, []string{s.APIAddr()}) || r.Labels["service"] != "server" || r.Labels["server"] != s.ID() {
		t.Errorf("server group: %+v", r)
	}

	// The server's own /metrics takes the scrape token too.
	testenv.WaitFor(t, 10*time.Second, "server metrics", func() bool {
		code, b := scrapeDo(t, s, "GET", "/metrics", tok, nil, nil)
		m := string(b)
		return code == http.StatusOK && strings.Contains(m, "npanel_scrape_tokens 1") &&
			strings.Contains(m, `npanel_node_up{node="sd-a"} 1`) && strings.Contains(m, "npanel_leader_changes_total 1")
	})

	if err := s.Admin.DeleteScrapeToken(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "deleted token refused", func() bool {
		code, _ := scrapeDo(t, s, "GET", "/v1/prometheus/sd", tok, nil, nil)
		return code == http.StatusUnauthorized
	})
	if code, _ := scrapeDo(t, s, "GET", "/metrics", tok, nil, nil); code != http.StatusUnauthorized {
		t.Errorf("metrics with a deleted token: %d", code)
	}
}

// Over HTTPS a node's certificate admits the SD without a token.
func TestPrometheusSDNodeCertificate(t *testing.T) {
	s := testenv.StartServer(t, testenv.WithAPITLS())
	a := s.StartAgent(t, "sd-cert")
	cert := testenv.AgentCert(t, a)
	code, b := scrapeDo(t, s, "GET", "/v1/prometheus/sd", "", nil, cert)
	if code != http.StatusOK || !strings.HasPrefix(string(b), "[") {
		t.Fatalf("with a node certificate: %d %s", code, b)
	}
	if code, _ := scrapeDo(t, s, "GET", "/v1/prometheus/sd", "", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("without: %d", code)
	}
}

// Alertmanager's notifications become audit events.
func TestAlertsWebhook(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	tok, _, err := s.Admin.CreateScrapeToken(ctx, "alertmanager")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(`{"version":"4","status":"firing","receiver":"npanel","alerts":[
	 {"status":"firing","labels":{"alertname":"NodeDown","severity":"critical","node":"web-1"},"annotations":{"summary":"web-1 is down"},
	  "startsAt":"2026-01-02T03:04:05Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"abc"},
	 {"status":"resolved","labels":{"alertname":"DiskFull","node":"web-2"},"annotations":{},"startsAt":"2026-01-02T03:04:05Z","endsAt":"2026-01-02T04:00:00Z","fingerprint":"def"}]}`)
	if code, _ := scrapeDo(t, s, "POST", "/v1/alerts", "", msg, nil); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d", code)
	}
	testenv.WaitFor(t, 10*time.Second, "alerts accepted", func() bool {
		code, _ := scrapeDo(t, s, "POST", "/v1/alerts", tok, msg, nil)
		return code == http.StatusNoContent
	})
	evs, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{Action: "alert"}, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]store.AuditEvent{}
	for _, e := range evs {
		byName[e.Target] = e
	}
	if e := byName["NodeDown"]; e.Actor != "alertmanager" || e.Detail["status"] != "firing" || e.Detail["severity"] != "critical" ||
		e.Detail["summary"] != "web-1 is down" || e.Detail["node"] != "web-1" {
		t.Errorf("NodeDown: %+v", e)
	}
	if e := byName["DiskFull"]; e.Detail["status"] != "resolved" || e.Detail["node"] != "web-2" {
		t.Errorf("DiskFull: %+v", e)
	}
	code, b := scrapeDo(t, s, "POST", "/v1/alerts", tok, []byte(`{"alerts":[`), nil)
	if code != http.StatusBadRequest || !strings.Contains(string(b), "Alertmanager") {
		t.Errorf("malformed: %d %s", code, b)
	}
	code, _ = scrapeDo(t, s, "POST", "/v1/alerts", tok, bytes.Repeat([]byte(" "), 2<<20), nil)
	if code != http.StatusRequestEntityTooLarge {
		t.Errorf("2 MiB: %d", code)
	}
	// One notification writes a bounded number of audit events, and an
	// alert without a name writes none of its notification's.
	many := `{"version":"4","alerts":[` + strings.TrimSuffix(strings.Repeat(`{"labels":{"alertname":"X"}},`, 101), ",") + `]}`
	if code, b := scrapeDo(t, s, "POST", "/v1/alerts", tok, []byte(many), nil); code != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "max_alerts") {
		t.Errorf("101 alerts: %d %s", code, b)
	}
	if code, b := scrapeDo(t, s, "POST", "/v1/alerts", tok, []byte(`{"version":"4","alerts":[{"labels":{"alertname":"Y"}},{}]}`), nil); code != http.StatusBadRequest || !strings.Contains(string(b), "alertname") {
		t.Errorf("an alert without a name: %d %s", code, b)
	}
	if evs, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{Action: "alert"}, "", 10); err != nil || len(evs) != 2 {
		t.Errorf("alert events after the refused notifications: %d %v, want 2", len(evs), err)
	}
	_, m := scrapeDo(t, s, "GET", "/metrics", tok, nil, nil)
	if !strings.Contains(string(m), `npanel_alerts_received_total{status="firing"} 1`) || !strings.Contains(string(m), `npanel_alerts_received_total{status="resolved"} 1`) {
		t.Errorf("alerts counter missing")
	}
}

// Every agent stream gets the scrape tokens' digests after the Welcome,
// and again whenever they change.
func TestScrapeAuthPush(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	a := s.StartAgent(t, "push-a")
	cert := testenv.AgentCert(t, a)
	a.Stop()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := gatewayClient(t, s, cert).Connect(sctx)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Hello{Hello: &agentpb.Hello{
		AgentVersion: "test", Facts: &agentpb.NodeFacts{Cpus: 1}, Protocol: agentpb.Protocol, MetricsAddress: "0.0.0.0:19469"}}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := st.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", m, err)
	}
	// The agent's metrics address is kept for the SD.
	if ns, _, err := s.Store().GetNodeState(ctx, "push-a"); err != nil || ns.MetricsAddr != "0.0.0.0:19469" {
		t.Errorf("metrics address: %+v %v", ns, err)
	}
	next := func() [][]byte {
		t.Helper()
		for {
			m, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if sa := m.GetScrapeAuth(); sa != nil {
				return sa.GetTokenSha256()
			}
		}
	}
	if got := next(); len(got) != 0 {
		t.Fatalf("first set: %d digests, want none", len(got))
	}
	tok, t1, err := s.Admin.CreateScrapeToken(ctx, "one")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(tok))
	if got := next(); len(got) != 1 || !bytes.Equal(got[0], sum[:]) {
		t.Fatalf("after create: %x", got)
	}
	if _, _, err := s.Admin.CreateScrapeToken(ctx, "two"); err != nil {
		t.Fatal(err)
	}
	if got := next(); len(got) != 2 {
		t.Fatalf("after the second: %d digests", len(got))
	}
	if err := s.Admin.DeleteScrapeToken(ctx, t1.ID); err != nil {
		t.Fatal(err)
	}
	if got := next(); len(got) != 1 || bytes.Equal(got[0], sum[:]) {
		t.Fatalf("after delete: %x", got)
	}
	// Agents serve /metrics only: a token without METRICS never reaches them.
	alerts, _, err := s.Admin.CreateScrapeToken(ctx, "alerts-only", "ALERTS", "DISCOVERY")
	if err != nil {
		t.Fatal(err)
	}
	sum = sha256.Sum256([]byte(alerts))
	if got := next(); len(got) != 1 || bytes.Equal(got[0], sum[:]) {
		t.Fatalf("after an ALERTS,DISCOVERY token: %x", got)
	}
}

// Each endpoint takes a scrape token only with its scope: the SD
// DISCOVERY, the server's and the agents' /metrics METRICS, the alerts
// webhook ALERTS. A token without the scope is 403 on the server (and
// audited), unknown to the agents (401); a token made without scopes
// opens all three.
func TestScrapeTokenScopes(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	a := s.StartAgent(t, "scope-a")
	tokens := map[string]string{}
	for name, scopes := range map[string][]string{"discovery": {"DISCOVERY"}, "metrics": {"METRICS"}, "alerts": {"ALERTS"}, "all": nil} {
		tok, _, err := s.Admin.CreateScrapeToken(ctx, name, scopes...)
		if err != nil {
			t.Fatal(err)
		}
		tokens[name] = tok
	}
	agentScrape := func(tok string) int {
		req, _ := http.NewRequest("GET", "http://"+a.MetricsAddr()+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// The replica and the agent follow the tokens by watch.
	testenv.WaitFor(t, 10*time.Second, "tokens known", func() bool {
		code, _ := scrapeDo(t, s, "GET", "/v1/prometheus/sd", tokens["all"], nil, nil)
		return code == http.StatusOK && agentScrape(tokens["all"]) == http.StatusOK
	})
	alert := []byte(`{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"ScopeTest"}}]}`)
	for _, tc := range []struct {
		endpoint string
		do       func(tok string) int
		want     map[string]int
	}{
		{"SD", func(tok string) int { c, _ := scrapeDo(t, s, "GET", "/v1/prometheus/sd", tok, nil, nil); return c },
			map[string]int{"discovery": 200, "metrics": 403, "alerts": 403, "all": 200}},
		{"server /metrics", func(tok string) int { c, _ := scrapeDo(t, s, "GET", "/metrics", tok, nil, nil); return c },
			map[string]int{"discovery": 403, "metrics": 200, "alerts": 403, "all": 200}},
		{"/v1/alerts", func(tok string) int { c, _ := scrapeDo(t, s, "POST", "/v1/alerts", tok, alert, nil); return c },
			map[string]int{"discovery": 403, "metrics": 403, "alerts": 204, "all": 204}},
		{"agent /metrics", agentScrape,
			map[string]int{"discovery": 401, "metrics": 200, "alerts": 401, "all": 200}},
	} {
		for name, want := range tc.want {
			if got := tc.do(tokens[name]); got != want {
				t.Errorf("%s with the %s token: %d, want %d", tc.endpoint, name, got, want)
			}
		}
	}
	// The two alerts posted with ALERTS tokens are recorded, no others.
	if evs, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{Action: "alert"}, "", 10); err != nil || len(evs) != 2 {
		t.Errorf("alert events: %d %v, want 2", len(evs), err)
	}
	evs, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{Action: "badToken"}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	// Refusals are audited 5 per client and action, then one a minute
	// (store.RefusalAudit): which of the test's refusals are is timing,
	// that one of the missing-scope kind is is not.
	refused := false
	for _, e := range evs {
		refused = refused || strings.Contains(e.Result, "scrape token lacks the ")
	}
	if !refused {
		t.Errorf("no refusal for a missing scope audited: %+v", evs)
	}
	if _, m := scrapeDo(t, s, "GET", "/metrics", tokens["metrics"], nil, nil); !strings.Contains(string(m), "npanel_scrape_tokens 4") {
		t.Errorf("npanel_scrape_tokens is not 4")
	}
}

// npanel_node_up is 1 for a READY node only: a node the leader turns
// SUSPECT (here because a queued task cannot be sent, while its lease and
// gossip are fine) reads 0, and 1 again once it is READY.
func TestNodeUpOnlyWhenReady(t *testing.T) {
	s := testenv.StartServer(t, func(c *controlplane.Config) { c.TaskStallAfter = time.Second })
	s.StartAgent(t, "up-a")
	ctx := testenv.Context(t)
	state := func() (store.NodeStatus, string) {
		t.Helper()
		n, err := s.Store().GetNode(ctx, "up-a")
		if err != nil {
			t.Fatal(err)
		}
		_, m := scrapeDo(t, s, "GET", "/metrics", s.Admin.Token(), nil, nil)
		up := "absent"
		for l := range strings.Lines(string(m)) {
			if v, ok := strings.CutPrefix(l, `npanel_node_up{node="up-a"} `); ok {
				up = strings.TrimSpace(v)
			}
		}
		return n.State.Status, up
	}
	wait := func(want store.NodeStatus, up string) {
		t.Helper()
		var st store.NodeStatus
		var got string
		testenv.WaitFor(t, 30*time.Second, fmt.Sprintf("up-a %s with node_up %s", want, up), func() bool {
			st, got = state()
			return st == want && got == up
		})
	}
	wait(store.NodeReady, "1")

	// Written raw: the store itself never writes what it cannot decode.
	key := "/npanel/queue/up-a/" + ulid.Make().String()
	if _, err := s.RawEtcd(t).Put(ctx, key, "\xff not a task"); err != nil {
		t.Fatal(err)
	}
	wait(store.NodeSuspect, "0")
	if _, err := s.RawEtcd(t).Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	wait(store.NodeReady, "1")
}
