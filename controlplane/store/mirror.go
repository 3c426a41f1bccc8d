package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// mirror keeps the records under one prefix decoded in memory, fed by a
// watch, for the reads on every API request (the caller's user, the plan
// of a new account). A linearizable read waits until etcd has applied
// everything committed before it, so under a stream of writes each one
// costs as much as a write; a mirror answers at once.
//
// What a mirror holds may lag etcd by the watch's delivery, milliseconds.
// Callers use it where that is safe: a miss falls back to a linearizable
// read (a record created just now is found), and decisions that must see
// the current record compare its revision in the transaction that acts on
// it (CreateAccount and the plan).
type mirror[T any] struct {
	cli    *clientv3.Client
	prefix string

	mu    sync.RWMutex
	m     map[string]mirrored[T]
	ready bool // listed and watching
}

type mirrored[T any] struct {
	v   *T
	rev int64
}

func newMirror[T any](cli *clientv3.Client, prefix string) *mirror[T] {
	return &mirror[T]{cli: cli, prefix: prefix, m: map[string]mirrored[T]{}}
}

// get returns the record named name and its mod revision. ok is false
// when the mirror cannot answer (not running, or no such record, which
// may be one created an instant ago): the caller reads etcd.
func (m *mirror[T]) get(name string) (v *T, rev int64, ok bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.ready {
		return nil, 0, false
	}
	e, ok := m.m[name]
	return e.v, e.rev, ok
}

// run lists the prefix and follows it until ctx ends, listing again after
// a broken watch (compaction, a lost connection to etcd).
func (m *mirror[T]) run(ctx context.Context, log *slog.Logger) {
	for ctx.Err() == nil {
		err := m.follow(ctx)
		m.mu.Lock()
		m.ready = false
		m.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		log.Warn("store mirror: relisting", "prefix", m.prefix, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (m *mirror[T]) follow(ctx context.Context) error {
	resp, err := m.cli.Get(ctx, m.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("list %s: %w", m.prefix, err)
	}
	fresh := make(map[string]mirrored[T], len(resp.Kvs))
	for _, kv := range resp.Kvs {
		// A record this replica cannot decode is left to etcd, which
		// gives readers the record and its error.
		if v, err := decodeJSON[T](kv.Key, kv.Value); err == nil {
			fresh[strings.TrimPrefix(string(kv.Key), m.prefix)] = mirrored[T]{v, kv.ModRevision}
		}
	}
	m.mu.Lock()
	m.m, m.ready = fresh, true
	m.mu.Unlock()

	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range m.cli.Watch(wctx, m.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		m.mu.Lock()
		for _, ev := range wr.Events {
			name := strings.TrimPrefix(string(ev.Kv.Key), m.prefix)
			if ev.Type == clientv3.EventTypeDelete {
				delete(m.m, name)
				continue
			}
			v, err := decodeJSON[T](ev.Kv.Key, ev.Kv.Value)
			if err != nil {
				delete(m.m, name) // left to etcd, as above
				continue
			}
			m.m[name] = mirrored[T]{v, ev.Kv.ModRevision}
		}
		m.mu.Unlock()
	}
	return ctx.Err()
}
