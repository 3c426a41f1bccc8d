package controlplane

import (
	"context"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// election keeps this replica in the leader election for as long as it runs.
// The session's lease also carries the replica's registration, so a replica
// that dies disappears from both within ElectionTTL.
type election struct {
	s    *Server
	sess *store.Session
}

func (s *Server) newSession(ctx context.Context) (*store.Session, error) {
	sess, err := s.store.NewSession(ctx, s.cfg.ElectionTTL)
	if err != nil {
		return nil, err
	}
	rep := store.Replica{ID: s.id, APIAddr: s.apiLn.Addr().String(), AgentAddr: s.cfg.Advertise, GossipAddr: s.gossip.addr(), Version: s.cfg.Version}
	if err := s.store.RegisterReplica(ctx, rep, sess); err != nil {
		sess.Close()
		return nil, err
	}
	return sess, nil
}

func newElection(s *Server, sess *store.Session) *election {
	return &election{s: s, sess: sess}
}

// run campaigns, runs the controllers while leading, and campaigns again when
// leadership is lost (session expired, etcd partition). It returns when ctx
// ends.
func (e *election) run(ctx context.Context) error {
	for {
		if err := e.lead(ctx); err != nil && ctx.Err() == nil {
			e.s.log.Warn("leadership lost", "err", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-e.sess.Done():
			// The session's lease is gone: this replica's registration went
			// with it. Start over with a fresh session.
			sess, err := e.s.newSession(ctx)
			if err != nil {
				e.s.log.Error("renew etcd session", "err", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
				continue
			}
			e.sess = sess
		default:
		}
	}
}

func (e *election) lead(ctx context.Context) error {
	resign, err := e.sess.Campaign(ctx, e.s.id)
	if err != nil {
		return err
	}
	leadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-e.sess.Done():
			cancel()
		case <-leadCtx.Done():
		}
	}()
	e.s.leader.Store(true)
	e.s.metrics.leader.Set(1)
	e.s.metrics.leaderChanges.Inc()
	e.s.log.Info("elected leader: running controllers")
	defer func() {
		e.s.leader.Store(false)
		e.s.metrics.leader.Set(0)
		e.s.metrics.leaderChanges.Inc()
		// Only the leader reports nodes: a follower's stale figures
		// would contradict it.
		e.s.metrics.nodeUp.Reset()
		rctx, c := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer c()
		_ = resign(rctx)
	}()
	e.s.runControllers(leadCtx)
	return leadCtx.Err()
}

func (e *election) close() {
	// Closing the session revokes its lease: another replica can take over
	// at once instead of waiting for the TTL.
	_ = e.sess.Close()
}

// LeaderID returns the id of the replica that currently leads, or "" if none.
func (s *Server) LeaderID(ctx context.Context) (string, error) {
	return s.store.LeaderID(ctx)
}

// runControllers runs every leader-only loop until ctx ends.
func (s *Server) runControllers(ctx context.Context) { s.controllers.Lead(ctx) }
