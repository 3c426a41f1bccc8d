package controller

import (
	"context"
	"sync"
	"time"
)

// Queue is a de-duplicating work queue of keys (object names), after
// client-go's workqueue: a key is queued at most once however often it is
// added, is never handed to two workers at once (added while being
// processed, it is queued again when Done), and may be added after a
// delay or after a per-key exponential backoff.
type Queue struct {
	base, max time.Duration

	mu         sync.Mutex
	ready      []string            // FIFO of keys to hand out
	dirty      map[string]struct{} // queued, or to be queued again at Done
	processing map[string]struct{}
	delayed    map[string]delayedKey
	failures   map[string]int
	wake       chan struct{} // closed on Add when someone waits; nil otherwise
	shutdown   bool

	depth func(int) // told the number of ready keys
}

type delayedKey struct {
	at    time.Time
	timer *time.Timer
}

// NewQueue returns a queue whose backoff starts at base and doubles per
// failure of the same key up to max.
func NewQueue(base, maxDelay time.Duration) *Queue {
	return &Queue{base: base, max: maxDelay, dirty: map[string]struct{}{}, processing: map[string]struct{}{},
		delayed: map[string]delayedKey{}, failures: map[string]int{}}
}

// Add queues keys that are not queued already.
func (q *Queue) Add(keys ...string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, k := range keys {
		q.addLocked(k)
	}
	q.notifyLocked()
}

func (q *Queue) addLocked(k string) {
	if q.shutdown {
		return
	}
	if d, ok := q.delayed[k]; ok {
		d.timer.Stop()
		delete(q.delayed, k)
	}
	if _, ok := q.dirty[k]; ok {
		return
	}
	q.dirty[k] = struct{}{}
	if _, ok := q.processing[k]; ok {
		return // queued again by Done
	}
	q.ready = append(q.ready, k)
}

func (q *Queue) notifyLocked() {
	if q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
	if q.depth != nil {
		q.depth(len(q.ready))
	}
}

// AddAfter queues key once d has passed. A key already waiting for an
// earlier time keeps it; an Add in the meantime queues it at once.
func (q *Queue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	at := time.Now().Add(d)
	if old, ok := q.delayed[key]; ok {
		if !old.at.After(at) {
			return
		}
		old.timer.Stop()
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if cur, ok := q.delayed[key]; !ok || cur.timer != t {
			return // replaced or already added
		}
		delete(q.delayed, key)
		q.addLocked(key)
		q.notifyLocked()
	})
	q.delayed[key] = delayedKey{at: at, timer: t}
}

// AddRateLimited queues key after its backoff: base, doubled for each
// failure since the key was last Forgotten, at most max.
func (q *Queue) AddRateLimited(key string) {
	q.mu.Lock()
	n := q.failures[key]
	q.failures[key] = n + 1
	q.mu.Unlock()
	d := q.base
	for i := 0; i < n && d < q.max; i++ {
		d *= 2
	}
	q.AddAfter(key, min(d, q.max))
}

// Forget resets key's backoff: call it when the key synced.
func (q *Queue) Forget(key string) {
	q.mu.Lock()
	delete(q.failures, key)
	q.mu.Unlock()
}

// Failures is how many times key failed since it was last forgotten.
func (q *Queue) Failures(key string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failures[key]
}

// Len is the number of keys ready to be handed out.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ready)
}

// Get waits for a key and marks it processing; the caller calls Done.
// ok is false once the queue is shut down or ctx ends.
func (q *Queue) Get(ctx context.Context) (key string, ok bool) {
	keys := q.GetBatch(ctx, 1, 0)
	if len(keys) == 0 {
		return "", false
	}
	return keys[0], true
}

// GetBatch waits for at least one key, then, if fewer than size are ready,
// up to gather for more, and hands out up to size keys in the order they
// were queued. It returns nil once the queue is shut down or ctx ends.
func (q *Queue) GetBatch(ctx context.Context, size int, gather time.Duration) []string {
	for {
		if keys := q.getBatch(ctx, size, gather); keys == nil || len(keys) > 0 {
			return keys
		}
		// Another worker woken by the same Add took the keys: wait again.
	}
}

// getBatch is one attempt of GetBatch: empty (not nil) when the keys it
// woke for were taken by another worker meanwhile.
func (q *Queue) getBatch(ctx context.Context, size int, gather time.Duration) []string {
	if !q.wait(ctx) {
		return nil
	}
	if gather > 0 && q.Len() < size {
		t := time.NewTimer(gather)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown || ctx.Err() != nil {
		return nil
	}
	n := min(size, len(q.ready))
	if n == 0 {
		return []string{}
	}
	keys := make([]string, n)
	copy(keys, q.ready)
	clear(q.ready[:n]) // let the strings go
	q.ready = q.ready[n:]
	for _, k := range keys {
		delete(q.dirty, k)
		q.processing[k] = struct{}{}
	}
	if q.depth != nil {
		q.depth(len(q.ready))
	}
	return keys
}

// wait blocks until a key is ready; false on shutdown or ctx's end.
func (q *Queue) wait(ctx context.Context) bool {
	for {
		q.mu.Lock()
		if q.shutdown {
			q.mu.Unlock()
			return false
		}
		if len(q.ready) > 0 {
			q.mu.Unlock()
			return true
		}
		if q.wake == nil {
			q.wake = make(chan struct{})
		}
		wake := q.wake
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return false
		case <-wake:
		}
	}
}

// Done ends the processing of keys; a key added meanwhile is queued again.
func (q *Queue) Done(keys ...string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, k := range keys {
		delete(q.processing, k)
		if _, ok := q.dirty[k]; ok && !q.shutdown {
			q.ready = append(q.ready, k)
		}
	}
	q.notifyLocked()
}

// ShutDown stops the queue: waiting Gets return, delayed keys are
// dropped, and Adds are ignored from now on.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	for k, d := range q.delayed {
		d.timer.Stop()
		delete(q.delayed, k)
	}
	q.ready, q.dirty = nil, map[string]struct{}{}
	if q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
	if q.depth != nil {
		q.depth(0)
	}
}
