package nodeagent

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"

	"github.com/npanel/npanel/nodeagent/logtail"
)

func TestLokiURLChecked(t *testing.T) {
	for _, u := range []string{"loki:3100", "ftp://loki/", "http://user:secret@loki:3100/loki/api/v1/push"} {
		_, err := New(Config{Servers: []string{"gw:1"}, DataDir: t.TempDir(), JoinToken: "x", LokiURL: u})
		if err == nil || !strings.Contains(err.Error(), "--loki-url") || strings.Contains(err.Error(), "secret") {
			t.Errorf("LokiURL %q: %v", strings.ReplaceAll(u, "secret", "***"), err)
		}
	}
}

// The agent's own records and a domain's access log reach Loki with their
// labels.
func TestAgentShipsLogsToLoki(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{}
	loki := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		raw, err := snappy.Decode(nil, body)
		var pr push.PushRequest
		if err == nil {
			err = pr.Unmarshal(raw)
		}
		if err != nil || r.Header.Get("X-Scope-OrgID") != "tenant" {
			http.Error(w, "bad push", http.StatusBadRequest)
			return
		}
		mu.Lock()
		for _, s := range pr.Streams {
			for _, e := range s.Entries {
				got[s.Labels] = append(got[s.Labels], e.Line)
			}
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer loki.Close()
	has := func(labels, part string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range got[labels] {
			if strings.Contains(l, part) {
				return true
			}
		}
		return false
	}

	ca := newTestCA(t, 0)
	gw := startGateway(t, ca)
	token, _, _ := ca.NewJoinToken("node-1", nil, time.Minute)
	prefix := t.TempDir()
	// The domain's log exists at the start (a scan finds a new one within
	// seconds): followed from its end.
	p := filepath.Join(prefix, "var/log/nginx/domains", "alice", "a.example.access.log")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("before the start\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := logtail.Handler(slog.NewTextHandler(io.Discard, nil), nil)
	a := startAgent(t, Config{Servers: []string{gw.addr}, JoinToken: token, DataDir: t.TempDir(), Facts: fixedFacts,
		Prefix: prefix, Logger: slog.New(h), AgentLog: h, LokiURL: loki.URL + "/loki/api/v1/push", LokiTenant: "tenant"})
	a.waitReady(t)
	waitFor(t, "the agent's records in Loki", func() bool {
		return has(`{level="info", node="node-1", service="agent"}`, "msg=enrolled")
	})
	if p != filepath.Join(a.profile.Web().DomainLogDir, "alice", "a.example.access.log") {
		t.Fatalf("domain logs are not in %s", filepath.Dir(filepath.Dir(p)))
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(`{"status":"200","uri":"/x"}` + "\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the access log in Loki", func() bool {
		return has(`{account="alice", domain="a.example", kind="access", level="info", node="node-1", service="nginx"}`, `"uri":"/x"`)
	})
	if has(`{account="alice", domain="a.example", kind="access", level="info", node="node-1", service="nginx"}`, "before the start") {
		t.Fatal("a log's lines from before the first start were shipped")
	}
	if lines, _ := h.Recent(time.Time{}, 100, "enrolled"); len(lines) != 1 {
		t.Fatalf("ring: %q", lines)
	}
}
