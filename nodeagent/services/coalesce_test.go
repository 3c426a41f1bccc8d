package services

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gatedFn is a reload whose runs block until the test opens their gate.
type gatedFn struct {
	runs    atomic.Int32
	started chan int         // run numbers, as they start
	gates   [8]chan struct{} // gates[i] releases run i+1
	errs    [8]error         // what run i+1 returns
}

func newGatedFn() *gatedFn {
	g := &gatedFn{started: make(chan int, 8)}
	for i := range g.gates {
		g.gates[i] = make(chan struct{})
	}
	return g
}

func (g *gatedFn) fn(ctx context.Context, _ string) error {
	n := int(g.runs.Add(1))
	g.started <- n
	select {
	case <-g.gates[n-1]:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.errs[n-1]
}

func newTestCoalescer(t *testing.T, spacing time.Duration, fn func(context.Context, string) error) *coalescer[string] {
	ctx, cancel := context.WithCancel(context.Background())
	c := newCoalescer(ctx, spacing, fn)
	t.Cleanup(func() { cancel(); c.wait() })
	return c
}

// waiting returns how many callers wait for key's current and next rounds.
func (c *coalescer[K]) waiting(key K) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	if k := c.keys[key]; k != nil {
		for _, r := range []*coalesceRound{k.cur, k.next} {
			if r != nil {
				n += r.joined
			}
		}
	}
	return n
}

// joined returns how many callers wait for key's next round.
func (c *coalescer[K]) joined(key K) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k := c.keys[key]; k != nil && k.next != nil {
		return k.next.joined
	}
	return 0
}

func expectStart(t *testing.T, g *gatedFn, want int) {
	t.Helper()
	select {
	case n := <-g.started:
		if n != want {
			t.Fatalf("run %d started, want run %d", n, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("run %d did not start", want)
	}
}

func TestCoalescerCallersDuringARunShareTheNextOne(t *testing.T) {
	const n = 20
	g := newGatedFn()
	g.errs[1] = errors.New("second run failed")
	c := newTestCoalescer(t, 0, g.fn)
	ctx := context.Background()

	first := make(chan error, 1)
	go func() { first <- c.Do(ctx, "nginx") }()
	expectStart(t, g, 1)

	// n callers arrive while run 1 is in progress.
	var returned atomic.Int32
	errs := make(chan error, n)
	for range n {
		go func() {
			err := c.Do(ctx, "nginx")
			returned.Add(1)
			errs <- err
		}()
	}
	waitFor(t, 10*time.Second, "all callers to join the next round", func() bool { return c.joined("nginx") == n })

	// Run 1 ends: only its own caller returns, the others wait for run 2,
	// which starts after their calls.
	close(g.gates[0])
	if err := <-first; err != nil {
		t.Fatalf("first caller: %v", err)
	}
	expectStart(t, g, 2)
	if r := returned.Load(); r != 0 {
		t.Fatalf("%d callers returned on a run that started before their call", r)
	}

	close(g.gates[1])
	for range n {
		if err := <-errs; err == nil || err.Error() != "second run failed" {
			t.Errorf("caller got %v, want run 2's error", err)
		}
	}
	if runs := g.runs.Load(); runs != 2 {
		t.Errorf("%d runs, want exactly 2 (one running, one for all %d latecomers)", runs, n)
	}
	// Idle again: the key is gone and a new call starts a new run.
	waitFor(t, 10*time.Second, "the runner to exit", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.keys) == 0
	})
	close(g.gates[2])
	if err := c.Do(ctx, "nginx"); err != nil {
		t.Errorf("third call: %v", err)
	}
	if runs := g.runs.Load(); runs != 3 {
		t.Errorf("%d runs after an idle call, want 3", runs)
	}
}

func TestCoalescerContextCancel(t *testing.T) {
	g := newGatedFn()
	c := newTestCoalescer(t, 0, g.fn)

	go func() { _ = c.Do(context.Background(), "pdns") }()
	expectStart(t, g, 1)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Do(ctx, "pdns") }()
	waitFor(t, 10*time.Second, "the caller to join", func() bool { return c.joined("pdns") == 1 })
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled caller got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a cancelled caller still waits")
	}
	// The round the caller gave up on still runs: someone asked for it.
	close(g.gates[0])
	expectStart(t, g, 2)
	close(g.gates[1])
}

func TestCoalescerKeysAreIndependent(t *testing.T) {
	g := newGatedFn()
	var other atomic.Int32
	c := newTestCoalescer(t, 0, func(ctx context.Context, key string) error {
		if key == "b" {
			other.Add(1)
			return nil
		}
		return g.fn(ctx, key)
	})
	go func() { _ = c.Do(context.Background(), "a") }()
	expectStart(t, g, 1)
	if err := c.Do(context.Background(), "b"); err != nil || other.Load() != 1 {
		t.Errorf("key b waited for key a or failed: %v", err)
	}
	close(g.gates[0])
}

func TestCoalescerSpacingMergesABurst(t *testing.T) {
	const spacing = time.Second
	var mu sync.Mutex
	var starts []time.Time
	c := newTestCoalescer(t, spacing, func(context.Context, string) error {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return nil
	})
	// A run, then a burst right after it: the burst arrives within the
	// spacing and shares one run, which waits for the spacing to pass.
	if err := c.Do(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := c.Do(context.Background(), "k"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(starts) != 2 {
		t.Fatalf("a run and a burst of %d calls: %d runs, want 2", n, len(starts))
	}
	if gap := starts[1].Sub(starts[0]); gap < spacing {
		t.Errorf("runs %s apart, want at least %s", gap, spacing)
	}
}

func TestCoalescerCloseEndsWaits(t *testing.T) {
	g := newGatedFn()
	ctx, cancel := context.WithCancel(context.Background())
	c := newCoalescer(ctx, time.Hour, g.fn)
	errs := make(chan error, 2)
	go func() { errs <- c.Do(context.Background(), "x") }()
	expectStart(t, g, 1)
	go func() { errs <- c.Do(context.Background(), "x") }()
	waitFor(t, 10*time.Second, "the caller to join", func() bool { return c.joined("x") == 1 })
	cancel() // what Close does
	c.wait()
	for range 2 {
		if err := <-errs; !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled from the cancelled runs", err)
		}
	}
}

func BenchmarkCoalescerUncontended(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCoalescer(ctx, 0, func(context.Context, string) error { return nil })
	for i := 0; b.Loop(); i++ {
		_ = c.Do(ctx, fmt.Sprint(i%4))
	}
}
