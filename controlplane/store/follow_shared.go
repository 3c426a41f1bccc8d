package store

import (
	"context"
	"sync"
	"time"
)

// Follow is shared, as client-go's shared informers are: every follower of
// one kind with the same watch options on one Store rides one list-and-watch
// loop. Five controllers follow accounts; with a loop each, every account
// write was listed, sent by etcd, decoded from the wire and buffered once per
// controller.
//
// A follower that joins a loop already running lists the kind itself while
// the loop's deliveries wait, then gets only the events after its list, so
// it sees each change once, as with a loop of its own.
type followHub struct {
	mu     sync.Mutex
	groups map[followKey]*followGroup
}

type followKey struct {
	prefix string
	exact  bool
	opts   watchOpts
}

type followGroup struct {
	refs   int // followers joined or joining; under followHub.mu
	cancel context.CancelFunc

	// mu is held while the loop delivers and while a follower joins, so
	// that a follower gets nothing before its Replace and nothing after
	// it has left.
	mu     sync.Mutex
	subs   []*followSub
	listed bool // the loop has delivered its first Replace
}

type followSub struct {
	f Follower
	// after: events at or below it were in the list this follower was
	// given when it joined.
	after int64
}

// Follow lists k and follows it until ctx ends, listing again whenever the
// watch breaks: at once after a compaction, a second later after an error
// (etcd unreachable). This is the one list-and-watch loop of nPanel: the
// store's mirrors, the replica's account index and the controllers'
// informers all run on it. f's callbacks run one at a time, on the loop
// shared with k's other followers (keep them short), and never after
// Follow has returned.
func (s *Store) Follow(ctx context.Context, k Kind, f Follower, opts ...WatchOption) {
	var o watchOpts
	for _, opt := range opts {
		opt(&o)
	}
	key := followKey{prefix: k.prefix, exact: k.exact, opts: o}
	h := &s.follows
	h.mu.Lock()
	if h.groups == nil {
		h.groups = map[followKey]*followGroup{}
	}
	g := h.groups[key]
	if g == nil {
		gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		g = &followGroup{cancel: cancel}
		h.groups[key] = g
		go s.followLoop(gctx, k, g, opts)
	}
	g.refs++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if g.refs--; g.refs == 0 {
			delete(h.groups, key)
			g.cancel()
		}
		h.mu.Unlock()
	}()

	sub := &followSub{f: f}
	if !g.join(ctx, s, k, sub) {
		return
	}
	<-ctx.Done()
	g.mu.Lock()
	for i, x := range g.subs {
		if x == sub {
			g.subs = append(g.subs[:i], g.subs[i+1:]...)
			break
		}
	}
	g.mu.Unlock()
}

// join adds sub to the group: before the loop's first list, to be given
// that list; after it, with a list of its own. It returns false if ctx
// ended first.
func (g *followGroup) join(ctx context.Context, s *Store, k Kind, sub *followSub) bool {
	for {
		g.mu.Lock()
		if !g.listed {
			g.subs = append(g.subs, sub)
			g.mu.Unlock()
			return true
		}
		evs, rev, err := s.List(ctx, k)
		if err == nil {
			sub.after = rev
			sub.f.Replace(evs, rev)
			g.subs = append(g.subs, sub)
			g.mu.Unlock()
			return true
		}
		g.mu.Unlock()
		if ctx.Err() != nil {
			return false
		}
		if sub.f.Relisting != nil {
			sub.f.Relisting(err)
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}

// followLoop is the group's list-and-watch loop, fanned out to its
// followers.
func (s *Store) followLoop(ctx context.Context, k Kind, g *followGroup, opts []WatchOption) {
	s.follow(ctx, k, Follower{
		Replace: func(evs []Event, rev int64) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.listed = true
			g.memoize(k, evs)
			for _, sub := range g.subs {
				sub.after = rev
				sub.f.Replace(evs, rev)
			}
		},
		Apply: func(b WatchBatch) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.memoize(k, b.Events)
			for _, sub := range g.subs {
				if sb, ok := sub.since(b); ok {
					sub.f.Apply(sb)
				}
			}
		},
		Relisting: func(err error) {
			g.mu.Lock()
			defer g.mu.Unlock()
			for _, sub := range g.subs {
				if sub.f.Relisting != nil {
					sub.f.Relisting(err)
				}
			}
		},
	}, opts)
}

// memoize gives account events one decoding for all of the group's
// followers, when it has several. Other kinds have no shared decoding.
func (g *followGroup) memoize(k Kind, evs []Event) {
	if len(g.subs) < 2 || k.prefix != prefixAccounts {
		return
	}
	memos := make([]eventMemo, len(evs)) // one allocation for the batch
	for i := range evs {
		evs[i].memo = &memos[i]
	}
}

// eventMemo is an event's record decoded once, for every follower of the
// loop that delivered it (DecodeAccountEvent).
type eventMemo struct {
	mu      sync.Mutex
	account *Account
	err     error
}

// since is b without what sub's own list already held; false: nothing
// left to give it.
func (sub *followSub) since(b WatchBatch) (WatchBatch, bool) {
	if b.Rev <= sub.after {
		return WatchBatch{}, false
	}
	i := 0
	for i < len(b.Events) && b.Events[i].Rev <= sub.after {
		i++
	}
	if i == 0 {
		return b, true
	}
	return WatchBatch{Events: b.Events[i:], Rev: b.Rev}, true
}
