package store

import (
	"context"
	"log/slog"
	"sync"
)

// mirror keeps the records of one kind decoded in memory, fed by Follow,
// for the reads on every API request (the caller's user, the plan of a new
// account). A linearizable read waits until etcd has applied everything
// committed before it, so under a stream of writes each one costs as much
// as a write; a mirror answers at once.
//
// What a mirror holds may lag etcd by the watch's delivery, milliseconds.
// Callers use it where that is safe: a miss falls back to a linearizable
// read (a record created just now is found), and decisions that must see
// the current record compare its revision in the transaction that acts on
// it (CreateAccount and the plan).
type mirror[T any] struct {
	s    *Store
	kind Kind

	mu    sync.RWMutex
	m     map[string]mirrored[T]
	ready bool // listed and watching
}

type mirrored[T any] struct {
	v   *T
	rev int64
}

func newMirror[T any](s *Store, kind Kind) *mirror[T] {
	return &mirror[T]{s: s, kind: kind, m: map[string]mirrored[T]{}}
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

// run follows the kind until ctx ends.
func (m *mirror[T]) run(ctx context.Context, log *slog.Logger) {
	defer m.unready()
	m.s.Follow(ctx, m.kind, Follower{
		Replace: func(evs []Event, _ int64) {
			fresh := make(map[string]mirrored[T], len(evs))
			for _, ev := range evs {
				// A record this replica cannot decode is left to etcd,
				// which gives readers the record and its error.
				if v, err := decodeJSON[T]([]byte(ev.key), ev.Value); err == nil {
					fresh[ev.Name] = mirrored[T]{v, ev.Rev}
				}
			}
			m.mu.Lock()
			m.m, m.ready = fresh, true
			m.mu.Unlock()
		},
		Apply: func(b WatchBatch) {
			m.mu.Lock()
			defer m.mu.Unlock()
			for _, ev := range b.Events {
				v, err := decodeJSON[T]([]byte(ev.key), ev.Value)
				if ev.Deleted || err != nil {
					delete(m.m, ev.Name) // left to etcd, as above
					continue
				}
				m.m[ev.Name] = mirrored[T]{v, ev.Rev}
			}
		},
		Relisting: func(err error) {
			m.unready()
			log.Warn("store mirror: relisting", "kind", m.kind, "err", err)
		},
	})
}

func (m *mirror[T]) unready() {
	m.mu.Lock()
	m.ready = false
	m.mu.Unlock()
}
