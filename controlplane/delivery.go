package controlplane

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/controlplane/store"
)

// Delivery check. A task is delivered when this replica's stream for its
// node has sent it; the queue entry then stays until the result arrives,
// which for a long task is a while, so the check does not look at queue
// age alone but at the age of the oldest queued task the stream has not
// sent. That age grows only when the stream's queue watch is stuck (the
// failure of issue 23, where pings stayed PENDING on READY nodes): past
// TaskStallAfter the node is marked, the liveness controller turns it
// SUSPECT with the reason, and the metrics below say so.

type deliveryMetrics struct {
	stalled prometheus.Gauge
	oldest  prometheus.Gauge
}

func newDeliveryMetrics(reg *prometheus.Registry) *deliveryMetrics {
	m := &deliveryMetrics{
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "npanel", Name: "task_delivery_stalled",
			Help: "Nodes streaming to this replica with a queued task unsent for longer than the stall threshold.",
		}),
		oldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "npanel", Name: "task_delivery_oldest_unsent_seconds",
			Help: "Age of the oldest queued task not yet sent to its node's stream on this replica.",
		}),
	}
	reg.MustRegister(m.stalled, m.oldest)
	return m
}

// sentTasks remembers which queued tasks a stream has sent, and when.
type sentTasks struct {
	mu  sync.Mutex
	ids map[string]time.Time
}

func (st *sentTasks) add(id string) {
	st.mu.Lock()
	if st.ids == nil {
		st.ids = map[string]time.Time{}
	}
	st.ids[id] = time.Now()
	st.mu.Unlock()
}

// oldestUnsent returns the oldest of queued (oldest first) that was not
// sent, and forgets sent ids that left the queue before checkStart.
func (st *sentTasks) oldestUnsent(queued []string, checkStart time.Time) (string, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	in := make(map[string]bool, len(queued))
	oldest, found := "", false
	for _, id := range queued {
		in[id] = true
		if _, sent := st.ids[id]; !sent && !found {
			oldest, found = id, true
		}
	}
	for id, at := range st.ids {
		if !in[id] && at.Before(checkStart) {
			delete(st.ids, id)
		}
	}
	return oldest, found
}

// checkDelivery runs the delivery check on this replica until ctx ends.
func (g *gateway) checkDelivery(ctx context.Context) {
	every := min(max(g.s.cfg.TaskStallAfter/3, 100*time.Millisecond), 10*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.deliveryPass(ctx)
	}
}

func (g *gateway) deliveryPass(ctx context.Context) {
	start := time.Now()
	queues, err := g.store.QueuedTaskIDs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			g.log.Warn("delivery check: read queues", "err", err)
		}
		return
	}
	g.mu.Lock()
	streams := make([]*agentStream, 0, len(g.streams))
	for _, a := range g.streams {
		streams = append(streams, a)
	}
	g.mu.Unlock()
	var oldestAge time.Duration
	stalled := 0
	for _, a := range streams {
		id, ok := a.sent.oldestUnsent(queues[a.node], start)
		var age time.Duration
		if ok {
			if created, valid := store.TaskCreatedAt(id); valid {
				// Not older than the stream: its snapshot sends what was
				// queued before it, and a fresh stream has not had time.
				if created.Before(a.connectedAt) {
					created = a.connectedAt
				}
				age = start.Sub(created)
			}
		}
		oldestAge = max(oldestAge, age)
		isStalled := age > g.s.cfg.TaskStallAfter
		if isStalled {
			stalled++
		}
		g.markStall(ctx, a, isStalled, id, start.Add(-age))
	}
	g.delivery.stalled.Set(float64(stalled))
	g.delivery.oldest.Set(oldestAge.Seconds())
}

// markStall records a change of a stream's stall state on its node, for
// the liveness controller; no write while nothing changes.
func (g *gateway) markStall(ctx context.Context, a *agentStream, stalled bool, oldest string, since time.Time) {
	if a.stalled.Load() == stalled {
		return
	}
	err := g.store.UpdateNodeState(ctx, a.node, func(st *store.NodeState) bool {
		if !stalled {
			if st.DeliveryStall == nil || st.DeliveryStall.Replica != g.s.id {
				return false
			}
			st.DeliveryStall = nil
			return true
		}
		st.DeliveryStall = &store.DeliveryStall{Since: since.UTC(), Replica: g.s.id, OldestTask: oldest}
		return true
	})
	if err != nil {
		g.log.Warn("delivery check: mark node", "node", a.node, "stalled", stalled, "err", err)
		return
	}
	a.stalled.Store(stalled)
	if stalled {
		g.log.Error("task delivery stalled: a queued task has not been sent to the node", "node", a.node,
			"task", oldest, "since", since.UTC())
	} else {
		g.log.Info("task delivery resumed", "node", a.node)
	}
}

// clearStall removes this replica's stall mark from a node whose stream
// ends here: the next stream, wherever it runs, starts afresh.
func (g *gateway) clearStall(st *store.NodeState) {
	if st.DeliveryStall != nil && st.DeliveryStall.Replica == g.s.id {
		st.DeliveryStall = nil
	}
}
