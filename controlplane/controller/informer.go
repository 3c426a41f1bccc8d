package controller

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// Follower is the store's list-and-watch loop (store.Store.Follow).
type Follower interface {
	Follow(ctx context.Context, k store.Kind, f store.Follower, opts ...store.WatchOption)
}

// Source is a kind a controller follows.
type Source struct {
	Kind store.Kind
	// Handle maps a listed or changed record to a key: whether to queue
	// it now and whether to keep it for the resync. A key not kept by the
	// latest event is dropped from the resync. nil: every record's Name,
	// queued; kept while the record exists.
	Handle func(ev store.Event) (key string, queue, keep bool)
	// Resync queues every kept key again this often; 0: never.
	Resync time.Duration
	// WatchOptions, e.g. store.WithoutDeletes() for a kind whose deletions
	// mean nothing to the controller (nothing is then dropped from the
	// resync by a deletion).
	WatchOptions []store.WatchOption
}

func defaultHandle(ev store.Event) (string, bool, bool) { return ev.Name, true, !ev.Deleted }

// informer feeds a queue from one Source.
type informer struct {
	src Source
	st  Follower
	q   *Queue
	log *slog.Logger

	mu   sync.Mutex
	kept map[string]struct{}
}

func (i *informer) handle(ev store.Event) (string, bool, bool) {
	if i.src.Handle == nil {
		return defaultHandle(ev)
	}
	return i.src.Handle(ev)
}

func (i *informer) run(ctx context.Context) {
	if i.src.Resync > 0 {
		go i.resync(ctx)
	}
	i.st.Follow(ctx, i.src.Kind, store.Follower{
		Replace: func(evs []store.Event, _ int64) {
			kept := map[string]struct{}{}
			var keys []string
			for _, ev := range evs {
				k, queue, keep := i.handle(ev)
				if queue {
					keys = append(keys, k)
				}
				if keep && i.src.Resync > 0 {
					kept[k] = struct{}{}
				}
			}
			i.mu.Lock()
			i.kept = kept
			i.mu.Unlock()
			i.q.Add(keys...)
		},
		Apply: func(b store.WatchBatch) {
			var keys []string
			i.mu.Lock()
			for _, ev := range b.Events {
				k, queue, keep := i.handle(ev)
				if queue {
					keys = append(keys, k)
				}
				if i.src.Resync == 0 {
					continue // nothing to keep keys for
				}
				if keep {
					i.kept[k] = struct{}{}
				} else {
					delete(i.kept, k)
				}
			}
			i.mu.Unlock()
			if len(keys) > 0 {
				i.q.Add(keys...)
			}
		},
		Relisting: func(err error) { i.log.Warn("informer: relisting", "kind", i.src.Kind, "err", err) },
	}, i.src.WatchOptions...)
}

func (i *informer) resync(ctx context.Context) {
	t := time.NewTicker(i.src.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		i.mu.Lock()
		keys := make([]string, 0, len(i.kept))
		for k := range i.kept {
			keys = append(keys, k)
		}
		i.mu.Unlock()
		i.q.Add(keys...)
	}
}
