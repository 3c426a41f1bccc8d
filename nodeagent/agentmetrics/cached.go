package agentmetrics

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// cached holds the last value of a source that is too costly to read at
// every scrape (a subprocess, a database query, a walk of homes). A scrape
// that finds the value older than its interval starts one refresh in the
// background and answers with what it has, so a slow source never makes a
// scrape slow; only the first scrape waits, briefly, for a first value.
// Sources nobody scrapes are never read.
type cached[T any] struct {
	base    context.Context // ends when the collectors are closed
	name    string
	fetch   func(ctx context.Context) (T, error)
	every   time.Duration // between refreshes, after success or failure
	timeout time.Duration // bound of one refresh
	log     *slog.Logger
	now     func() time.Time

	mu      sync.Mutex
	val     T
	ok      bool      // val is from the last refresh, which succeeded
	err     error     // of the last refresh
	at      time.Time // start of the last refresh; zero before the first
	running chan struct{}
}

// firstWait bounds how long the first scrape waits for a source's first
// value: long enough for a local query, short of Prometheus's 10 s default
// scrape timeout with several sources.
const firstWait = 2 * time.Second

func newCached[T any](base context.Context, name string, every, timeout time.Duration, log *slog.Logger, fetch func(context.Context) (T, error)) *cached[T] {
	return &cached[T]{base: base, name: name, fetch: fetch, every: every, timeout: timeout, log: log, now: time.Now}
}

// get returns the last good value (ok false when there is none: the last
// refresh failed or none finished yet), starting a refresh if it is due.
func (c *cached[T]) get() (T, bool) {
	c.mu.Lock()
	first := c.at.IsZero()
	if c.running == nil && (first || c.now().Sub(c.at) >= c.every) {
		c.at = c.now()
		done := make(chan struct{})
		c.running = done
		go c.refresh(done)
	}
	running := c.running
	c.mu.Unlock()
	if first && running != nil {
		t := time.NewTimer(firstWait)
		select {
		case <-running:
		case <-t.C:
		}
		t.Stop()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.val, c.ok
}

func (c *cached[T]) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(c.base, c.timeout)
	v, err := c.fetch(ctx)
	cancel()
	c.mu.Lock()
	c.err = err
	// A source that fails shows npanel_agent_metrics_source_up 0 and what
	// its fetch returned with the error (nothing, or what it could read),
	// never its last figures: stale counters would look like no traffic.
	c.val, c.ok = v, err == nil
	if err != nil && !errors.Is(err, ErrAbsent) {
		c.log.Debug("metrics source failed", "source", c.name, "err", err)
	}
	c.running = nil
	c.mu.Unlock()
	close(done)
}

// state says whether the last finished refresh succeeded; known is false
// before the first one finished and for a source absent on this node.
func (c *cached[T]) state() (name string, up, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	finished := c.ok || c.err != nil
	return c.name, c.ok, finished && !errors.Is(c.err, ErrAbsent)
}
