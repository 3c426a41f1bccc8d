package logtail

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// RingLines is how many of the agent's own lines AgentLog keeps.
const RingLines = 2000

// AgentLog is an slog.Handler that passes records on to the next handler,
// keeps the last RingLines formatted lines for serviceLogs("agent"), and
// queues each record for the engine's consumers (service "agent").
type AgentLog struct {
	next slog.Handler
	text slog.Handler // formats into st.buf
	st   *agentLogState
}

type agentLogState struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ring  [RingLines]ringLine
	head  int // next slot
	n     int // filled slots
	lost  time.Time
	eng   atomic.Pointer[Engine]
	early []Entry // records before an engine was attached, bounded
}

type ringLine struct {
	t    time.Time
	line string
}

// Handler wraps next. e may be nil and attached later with Attach: the
// agent's logger exists before its engine.
func Handler(next slog.Handler, e *Engine) *AgentLog {
	st := &agentLogState{}
	h := &AgentLog{next: next, st: st}
	h.text = slog.NewTextHandler(&st.buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	if e != nil {
		h.Attach(e)
	}
	return h
}

// Attach sends the records from now on (and the ones queued before) to e.
func (h *AgentLog) Attach(e *Engine) {
	h.st.mu.Lock()
	early := h.st.early
	h.st.early = nil
	h.st.eng.Store(e)
	h.st.mu.Unlock()
	for _, en := range early {
		e.addRecord(en)
	}
}

// Detach stops queueing records for the engine (it is closing).
func (h *AgentLog) Detach(e *Engine) { h.st.eng.CompareAndSwap(e, nil) }

func (h *AgentLog) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *AgentLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	st := h.st
	st.mu.Lock()
	st.buf.Reset()
	_ = h.text.Handle(ctx, r)
	line := strings.TrimSuffix(st.buf.String(), "\n")
	if st.n == len(st.ring) {
		st.lost = st.ring[st.head].t
	} else {
		st.n++
	}
	st.ring[st.head] = ringLine{r.Time, line}
	st.head = (st.head + 1) % len(st.ring)
	en := Entry{Time: r.Time, Line: []byte(line), Level: slogLevel(r.Level)}
	e := st.eng.Load()
	if e == nil && len(st.early) < maxRecords {
		st.early = append(st.early, en)
	}
	st.mu.Unlock()
	if e != nil {
		e.addRecord(en)
	}
	return h.next.Handle(ctx, r)
}

func (h *AgentLog) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &AgentLog{next: h.next.WithAttrs(attrs), text: h.text.WithAttrs(attrs), st: h.st}
}

func (h *AgentLog) WithGroup(name string) slog.Handler {
	return &AgentLog{next: h.next.WithGroup(name), text: h.text.WithGroup(name), st: h.st}
}

// Recent returns the newest lines (at most lines, oldest first) logged at
// or after since (zero: any) that contain grep (""), and whether more
// matched than fit or the ring no longer holds all of the period.
func (h *AgentLog) Recent(since time.Time, lines int, grep string) ([]string, bool) {
	st := h.st
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	truncated := false
	for i := 1; i <= st.n; i++ {
		l := st.ring[(st.head-i+len(st.ring))%len(st.ring)]
		if !since.IsZero() && l.t.Before(since) {
			break
		}
		if grep != "" && !strings.Contains(l.line, grep) {
			continue
		}
		if len(out) >= lines {
			truncated = true
			break
		}
		out = append(out, l.line)
	}
	if !truncated && st.n == len(st.ring) && (since.IsZero() || !st.lost.Before(since)) && len(out) < lines {
		// Lines of the period fell out of the ring.
		truncated = true
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, truncated
}

func slogLevel(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warn"
	case l >= slog.LevelInfo:
		return "info"
	default:
		return "debug"
	}
}
