package logship

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/logtail"
)

// receiver is a Loki push endpoint that decodes what it gets.
type receiver struct {
	mu       sync.Mutex
	reqs     []push.PushRequest
	headers  []http.Header
	lines    map[string][]string // by stream labels
	n        atomic.Int64
	answer   func(n int) (int, http.Header) // status for the nth request (0-based)
	requests int
}

func newReceiver() *receiver {
	return &receiver{lines: map[string][]string{}}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		w.WriteHeader(500)
		return
	}
	r.mu.Lock()
	n := r.requests
	r.requests++
	answer := r.answer
	r.mu.Unlock()
	if answer != nil {
		if code, h := answer(n); code != 0 {
			for k, v := range h {
				w.Header()[k] = v
			}
			w.WriteHeader(code)
			io.WriteString(w, "entry too far behind")
			return
		}
	}
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		http.Error(w, "snappy: "+err.Error(), 400)
		return
	}
	var pr push.PushRequest
	if err := pr.Unmarshal(raw); err != nil {
		http.Error(w, "proto: "+err.Error(), 400)
		return
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, pr)
	r.headers = append(r.headers, req.Header.Clone())
	for _, s := range pr.Streams {
		for _, e := range s.Entries {
			r.lines[s.Labels] = append(r.lines[s.Labels], e.Line)
		}
		r.n.Add(int64(len(s.Entries)))
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) get(labels string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines[labels])
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newShipper(t *testing.T, dir string, cfg Config) (*Shipper, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.DataDir = dir
	cfg.Registry = reg
	cfg.Node = "n1"
	cfg.BatchWait = cmp.Or(cfg.BatchWait, 20*time.Millisecond)
	cfg.MinBackoff = cmp.Or(cfg.MinBackoff, 10*time.Millisecond)
	cfg.MaxBackoff = cmp.Or(cfg.MaxBackoff, 50*time.Millisecond)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s, reg
}

func metric(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

var (
	access = &logtail.Source{Path: "/var/log/nginx/domains/alice/a.example.access.log", Service: "nginx", Account: "alice", Domain: "a.example", Kind: "access"}
	pdns   = &logtail.Source{Path: "/var/log/npanel/pdns.log", Service: "pdns"}
)

const (
	accessLabels = `{account="alice", domain="a.example", kind="access", level="info", node="n1", service="nginx"}`
	pdnsLabels   = `{level="warn", node="n1", service="pdns"}`
)

func entries(src *logtail.Source, level string, t0 time.Time, prefix string, from, to int) []logtail.Entry {
	var out []logtail.Entry
	for i := from; i < to; i++ {
		out = append(out, logtail.Entry{Source: src, Level: level, Time: t0.Add(time.Duration(i) * time.Millisecond),
			Line: fmt.Appendf(nil, "%s %d", prefix, i)})
	}
	return out
}

func want(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s %d", prefix, i))
	}
	return out
}

func TestPayloadLabelsOrderBatching(t *testing.T) {
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	s, reg := newShipper(t, t.TempDir(), Config{URL: srv.URL + "/loki/api/v1/push", TenantID: "t1",
		Username: "u", Password: "p", BatchBytes: 4 << 10})
	t0 := time.Now()
	// A batch of the engine holds one source; two interleaved sources,
	// and entries of one stream out of time order, in one shipper batch.
	s.Consume(entries(access, "info", t0, "a", 0, 10))
	rev := entries(pdns, "warn", t0, "p", 0, 10)
	slices.Reverse(rev)
	s.Consume(rev)
	// Lines are copied: the engine reuses its buffer after Consume.
	for i := range rev {
		rev[i].Line[0] = 'X'
	}
	s.Consume(entries(access, "info", t0, "a", 10, 400))
	waitFor(t, "400 access lines", func() bool { return len(rcv.get(accessLabels)) >= 400 })
	if got := rcv.get(accessLabels); !slices.Equal(got, want("a", 0, 400)) {
		t.Fatalf("access lines %q", got)
	}
	if got := rcv.get(pdnsLabels); !slices.Equal(got, want("p", 0, 10)) {
		t.Fatalf("pdns lines (sorted by time) %q", got)
	}
	// The receiver records a batch before the shipper reads the answer.
	waitFor(t, "shipped = 410", func() bool { return metric(t, reg, "npanel_agent_log_shipped_lines_total", "") == 410 })
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.reqs) < 3 {
		t.Fatalf("%d requests for ~12 KiB in 4 KiB batches", len(rcv.reqs))
	}
	for i, h := range rcv.headers {
		u, p, _ := (&http.Request{Header: h}).BasicAuth()
		if h.Get("X-Scope-OrgID") != "t1" || u != "u" || p != "p" || h.Get("Content-Type") != "application/x-protobuf" {
			t.Fatalf("request %d headers %v", i, h)
		}
	}
	for _, r := range rcv.reqs {
		for _, st := range r.Streams {
			if strings.Contains(st.Labels, "/var/log") {
				t.Fatalf("a path in labels: %s", st.Labels)
			}
			if !slices.IsSortedFunc(st.Entries, func(a, b push.Entry) int { return a.Timestamp.Compare(b.Timestamp) }) {
				t.Fatalf("stream %s out of order", st.Labels)
			}
		}
	}
}

