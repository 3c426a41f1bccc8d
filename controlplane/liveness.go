package controlplane

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/controlplane/store"
)

// desiredStatus is the liveness rule, kept pure so it can be tested alone:
//
//   - never enrolled                     → PENDING
//   - lease held, gossip agrees          → READY
//   - lease held, gossip says it is dead → SUSPECT (the lease will tell)
//   - lease gone                         → DOWN
//
// The lease is the authority because only the gateway that holds the node's
// stream keeps it alive, and only while heartbeats arrive. Gossip is a
// second opinion that arrives faster.
func desiredStatus(enrolled, leaseHeld, gossipDead bool) store.NodeStatus {
	switch {
	case !enrolled:
		return store.NodePending
	case !leaseHeld:
		return store.NodeDown
	case gossipDead:
		return store.NodeSuspect
	default:
		return store.NodeReady
	}
}

// runLiveness turns lease and gossip signals into node status, on the leader
// only. It re-evaluates on every change of a liveness key and at least once
// a second (gossip changes are not in etcd).
func (s *Server) runLiveness(ctx context.Context) {
	watch := s.cli.Watch(clientv3.WithRequireLeader(ctx), store.PrefixAlive, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if err := s.reconcileLiveness(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("liveness pass", "err", err)
		}
		// At most one pass per livenessMinInterval however many nodes come
		// and go at once: a thousand agents reconnecting after a restart
		// cost a few passes, not a thousand.
		select {
		case <-ctx.Done():
			return
		case <-time.After(livenessMinInterval):
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				break wait
			case resp, ok := <-watch:
				if !ok {
					watch = s.cli.Watch(clientv3.WithRequireLeader(ctx), store.PrefixAlive, clientv3.WithPrefix(), clientv3.WithKeysOnly())
					break wait
				}
				if len(resp.Events) > 0 {
					break wait
				}
			}
		}
	}
}

// livenessMinInterval spaces liveness passes.
const livenessMinInterval = 200 * time.Millisecond

func (s *Server) reconcileLiveness(ctx context.Context) error {
	nodes, err := s.store.LiveStates(ctx, s.liveStates)
	if err != nil {
		return err
	}
	s.liveStates = nodes
	counts := map[store.NodeStatus]int{}
	for _, n := range nodes {
		// A node counts as enrolled once its agent has said hello: between
		// the certificate and the first stream it is still PENDING, not DOWN.
		enrolled := !n.State.EnrolledAt.IsZero() && !n.State.LastSeen.IsZero()
		// A gossip verdict older than the node's latest hello is stale: the
		// agent has come back on a new stream since.
		since, dead := s.gossip.deadSince(n.Name)
		want := desiredStatus(enrolled, n.Alive, dead && since.After(n.State.LastSeen))
		counts[want]++
		if n.State.Status == want {
			continue
		}
		from := n.State.Status
		now := time.Now().UTC()
		ev := store.NewAuditEvent("system", s.id, "node.status", n.Name, string(want))
		err := s.store.UpdateNodeState(ctx, n.Name, func(st *store.NodeState) bool {
			if st.Status == want {
				return false
			}
			st.Status, st.StatusChangedAt = want, now
			return true
		}, store.AuditOp(ev))
		if err != nil {
			s.log.Warn("set node status", "node", n.Name, "status", want, "err", err)
			continue
		}
		s.log.Info("node status", "node", n.Name, "from", from, "to", want)
	}
	for _, st := range []store.NodeStatus{store.NodePending, store.NodeReady, store.NodeSuspect, store.NodeDown} {
		s.metrics.nodes.WithLabelValues(string(st)).Set(float64(counts[st]))
	}
	return nil
}
