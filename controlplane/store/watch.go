package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Kind is a set of records a caller can list and follow (List, Watch,
// Follow) without knowing their keys: the store parses each key into the
// object's name.
type Kind struct {
	// label names the kind in errors and logs.
	label  string
	prefix string
	// exact: prefix is one key, not a prefix.
	exact bool
	// name parses a key's rest after prefix into the object's name.
	name func(rest string) string
}

// String names the kind, for logs and metrics.
func (k Kind) String() string { return k.label }

func (k Kind) nameOf(key string) string {
	rest := strings.TrimPrefix(key, k.prefix)
	if k.name == nil {
		return rest
	}
	return k.name(rest)
}

// firstSegment names an object by its key's first segment after the
// prefix: done/account/<id>/<task> is account id's outcome.
func firstSegment(rest string) string {
	id, _, _ := strings.Cut(rest, "/")
	return id
}

// The kinds controllers follow.
var (
	// KindAccounts: an event per account; Value decodes with DecodeAccount
	// or DecodeAccountHead.
	KindAccounts = Kind{label: "accounts", prefix: prefixAccounts}
	// KindAccountOutcomes: finished tasks of accounts, named by account id.
	KindAccountOutcomes = Kind{label: "account-outcomes", prefix: prefixDone + "account/", name: firstSegment}
	// KindZones: an event per zone; Value decodes with DecodeZone.
	KindZones = Kind{label: "zones", prefix: prefixZones}
	// KindZoneOutcomes: finished tasks of zones, named by zone.
	KindZoneOutcomes = Kind{label: "zone-outcomes", prefix: prefixDoneZones, name: firstSegment}
	// KindDNSChecks: finished checks of a node's primary zones, named by node.
	KindDNSChecks = Kind{label: "dns-checks", prefix: prefixDoneDNSNodes, name: firstSegment}
	// KindNodes: declared nodes, by name.
	KindNodes = Kind{label: "nodes", prefix: prefixNodes}

	kindUsers    = Kind{label: "users", prefix: prefixUsers}
	kindPlans    = Kind{label: "plans", prefix: prefixPlans}
	kindServices = Kind{label: "services", prefix: prefixServices}
	kindStates   = Kind{label: "node-states", prefix: prefixState}
	kindAlive    = Kind{label: "alive", prefix: prefixAlive}
)

// KindNodeQueue is the tasks queued for node, named by task id; Value
// decodes with DecodeQueued.
func KindNodeQueue(node string) Kind {
	return Kind{label: "queue/" + node, prefix: queuePrefix(node)}
}

// KindNodeState is one node's state record, named by the node; Value
// decodes with DecodeNodeState.
func KindNodeState(node string) Kind {
	return Kind{label: "nodestate/" + node, prefix: stateKey(node), exact: true,
		name: func(string) string { return node }}
}

// Event is one record of a Kind, as listed or as changed.
type Event struct {
	// Name is the object's name (an account id, a zone, a task id).
	Name string
	// Deleted: the record was deleted (Value is empty).
	Deleted bool
	// Created: this put created the record (its first version).
	Created bool
	// Rev is the revision the record was written (or deleted) at.
	Rev int64
	// Value is the record as stored; decode it with the kind's Decode*.
	Value []byte

	key string // for the store's own followers (LiveSet)
	// memo, on events a shared loop delivers to several followers, holds
	// the record decoded once for all of them (DecodeAccountEvent).
	memo *eventMemo
}

// WatchBatch is what one watch response brought: events in revision
// order, or a progress notice (no events) that the kind is current up to
// Rev. Err ends the watch: ErrCompacted, or another loss (etcd leader
// gone, connection lost); the channel is closed after it.
type WatchBatch struct {
	Events []Event
	Rev    int64
	Err    error
}

// ErrCompacted means a watch asked for revisions etcd no longer has: the
// caller lists again and follows from the list's revision.
var ErrCompacted = errors.New("store: watch revision compacted")

// errWatchClosed is a watch that ended without saying why.
var errWatchClosed = errors.New("store: watch closed")

// WatchOption adjusts a Watch.
type WatchOption func(*watchOpts)

type watchOpts struct{ noDeletes, progress bool }

// WithoutDeletes leaves deletions out of the watch (etcd filters them
// server-side).
func WithoutDeletes() WatchOption { return func(o *watchOpts) { o.noDeletes = true } }

// WithProgress asks etcd for progress notices, so that a follower's
// revision moves while its kind is idle (see RequestProgress).
func WithProgress() WatchOption { return func(o *watchOpts) { o.progress = true } }

// listPage bounds one read of List: a kind of 100,000 accounts is read in
// pages at one revision, never in one response.
const listPage = 1000

// List returns every record of k and the revision they were read at; a
// watch from that revision (Watch(ctx, k, rev)) misses nothing.
func (s *Store) List(ctx context.Context, k Kind) ([]Event, int64, error) {
	var out []Event
	rev, err := s.ListFunc(ctx, k, func(evs []Event) error {
		out = append(out, evs...)
		return nil
	})
	return out, rev, err
}

// ListFunc is List in pages, for kinds too large to hold at once: fn gets
// each page in key order.
func (s *Store) ListFunc(ctx context.Context, k Kind, fn func([]Event) error) (int64, error) {
	if k.exact {
		resp, err := s.cli.Get(ctx, k.prefix)
		if err != nil {
			return 0, fmt.Errorf("list %s: %w", k, err)
		}
		return resp.Header.Revision, fn(k.events(resp.Kvs))
	}
	end := clientv3.GetPrefixRangeEnd(k.prefix)
	from := k.prefix
	var rev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				err = ErrCompacted
			}
			return 0, fmt.Errorf("list %s: %w", k, err)
		}
		// Every later page is read at the first page's revision: a read at
		// an older revision still carries the current one in its header,
		// and a watch from that would miss what changed while listing.
		if rev == 0 {
			rev = resp.Header.Revision
		}
		if err := fn(k.events(resp.Kvs)); err != nil {
			return 0, err
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (k Kind) events(kvs []*mvccpb.KeyValue) []Event {
	out := make([]Event, len(kvs))
	for i, kv := range kvs {
		key := string(kv.Key)
		out[i] = Event{Name: k.nameOf(key), Created: kv.Version == 1, Rev: kv.ModRevision, Value: kv.Value, key: key}
	}
	return out
}

// Watch follows k from the revision after afterRev (0: from now). The
// channel closes when ctx ends, or after a batch with Err. It fails rather
// than hangs when this member loses its etcd leader.
func (s *Store) Watch(ctx context.Context, k Kind, afterRev int64, opts ...WatchOption) <-chan WatchBatch {
	var o watchOpts
	for _, opt := range opts {
		opt(&o)
	}
	var eopts []clientv3.OpOption
	if afterRev > 0 {
		eopts = append(eopts, clientv3.WithRev(afterRev+1))
	}
	if !k.exact {
		eopts = append(eopts, clientv3.WithPrefix())
	}
	if o.noDeletes {
		eopts = append(eopts, clientv3.WithFilterDelete())
	}
	if o.progress {
		eopts = append(eopts, clientv3.WithProgressNotify())
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := s.cli.Watch(wctx, k.prefix, eopts...)
	out := make(chan WatchBatch)
	go func() {
		defer close(out)
		defer cancel()
		for wr := range wch {
			b := k.batch(wr)
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
			if b.Err != nil {
				return
			}
		}
		if ctx.Err() == nil {
			select {
			case out <- WatchBatch{Err: fmt.Errorf("watch %s: %w", k, errWatchClosed)}:
			case <-ctx.Done():
			}
		}
	}()
	return out
}

func (k Kind) batch(wr clientv3.WatchResponse) WatchBatch {
	if wr.CompactRevision != 0 || errors.Is(wr.Err(), rpctypes.ErrCompacted) {
		return WatchBatch{Err: fmt.Errorf("watch %s: %w", k, ErrCompacted)}
	}
	if err := wr.Err(); err != nil {
		return WatchBatch{Err: fmt.Errorf("watch %s: %w", k, err)}
	}
	if wr.Canceled {
		return WatchBatch{Err: fmt.Errorf("watch %s: %w", k, errWatchClosed)}
	}
	b := WatchBatch{Rev: wr.Header.Revision, Events: make([]Event, len(wr.Events))}
	for i, ev := range wr.Events {
		key := string(ev.Kv.Key)
		b.Events[i] = Event{Name: k.nameOf(key), Deleted: ev.Type == clientv3.EventTypeDelete,
			Created: ev.IsCreate(), Rev: ev.Kv.ModRevision, Value: ev.Kv.Value, key: key}
	}
	return b
}

// RequestProgress asks etcd to send a progress notice on every watch of
// this store's client opened WithProgress, at once: a follower that needs
// to know it is current (an index answering a read) need not wait for the
// next periodic one. Every watch on the client gets it, so followers that
// ask use a store of their own.
func (s *Store) RequestProgress(ctx context.Context) error {
	return s.cli.RequestProgress(clientv3.WithRequireLeader(ctx))
}

// CurrentRev is the cluster's current revision, from a linearizable read:
// everything committed before the call is at or below it.
func (s *Store) CurrentRev(ctx context.Context) (int64, error) {
	resp, err := s.cli.Get(ctx, keySecrets, clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// Follower is what Follow feeds.
type Follower struct {
	// Replace gets the whole kind and its revision: first, and again after
	// every relist (the watch was compacted or lost). Events that happened
	// while the watch was down are only seen as the records now stand.
	Replace func(events []Event, rev int64)
	// Apply gets each watch batch, in order (progress notices too, with
	// WithProgress).
	Apply func(b WatchBatch)
	// Relisting, if set, is told why Follow lists again.
	Relisting func(err error)
}

// follow is Follow's loop for one group of followers (follow_shared.go).
func (s *Store) follow(ctx context.Context, k Kind, f Follower, opts []WatchOption) {
	for ctx.Err() == nil {
		err := s.followOnce(ctx, k, f, opts)
		if ctx.Err() != nil {
			return
		}
		if f.Relisting != nil {
			f.Relisting(err)
		}
		if errors.Is(err, ErrCompacted) {
			continue
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Store) followOnce(ctx context.Context, k Kind, f Follower, opts []WatchOption) error {
	evs, rev, err := s.List(ctx, k)
	if err != nil {
		return err
	}
	f.Replace(evs, rev)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for b := range s.Watch(wctx, k, rev, opts...) {
		if b.Err != nil {
			return b.Err
		}
		f.Apply(b)
	}
	return ctx.Err()
}
