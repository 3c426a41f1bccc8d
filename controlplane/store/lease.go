package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// LeaseID names a lease: the records bound to it (a node's liveness, a
// replica's registration) are deleted when it expires or is revoked.
type LeaseID int64

// GrantLease grants a lease of ttl (whole seconds).
func (s *Store) GrantLease(ctx context.Context, ttl time.Duration) (LeaseID, error) {
	l, err := s.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return 0, fmt.Errorf("grant lease: %w", err)
	}
	return LeaseID(l.ID), nil
}

// KeepAlive renews the lease until ctx ends. All leases of a client share
// one keepalive stream, a renewal every TTL/3. The returned channel is
// closed when renewal stops: ctx ended, or the lease expired or was
// revoked.
func (s *Store) KeepAlive(ctx context.Context, id LeaseID) (<-chan struct{}, error) {
	ch, err := s.cli.KeepAlive(ctx, clientv3.LeaseID(id))
	if err != nil {
		return nil, fmt.Errorf("keep lease alive: %w", err)
	}
	done := make(chan struct{})
	go func() {
		for range ch { // drain: the client blocks if responses pile up
		}
		close(done)
	}()
	return done, nil
}

// Session is this replica's presence in the cluster: a lease kept alive
// while the replica runs, which its registration and its candidacy for
// leader are bound to.
type Session struct {
	s    *Store
	sess *concurrency.Session
}

// NewSession opens a session whose lease expires ttl after the replica
// stops renewing it.
func (s *Store) NewSession(ctx context.Context, ttl time.Duration) (*Session, error) {
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(int(ttl/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("etcd session: %w", err)
	}
	return &Session{s: s, sess: sess}, nil
}

// Done is closed when the session's lease is gone.
func (se *Session) Done() <-chan struct{} { return se.sess.Done() }

// Close revokes the session's lease: what is bound to it goes at once,
// not after the TTL.
func (se *Session) Close() error { return se.sess.Close() }

// RegisterReplica records r for as long as se lives.
func (s *Store) RegisterReplica(ctx context.Context, r Replica, se *Session) error {
	_, err := s.cli.Put(ctx, prefixReplicas+r.ID, mustJSON(r), clientv3.WithLease(se.sess.Lease()))
	if err != nil {
		return fmt.Errorf("register replica %s: %w", r.ID, err)
	}
	return nil
}

// Campaign blocks until se's replica, id, is the leader, or ctx ends.
// resign gives leadership up at once instead of when the session ends.
func (se *Session) Campaign(ctx context.Context, id string) (resign func(context.Context) error, err error) {
	el := concurrency.NewElection(se.sess, prefixElection)
	if err := el.Campaign(ctx, id); err != nil {
		return nil, err
	}
	return el.Resign, nil
}

// LeaderID is the id of the replica that leads, or "" if none does.
func (s *Store) LeaderID(ctx context.Context) (string, error) {
	resp, err := s.cli.Get(ctx, prefixElection, clientv3.WithFirstCreate()...)
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// IsUnavailable reports whether err means etcd could not answer (no
// leader, a timeout): the caller may try again.
func IsUnavailable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, rpctypes.ErrGRPCNoLeader) ||
		errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout) || errors.Is(err, rpctypes.ErrGRPCTimeout)
}
