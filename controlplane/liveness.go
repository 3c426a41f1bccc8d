package controlplane

import (
	"context"
	"fmt"
	"time"

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

// suspectReason says why a node that desiredStatus finds READY or SUSPECT
// is SUSPECT, and turns a READY node whose task delivery has stalled
// SUSPECT: its lease is held and gossip hears it, yet the tasks queued for
// it are not being sent.
func suspectReason(want store.NodeStatus, gossipDead bool, stall *store.DeliveryStall) (store.NodeStatus, string) {
	switch {
	case want == store.NodeSuspect && gossipDead:
		return want, "gossip reports the agent unreachable"
	case (want == store.NodeReady || want == store.NodeSuspect) && stall != nil:
		return store.NodeSuspect, "task delivery stalled: task " + stall.OldestTask + " queued since " +
			stall.Since.Format(time.RFC3339) + " has not been sent to the node by replica " + stall.Replica
	}
	return want, ""
}

// runLiveness turns lease and gossip signals into node status, on the leader
// only. It reads through the gateway's etcd client, like the gateway, so
// that API load cannot delay it.
func (s *Server) runLiveness(ctx context.Context) {
	for ctx.Err() == nil {
		if err := s.followLiveness(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("liveness", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// followLiveness reads every node's liveness once and follows it by watch,
// re-evaluating on every change and at least once a second (gossip changes
// are not in etcd), at most once per livenessMinInterval: a thousand agents
// reconnecting after a restart cost a few passes, not a thousand. It
// returns when a watch breaks (compaction, etcd leader loss).
func (s *Server) followLiveness(ctx context.Context) error {
	set, err := s.gateway.store.ReadLiveSet(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := s.gateway.store.WatchLiveSet(wctx, set.Rev)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	due, last := true, time.Time{}
	for {
		var soon <-chan time.Time
		if due {
			if wait := livenessMinInterval - time.Since(last); wait > 0 {
				soon = time.After(wait)
			} else {
				s.reconcileLiveness(ctx, set)
				due, last = false, time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			due = true
		case <-soon:
		case b, ok := <-events:
			if !ok || b.Err != nil {
				return fmt.Errorf("watch node liveness: %v", b.Err)
			}
			for _, ev := range b.Events {
				if err := set.Apply(ev); err != nil {
					return err
				}
			}
			due = due || len(b.Events) > 0
		}
	}
}

// livenessMinInterval spaces liveness passes.
const livenessMinInterval = 200 * time.Millisecond

// reconcileLiveness sets every node's status from set; a failed write is
// logged and retried by a later pass.
func (s *Server) reconcileLiveness(ctx context.Context, set *store.LiveSet) {
	nodes := set.Nodes()
	counts := map[store.NodeStatus]int{}
	seen := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		// A node counts as enrolled once its agent has said hello: between
		// the certificate and the first stream it is still PENDING, not DOWN.
		enrolled := !n.State.EnrolledAt.IsZero() && !n.State.LastSeen.IsZero()
		// A gossip verdict older than the node's latest hello is stale: the
		// agent has come back on a new stream since.
		since, dead := s.gossip.deadSince(n.Name)
		gossipDead := dead && since.After(n.State.LastSeen)
		want, reason := suspectReason(desiredStatus(enrolled, n.Alive, gossipDead), gossipDead, n.State.DeliveryStall)
		counts[want]++
		// A declared node whose agent never said hello is not down: it has
		// no series until it joins (NodeDown would page for it).
		if enrolled {
			// Only READY is up: a SUSPECT node still holds its lease, but
			// gossip cannot reach it or its tasks are not being sent, so
			// counting it up would hide exactly the nodes to look at.
			up := 0.0
			if want == store.NodeReady {
				up = 1
			}
			s.metrics.nodeUp.WithLabelValues(n.Name).Set(up)
			seen[n.Name] = true
		}
		if n.State.Status == want && n.State.StatusReason == reason {
			continue
		}
		from := n.State.Status
		now := time.Now().UTC()
		ev := store.NewAuditEvent("system", s.id, "node.status", n.Name, string(want))
		if reason != "" {
			ev.Detail = map[string]string{"reason": reason}
		}
		err := s.gateway.store.UpdateNodeState(ctx, n.Name, func(st *store.NodeState) bool {
			if st.Status == want && st.StatusReason == reason {
				return false
			}
			if st.Status != want {
				st.StatusChangedAt = now
			}
			st.Status, st.StatusReason = want, reason
			return true
		}, store.AuditOp(ev))
		if err != nil {
			s.log.Warn("set node status", "node", n.Name, "status", want, "err", err)
			continue
		}
		set.NoteStatus(n.Name, want, reason, now)
		s.log.Info("node status", "node", n.Name, "from", from, "to", want, "reason", reason)
	}
	for _, st := range []store.NodeStatus{store.NodePending, store.NodeReady, store.NodeSuspect, store.NodeDown} {
		s.metrics.nodes.WithLabelValues(string(st)).Set(float64(counts[st]))
	}
	// Removed nodes leave; a reset first would let a scrape in between
	// see no node at all.
	for name := range s.nodeUpNames {
		if !seen[name] {
			s.metrics.nodeUp.DeleteLabelValues(name)
		}
	}
	s.nodeUpNames = seen
}
