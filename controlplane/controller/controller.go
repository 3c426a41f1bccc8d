package controller

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Options define a controller. Exactly one of Sync and SyncBatch is set.
type Options struct {
	// Name labels logs and metrics.
	Name string
	// Store is what sources are followed through (a *store.Store).
	Store   Follower
	Sources []Source

	// Sync converges one object; Workers (default 1) run it concurrently,
	// never on the same key at once.
	Sync    func(ctx context.Context, key string) error
	Workers int

	// SyncBatch converges up to BatchSize objects at once, on one worker:
	// it waits up to Gather for a batch to fill. An error requeues every
	// key of the batch with backoff.
	SyncBatch func(ctx context.Context, keys []string) error
	BatchSize int
	Gather    time.Duration

	// BaseDelay and MaxDelay bound the backoff of a failing key
	// (defaults 100ms and 30s).
	BaseDelay, MaxDelay time.Duration

	Log     *slog.Logger
	Metrics *Metrics // optional
}

// Controller is a running unit of the runtime; see the package doc.
type Controller struct {
	o Options
	q atomic.Pointer[Queue] // the current run's; nil when stopped

	depth    prometheus.Gauge
	duration prometheus.Observer
	retries  prometheus.Counter
}

// New builds a controller; Run (or a Manager) runs it.
func New(o Options) *Controller {
	if o.Workers <= 0 {
		o.Workers = 1
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = 100 * time.Millisecond
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Log = o.Log.With("controller", o.Name)
	c := &Controller{o: o}
	if m := o.Metrics; m != nil {
		c.depth = m.depth.WithLabelValues(o.Name)
		c.duration = m.duration.WithLabelValues(o.Name)
		c.retries = m.retries.WithLabelValues(o.Name)
	}
	return c
}

// Name is the controller's name.
func (c *Controller) Name() string { return c.o.Name }

// Enqueue queues keys now; it does nothing while the controller is not
// running.
func (c *Controller) Enqueue(keys ...string) {
	if q := c.q.Load(); q != nil {
		q.Add(keys...)
	}
}

// EnqueueAfter queues key once d has passed (e.g. a retry the sync chose).
func (c *Controller) EnqueueAfter(key string, d time.Duration) {
	if q := c.q.Load(); q != nil {
		q.AddAfter(key, d)
	}
}

// Run follows the sources and syncs until ctx ends, with a fresh queue.
func (c *Controller) Run(ctx context.Context) {
	q := NewQueue(c.o.BaseDelay, c.o.MaxDelay)
	if c.depth != nil {
		q.depth = func(n int) { c.depth.Set(float64(n)) }
	}
	c.q.Store(q)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		q.ShutDown()
		wg.Wait()
		c.q.CompareAndSwap(q, nil)
	}()
	for _, src := range c.o.Sources {
		inf := &informer{src: src, st: c.o.Store, q: q, log: c.o.Log, kept: map[string]struct{}{}}
		wg.Go(func() { inf.run(ctx) })
	}
	if c.o.SyncBatch != nil {
		wg.Go(func() { c.batchWorker(ctx, q) })
	} else {
		for range c.o.Workers {
			wg.Go(func() { c.worker(ctx, q) })
		}
	}
	<-ctx.Done()
}

func (c *Controller) worker(ctx context.Context, q *Queue) {
	for {
		key, ok := q.Get(ctx)
		if !ok {
			return
		}
		c.finish(ctx, q, []string{key}, c.timed(func() error { return c.o.Sync(ctx, key) }))
	}
}

func (c *Controller) batchWorker(ctx context.Context, q *Queue) {
	for {
		keys := q.GetBatch(ctx, c.o.BatchSize, c.o.Gather)
		if len(keys) == 0 {
			return
		}
		c.finish(ctx, q, keys, c.timed(func() error { return c.o.SyncBatch(ctx, keys) }))
	}
}

func (c *Controller) timed(f func() error) error {
	start := time.Now()
	err := f()
	if c.duration != nil {
		c.duration.Observe(time.Since(start).Seconds())
	}
	return err
}

// finish requeues the keys of a failed sync with backoff and resets the
// backoff of a successful one.
func (c *Controller) finish(ctx context.Context, q *Queue, keys []string, err error) {
	defer q.Done(keys...)
	if err == nil {
		for _, k := range keys {
			q.Forget(k)
		}
		return
	}
	if ctx.Err() != nil {
		return // stopping; the next run lists again
	}
	c.o.Log.Warn("sync failed; will retry", "keys", len(keys), "first", keys[0], "err", err)
	for _, k := range keys {
		q.AddRateLimited(k)
	}
	if c.retries != nil {
		c.retries.Add(float64(len(keys)))
	}
}
