package actions

import (
	"context"
	"fmt"
	"sync"
)

// KeyedLocks serialises actions on one object (a user name, a database):
// tasks run concurrently, and two applies of the same object, a re-sent
// task racing its newer generation say, must not interleave their reads
// and writes. The zero value is ready to use; a key's entry lives only
// while someone holds or waits for it.
type KeyedLocks struct {
	mu sync.Mutex
	m  map[string]*keyedLock
}

type keyedLock struct {
	ch   chan struct{} // holds a token while locked
	refs int           // holders and waiters
}

// Lock waits for key, or for ctx to end, and returns its unlock.
func (k *KeyedLocks) Lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*keyedLock)
	}
	l := k.m[key]
	if l == nil {
		l = &keyedLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()

	release := func() {
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("waiting for another action on %q: %w", key, ctx.Err())
	}
}
