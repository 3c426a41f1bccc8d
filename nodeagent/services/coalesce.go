package services

import (
	"context"
	"sync"
	"time"
)

// coalescer runs fn for a key so that overlapping calls share one run.
//
// The guarantee is the one Manager.Reload documents: every caller returns
// the result of a run of fn that started after the caller arrived. A run
// already in progress when a caller arrives does not count, because it may
// have read the configuration before the caller's change was written. So
// callers that arrive during a run all join the single next run, which
// starts when the current one ends: a burst of N calls costs at most two
// runs, and usually one.
//
// Runs for one key also start at least spacing apart. Sending a signal
// takes microseconds, so without it a burst whose callers trickle in over
// a few milliseconds would still cost a run per trickle; with it, every
// caller that arrives within spacing of a run shares the next one.
type coalescer[K comparable] struct {
	ctx     context.Context // the runs' context: fn is shared, so no caller's ctx can cancel it
	fn      func(ctx context.Context, key K) error
	spacing time.Duration

	mu   sync.Mutex
	keys map[K]*coalesceKey
	wg   sync.WaitGroup
}

type coalesceKey struct {
	running bool
	cur     *coalesceRound // the round in progress, if any
	next    *coalesceRound // the round callers join; nil when none is waiting
}

// coalesceRound is one run of fn shared by the callers that joined it
// before it started.
type coalesceRound struct {
	done   chan struct{}
	err    error
	joined int // callers waiting for it, under coalescer.mu (for tests)
}

func newCoalescer[K comparable](ctx context.Context, spacing time.Duration, fn func(context.Context, K) error) *coalescer[K] {
	return &coalescer[K]{ctx: ctx, fn: fn, spacing: spacing, keys: make(map[K]*coalesceKey)}
}

// Do waits for a run of fn for key that starts after this call and returns
// its error, or returns ctx.Err() as soon as ctx ends. A caller that gives
// up does not cancel the run: the others that joined it still want it.
func (c *coalescer[K]) Do(ctx context.Context, key K) error {
	c.mu.Lock()
	k := c.keys[key]
	if k == nil {
		k = &coalesceKey{}
		c.keys[key] = k
	}
	if k.next == nil {
		k.next = &coalesceRound{done: make(chan struct{})}
	}
	r := k.next
	r.joined++
	if !k.running {
		k.running = true
		c.wg.Add(1)
		go c.run(key, k)
	}
	c.mu.Unlock()

	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run executes the pending rounds of key one after another until none is
// left. Taking k.next under the lock is what starts a round: callers that
// arrive after that moment create (or join) the following round. After
// each round it stays (and keeps k.running) until spacing has passed since
// the round started, so callers in that window wait for the next round.
func (c *coalescer[K]) run(key K, k *coalesceKey) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		r := k.next
		if r == nil {
			k.running = false
			delete(c.keys, key)
			c.mu.Unlock()
			return
		}
		k.next, k.cur = nil, r
		c.mu.Unlock()

		started := time.Now()
		r.err = c.fn(c.ctx, key)
		close(r.done)
		c.mu.Lock()
		k.cur = nil
		c.mu.Unlock()

		if wait := c.spacing - time.Since(started); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
			}
		}
	}
}

// wait blocks until no run is in progress or pending. The caller cancels
// ctx first so runs end quickly.
func (c *coalescer[K]) wait() { c.wg.Wait() }
