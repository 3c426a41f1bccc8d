// Package logship ships the lines of the tail engine to Loki's push API:
// batched, protobuf + snappy (the format of github.com/grafana/loki/pkg/push),
// through a bounded on-disk buffer so that a Loki outage loses nothing up
// to the buffer's size and never blocks the node.
package logship

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/logtail"
)

// DefaultBufferBytes bounds the on-disk buffer unless configured.
const DefaultBufferBytes = 256 << 20

// Config configures a Shipper.
type Config struct {
	// URL is Loki's push endpoint, e.g. http://loki:3100/loki/api/v1/push.
	URL string
	// TenantID, when set, is sent as X-Scope-OrgID.
	TenantID string
	// Username and Password are HTTP basic auth; BearerToken an
	// Authorization bearer token. The command reads them from files.
	Username    string
	Password    string
	BearerToken string
	// Node is the node label of every stream.
	Node string
	// DataDir holds logship/, the buffer.
	DataDir string
	// BufferBytes bounds the buffer (default 256 MiB); when full the
	// oldest segment is dropped.
	BufferBytes int64
	// BatchBytes (default 1 MiB) and BatchWait (default 1 s): a batch is
	// written to the buffer when it reaches either.
	BatchBytes int
	BatchWait  time.Duration
	// MinBackoff (default 500 ms) and MaxBackoff (default 90 s) bound the
	// delay between failed pushes.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Client sends the pushes; default one with a 30 s timeout.
	Client *http.Client
	Logger *slog.Logger
	// Registry receives the npanel_agent_log_* shipping metrics.
	Registry prometheus.Registerer
}

// Shipper is a logtail.Consumer that ships to Loki.
type Shipper struct {
	cfg Config
	log *slog.Logger
	buf *buffer
	m   metrics

	mu      sync.Mutex
	streams map[string]*push.Stream // the batch, by label string
	bytes   int
	lines   int
	first   time.Time // when the batch's first line came
	labels  map[streamKey]string

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	rejectLog time.Time // last time a rejection was logged
}

type streamKey struct {
	src   *logtail.Source
	level string
}

type metrics struct {
	shipped     prometheus.Counter
	dropped     *prometheus.CounterVec
	bufferBytes prometheus.GaugeFunc
	limit       prometheus.Gauge
	failures    *prometheus.CounterVec
}

// New checks cfg and opens the buffer. Start begins sending.
func New(cfg Config) (*Shipper, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("logship: Loki URL %q is not an http(s) URL", redact(cfg.URL))
	}
	if cfg.DataDir == "" {
		return nil, errors.New("logship: no data directory")
	}
	cfg.BufferBytes = cmp.Or(cfg.BufferBytes, DefaultBufferBytes)
	cfg.BatchBytes = cmp.Or(cfg.BatchBytes, 1<<20)
	cfg.BatchWait = cmp.Or(cfg.BatchWait, time.Second)
	cfg.MinBackoff = cmp.Or(cfg.MinBackoff, 500*time.Millisecond)
	cfg.MaxBackoff = cmp.Or(cfg.MaxBackoff, 90*time.Second)
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	buf, err := openBuffer(filepath.Join(cfg.DataDir, "logship"), cfg.BufferBytes)
	if err != nil {
		return nil, fmt.Errorf("logship: %w", err)
	}
	s := &Shipper{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "logship"),
		buf:     buf,
		streams: map[string]*push.Stream{},
		labels:  map[streamKey]string{},
	}
	s.m = metrics{
		shipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "npanel_agent_log_shipped_lines_total", Help: "Log lines Loki accepted.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "npanel_agent_log_dropped_lines_total",
			Help: "Log lines not shipped: buffer_full (oldest dropped for room), rejected (Loki answered 4xx), write_failed (buffer not writable).",
		}, []string{"reason"}),
		bufferBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "npanel_agent_log_buffer_bytes", Help: "Bytes in the on-disk log shipping buffer.",
		}, func() float64 { return float64(buf.bytes()) }),
		limit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "npanel_agent_log_buffer_limit_bytes", Help: "Bound of the on-disk log shipping buffer.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "npanel_agent_log_push_failures_total", Help: "Failed pushes to Loki by reason: http_4xx, http_429, http_5xx, network.",
		}, []string{"reason"}),
	}
	s.m.limit.Set(float64(cfg.BufferBytes))
	for _, r := range []string{"buffer_full", "rejected", "write_failed"} {
		s.m.dropped.WithLabelValues(r)
	}
	for _, r := range []string{"http_4xx", "http_429", "http_5xx", "network"} {
		s.m.failures.WithLabelValues(r)
	}
	if cfg.Registry != nil {
		for _, c := range []prometheus.Collector{s.m.shipped, s.m.dropped, s.m.bufferBytes, s.m.limit, s.m.failures} {
			if err := cfg.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("logship: %w", err)
			}
		}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Start begins the batch timer and the sender.
