package controller

import (
	"context"
	"slices"
	"testing"
	"time"
)

func TestQueueDedupAndOrder(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	q.Add("a", "b", "a", "c", "b")
	if q.Len() != 3 {
		t.Fatalf("len %d, want 3", q.Len())
	}
	got := q.GetBatch(context.Background(), 10, 0)
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("batch %v, want a b c in order", got)
	}
	q.Done(got...)
	if q.Len() != 0 {
		t.Fatalf("len %d after done", q.Len())
	}
}

func TestQueueAddWhileProcessing(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	ctx := context.Background()
	q.Add("a")
	k, _ := q.Get(ctx)
	q.Add("a") // changed while being synced: must be synced again
	q.Add("a")
	if q.Len() != 0 {
		t.Fatal("a key being processed was handed out twice")
	}
	q.Done(k)
	if q.Len() != 1 {
		t.Fatalf("len %d after done, want the key queued once again", q.Len())
	}
}

func TestQueueBackoff(t *testing.T) {
	q := NewQueue(20*time.Millisecond, 80*time.Millisecond)
	ctx := context.Background()
	var waits []time.Duration
	for range 4 {
		start := time.Now()
		q.AddRateLimited("k")
		k, ok := q.Get(ctx)
		if !ok || k != "k" {
			t.Fatal("no key")
		}
		waits = append(waits, time.Since(start))
		q.Done(k)
	}
	for i, want := range []time.Duration{20, 40, 80, 80} {
		want *= time.Millisecond
		if waits[i] < want || waits[i] > want+200*time.Millisecond {
			t.Fatalf("retry %d waited %v, want about %v (all %v)", i, waits[i], want, waits)
		}
	}
	if q.Failures("k") != 4 {
		t.Fatalf("failures %d", q.Failures("k"))
	}
	q.Forget("k")
	start := time.Now()
	q.AddRateLimited("k")
	q.Get(ctx)
	if d := time.Since(start); d > 20*time.Millisecond+200*time.Millisecond {
		t.Fatalf("after Forget the backoff starts over; waited %v", d)
	}
}

func TestQueueAddAfter(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	q.AddAfter("late", time.Hour)
	q.AddAfter("soon", 30*time.Millisecond)
	q.AddAfter("soon", time.Hour) // a later time does not postpone it
	start := time.Now()
	k, _ := q.Get(context.Background())
	if k != "soon" || time.Since(start) < 25*time.Millisecond {
		t.Fatalf("got %q after %v", k, time.Since(start))
	}
	q.Add("late") // an Add queues a delayed key at once
	if k, _ := q.Get(context.Background()); k != "late" {
		t.Fatalf("got %q", k)
	}
}

func TestQueueGather(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	q.Add("a")
	go func() {
		time.Sleep(5 * time.Millisecond)
		q.Add("b", "c")
	}()
	got := q.GetBatch(context.Background(), 3, time.Second)
	if !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("batch %v", got)
	}
	// A full batch does not wait for the window.
	q.Add("d", "e")
	start := time.Now()
	if got := q.GetBatch(context.Background(), 2, time.Second); len(got) != 2 || time.Since(start) > 500*time.Millisecond {
		t.Fatalf("full batch %v after %v", got, time.Since(start))
	}
}

func TestQueueShutDown(t *testing.T) {
	q := NewQueue(time.Millisecond, time.Second)
	done := make(chan bool)
	go func() {
		_, ok := q.Get(context.Background())
		done <- ok
	}()
	time.Sleep(10 * time.Millisecond)
	q.AddAfter("x", 10*time.Millisecond)
	q.ShutDown()
	select {
	case ok := <-done:
		if ok {
			t.Fatal("Get returned a key after shutdown")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Get did not return on shutdown")
	}
	q.Add("y")
	time.Sleep(30 * time.Millisecond)
	if q.Len() != 0 {
		t.Fatal("a shut down queue took keys")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, ok := NewQueue(time.Millisecond, time.Second).Get(ctx); ok {
		t.Fatal("Get with an ended context returned a key")
	}
}