func TestFlushAfterBatchWait(t *testing.T) {
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	s, _ := newShipper(t, t.TempDir(), Config{URL: srv.URL, BearerToken: "tok"})
	s.Consume(entries(access, "info", time.Now(), "a", 0, 3))
	waitFor(t, "3 lines", func() bool { return len(rcv.get(accessLabels)) == 3 })
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if h := rcv.headers[0].Get("Authorization"); h != "Bearer tok" {
		t.Fatalf("Authorization %q", h)
	}
}

// listenAgain binds addr again once the old server let go of it.
func listenAgain(t *testing.T, addr string) net.Listener {
	t.Helper()
	var l net.Listener
	waitFor(t, "rebind "+addr, func() bool {
		var err error
		l, err = net.Listen("tcp", addr)
		return err == nil
	})
	return l
}

func TestReceiverRestartLosesNothing(t *testing.T) {
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	addr := srv.Listener.Addr().String()
	s, reg := newShipper(t, t.TempDir(), Config{URL: srv.URL, BatchBytes: 2 << 10})
	t0 := time.Now()
	s.Consume(entries(access, "info", t0, "a", 0, 200))
	waitFor(t, "first lines", func() bool { return len(rcv.get(accessLabels)) > 0 })
	srv.Close()
	for i := 200; i < 1200; i += 50 {
		s.Consume(entries(access, "info", t0, "a", i, i+50))
		time.Sleep(2 * time.Millisecond)
	}
	waitFor(t, "failed pushes", func() bool { return metric(t, reg, "npanel_agent_log_push_failures_total", "network") > 0 })
	srv2 := &httptest.Server{Listener: listenAgain(t, addr), Config: &http.Server{Handler: rcv}}
	srv2.Start()
	defer srv2.Close()
	waitFor(t, "1200 lines", func() bool { return len(dedup(rcv.get(accessLabels))) >= 1200 })
	// A batch the old server took but could not answer is sent again
	// (at least once); Loki drops an entry equal in stream, time and line.
	got := rcv.get(accessLabels)
	if d := dedup(got); !slices.Equal(d, want("a", 0, 1200)) {
		t.Fatalf("got %d lines, want 1200 in order", len(d))
	}
	t.Logf("%d lines sent twice", len(got)-1200)
}

func TestReceiverDownFillsBufferDropsOldestNeverBlocks(t *testing.T) {
	// The receiver takes requests and never answers while down.
	var down atomic.Bool
	down.Store(true)
	release := make(chan struct{})
	rcv := newReceiver()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		rcv.ServeHTTP(w, r)
	}))
	defer srv.Close()
	dir := t.TempDir()
	const limit = 64 << 10
	s, reg := newShipper(t, dir, Config{URL: srv.URL, BatchBytes: 4 << 10, BufferBytes: limit,
		Client: &http.Client{Timeout: time.Minute}})
	t0 := time.Now()
	const total = 20000
	var slowest time.Duration
	for i := 0; i < total; i += 100 {
		start := time.Now()
		s.Consume(entries(access, "info", t0, "a", i, i+100))
		slowest = max(slowest, time.Since(start))
	}
	// Consume returned every time while the push in flight hangs: it never
	// waits on the network (only on its own fsync'd disk writes).
	t.Logf("slowest Consume of 100 lines with the receiver hanging: %v", slowest)
	waitFor(t, "the batch timer", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.lines == 0
	})
	used := metric(t, reg, "npanel_agent_log_buffer_bytes", "")
	dropped := metric(t, reg, "npanel_agent_log_dropped_lines_total", "buffer_full")
	if used > limit || used < limit/2 || metric(t, reg, "npanel_agent_log_buffer_limit_bytes", "") != limit {
		t.Fatalf("buffer %v bytes, limit %d", used, limit)
	}
	if dropped == 0 {
		t.Fatal("no lines counted as dropped for a full buffer")
	}
	// Back up: what is left is the newest lines, every one of them.
	down.Store(false)
	close(release)
	// The segment whose push hung was dropped for room during it: its
	// lines are counted when that push ends (failed: lost).
	waitFor(t, "the rest", func() bool {
		return metric(t, reg, "npanel_agent_log_shipped_lines_total", "")+
			metric(t, reg, "npanel_agent_log_dropped_lines_total", "buffer_full") >= total &&
			metric(t, reg, "npanel_agent_log_buffer_bytes", "") == 0
	})
	dropped = metric(t, reg, "npanel_agent_log_dropped_lines_total", "buffer_full")
	got := rcv.get(accessLabels)
	if float64(len(got))+dropped != total || !slices.Equal(got, want("a", total-len(got), total)) {
		t.Fatalf("received %d lines (first %q), dropped %v, of %d", len(got), got[:1], dropped, total)
	}
}