func (s *Shipper) Start() {
	s.wg.Go(s.flushLoop)
	s.wg.Go(s.sendLoop)
}

// Close stops sending and writes the batch in memory to the buffer; what
// is buffered is sent after the next start.
func (s *Shipper) Close() error {
	s.once.Do(func() {
		s.cancel()
		s.wg.Wait()
		s.mu.Lock()
		s.flushLocked()
		s.mu.Unlock()
	})
	return nil
}

// Consume adds the lines to the batch; a full batch goes to the disk
// buffer. It never waits for the network.
func (s *Shipper) Consume(batch []logtail.Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range batch {
		k := streamKey{e.Source, e.Level}
		ls, ok := s.labels[k]
		if !ok {
			ls = labelString(s.cfg.Node, e.Source, e.Level)
			s.labels[k] = ls
		}
		st := s.streams[ls]
		if st == nil {
			st = &push.Stream{Labels: ls}
			s.streams[ls] = st
		}
		st.Entries = append(st.Entries, push.Entry{Timestamp: e.Time, Line: string(e.Line)})
		if s.lines == 0 {
			s.first = time.Now()
		}
		s.lines++
		// Per-entry protobuf overhead: timestamp and field tags.
		s.bytes += len(e.Line) + 24
		if s.bytes >= s.cfg.BatchBytes {
			s.flushLocked()
		}
	}
}

func (s *Shipper) flushLoop() {
	t := time.NewTicker(max(s.cfg.BatchWait/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		if s.lines > 0 && time.Since(s.first) >= s.cfg.BatchWait {
			s.flushLocked()
		}
		s.mu.Unlock()
	}
}

// flushLocked encodes the batch and writes it to the buffer.
func (s *Shipper) flushLocked() {
	if s.lines == 0 {
		return
	}
	req := push.PushRequest{Streams: make([]push.Stream, 0, len(s.streams))}
	for _, st := range s.streams {
		// Loki wants each stream in time order.
		slices.SortStableFunc(st.Entries, func(a, b push.Entry) int { return a.Timestamp.Compare(b.Timestamp) })
		req.Streams = append(req.Streams, *st)
	}
	slices.SortFunc(req.Streams, func(a, b push.Stream) int { return strings.Compare(a.Labels, b.Labels) })
	lines := s.lines
	clear(s.streams)
	s.lines, s.bytes = 0, 0
	raw, err := req.Marshal()
	if err != nil {
		s.m.dropped.WithLabelValues("write_failed").Add(float64(lines))
		s.log.Error("encode log batch", "err", err)
		return
	}
	dropped, err := s.buf.add(lines, snappy.Encode(nil, raw))
	if dropped > 0 {
		s.m.dropped.WithLabelValues("buffer_full").Add(float64(dropped))
	}
	switch {
	case errors.Is(err, errTooBig):
		s.m.dropped.WithLabelValues("buffer_full").Add(float64(lines))
	case err != nil:
		s.m.dropped.WithLabelValues("write_failed").Add(float64(lines))
		s.log.Warn("log buffer write failed; batch dropped", "err", err, "lines", lines)
	}
}

// labelString is the stream selector of a source: low-cardinality labels
// only (never a path or an address), empty ones left out, sorted.
func labelString(node string, src *logtail.Source, level string) string {
	var b strings.Builder
	b.WriteByte('{')
	n := 0
	add := func(k, v string) {
		if v == "" {
			return
		}
		if n > 0 {
			b.WriteString(", ")
		}
		n++
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(v))
	}
	add("account", src.Account)
	add("domain", src.Domain)
	add("kind", src.Kind)
	add("level", level)
	add("node", node)
	add("service", src.Service)
	b.WriteByte('}')
	return b.String()
}

// redact drops the userinfo of a URL for messages.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	u.User = nil
	return u.String()
}

// ReadSecret reads a secret from a file (flags name files, never the
// secret itself), trimming one trailing newline.
func ReadSecret(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("logship: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