func TestRejectedBatchDroppedAndCounted(t *testing.T) {
	rcv := newReceiver()
	rcv.answer = func(n int) (int, http.Header) {
		if n == 0 {
			return 400, nil
		}
		return 0, nil
	}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	s, reg := newShipper(t, t.TempDir(), Config{URL: srv.URL})
	s.Consume(entries(access, "info", time.Now(), "a", 0, 5))
	waitFor(t, "rejection", func() bool { return metric(t, reg, "npanel_agent_log_dropped_lines_total", "rejected") == 5 })
	s.Consume(entries(access, "info", time.Now(), "b", 0, 5))
	waitFor(t, "next batch", func() bool { return len(rcv.get(accessLabels)) == 5 })
	if got := metric(t, reg, "npanel_agent_log_push_failures_total", "http_4xx"); got != 1 {
		t.Fatalf("http_4xx failures %v", got)
	}
	if got := rcv.get(accessLabels); !slices.Equal(got, want("b", 0, 5)) {
		t.Fatalf("got %q", got)
	}
}

func TestRateLimitedRetriedAfterRetryAfter(t *testing.T) {
	rcv := newReceiver()
	var first atomic.Int64
	rcv.answer = func(n int) (int, http.Header) {
		if n == 0 {
			first.Store(time.Now().UnixNano())
			return 429, http.Header{"Retry-After": {"1"}}
		}
		return 0, nil
	}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	s, reg := newShipper(t, t.TempDir(), Config{URL: srv.URL})
	s.Consume(entries(access, "info", time.Now(), "a", 0, 5))
	waitFor(t, "retried batch", func() bool { return len(rcv.get(accessLabels)) == 5 })
	if waited := time.Since(time.Unix(0, first.Load())); waited < 900*time.Millisecond {
		t.Fatalf("retried after %v despite Retry-After: 1", waited)
	}
	if metric(t, reg, "npanel_agent_log_push_failures_total", "http_429") != 1 || metric(t, reg, "npanel_agent_log_dropped_lines_total", "rejected") != 0 {
		t.Fatal("429 not counted as a retried failure")
	}
}

func TestBufferSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{URL: "http://127.0.0.1:1/push", DataDir: dir, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	// Not started: Close writes the batch to the buffer.
	s.Consume(entries(access, "info", time.Now(), "a", 0, 7))
	s.Close()
	rcv := newReceiver()
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	newShipper(t, dir, Config{URL: srv.URL})
	waitFor(t, "buffered lines", func() bool { return len(rcv.get(accessLabels)) == 7 })
}

func TestSecretsNotInErrors(t *testing.T) {
	_, err := New(Config{URL: "ftp://user:hunter2@loki/", DataDir: t.TempDir()})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err %v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	for h, want := range map[string]time.Duration{"": 0, "3": 3 * time.Second, "x": 0, "99999": maxRetryAfter} {
		if got := retryAfter(h); got != want {
			t.Errorf("retryAfter(%q) = %v, want %v", h, got, want)
		}
	}
	_ = context.Background
}

// dedup drops repeated lines (each test line is unique), keeping order.
func dedup(lines []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lines {
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out
}

func TestUnwritableBufferDropsAndCounts(t *testing.T) {
	dir := t.TempDir()
	s, reg := newShipper(t, dir, Config{URL: "http://127.0.0.1:1/push"})
	// Root ignores modes: take the directory away instead.
	if err := os.RemoveAll(filepath.Join(dir, "logship")); err != nil {
		t.Fatal(err)
	}
	s.Consume(entries(access, "info", time.Now(), "a", 0, 9))
	waitFor(t, "write_failed", func() bool { return metric(t, reg, "npanel_agent_log_dropped_lines_total", "write_failed") == 9 })
}
