package controlplane

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// agentStream is one node's live Connect stream on this replica.
type agentStream struct {
	node   string
	cancel context.CancelCauseFunc

	sendMu sync.Mutex
	srv    agentpb.AgentGateway_ConnectServer

	hbMu          sync.Mutex
	lastHeartbeat time.Time

	// For the delivery check (delivery.go).
	connectedAt time.Time
	sent        sentTasks
	stalled     atomic.Bool
}

func (a *agentStream) send(m *agentpb.ServerMessage) error {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	return a.srv.Send(m)
}

func (a *agentStream) heartbeat() {
	a.hbMu.Lock()
	a.lastHeartbeat = time.Now()
	a.hbMu.Unlock()
}

func (a *agentStream) sinceHeartbeat() time.Duration {
	a.hbMu.Lock()
	defer a.hbMu.Unlock()
	return time.Since(a.lastHeartbeat)
}

var (
	errReplaced = errors.New("replaced by a newer stream from the same node")
	errRemoved  = errors.New("node removed from the cluster")
)

// Connect runs one node's stream:
//
//  1. the agent says Hello (facts); we record them and answer Welcome;
//  2. the node's liveness key is bound to a fresh lease, which is kept alive
//     only while heartbeats keep arriving;
//  3. every task in the node's queue is sent, then every task added later
//     (a watch from the snapshot's revision, so none falls in between);
//  4. results are written back, dequeuing the task in the same transaction.
//
// Tasks stay queued until their result is stored, so a stream that breaks at
// any point loses nothing: the next stream, on any replica, sends them again
// and the agent's journal answers for those it already ran.
func (g *gateway) Connect(srv agentpb.AgentGateway_ConnectServer) error {
	id := identityFrom(srv.Context())
	ctx, cancel := context.WithCancelCause(srv.Context())
	defer cancel(nil)
	log := g.log.With("node", id.name)

	first, err := recvWithin(srv, 10*time.Second)
	if err != nil {
		return status.Error(codes.InvalidArgument, "expected hello")
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message must be hello")
	}
	if p := hello.GetProtocol(); p < agentpb.MinProtocol {
		log.Error("agent refused: its protocol is too old; upgrade npanel on the node", "protocol", p, "min", agentpb.MinProtocol, "version", hello.GetAgentVersion())
		return status.Errorf(codes.FailedPrecondition, "agent protocol %d (version %q) is older than this server reads (%d): upgrade npanel on the node", p, hello.GetAgentVersion(), agentpb.MinProtocol)
	}
	a := &agentStream{node: id.name, cancel: cancel, srv: srv, connectedAt: time.Now()}
	a.heartbeat()
	if err := g.recordHello(ctx, id.name, id.cert.RawSubjectPublicKeyInfo, hello); err != nil {
		return err
	}
	g.attach(a)
	defer g.detach(a)

	lease, err := g.store.GrantLease(ctx, g.s.cfg.LeaseTTL)
	if err != nil {
		return status.Error(codes.Unavailable, "cluster store unavailable")
	}
	if err := g.store.MarkAlive(ctx, id.name, g.s.id, lease); err != nil {
		return status.Error(codes.Unavailable, "cluster store unavailable")
	}
	seeds, err := g.gossipSeeds(ctx)
	if err != nil {
		return status.Error(codes.Unavailable, "cluster store unavailable")
	}
	err = a.send(&agentpb.ServerMessage{Msg: &agentpb.ServerMessage_Welcome{Welcome: &agentpb.Welcome{
		ServerId:            g.s.id,
		HeartbeatIntervalMs: uint32(g.s.cfg.HeartbeatInterval / time.Millisecond),
		GossipSeeds:         seeds,
		GossipKey:           g.s.sec.GossipKey,
	}}})
	if err != nil {
		return err
	}
	scrape := g.s.scrape.current()
	if err := a.send(scrapeAuthMsg(scrape)); err != nil {
		return err
	}
	g.s.metrics.streams.Inc()
	defer g.s.metrics.streams.Dec()
	log.Info("agent connected", "source", peerAddr(srv.Context()), "version", hello.GetAgentVersion())

	go g.keepAlive(ctx, a, lease)
	go g.watchRemoval(ctx, a)
	go g.pushScrapeAuth(ctx, a, scrape)
	go func() {
		if err := g.sendTasks(ctx, a); err != nil && ctx.Err() == nil {
			cancel(err)
		}
	}()

	// Recv does not watch our context, only the stream's: run it aside so
	// that removal or replacement can end the handler, which ends the stream.
	recvErr := make(chan error, 1)
	go func() { recvErr <- g.receive(ctx, a) }()
	select {
	case err = <-recvErr:
	case <-ctx.Done():
	}
	// Best effort: the node is gone from this replica; record when.
	lctx, c := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer c()
	_ = g.store.UpdateNodeState(lctx, id.name, func(st *store.NodeState) bool {
		st.LastSeen = a.lastSeen()
		g.clearStall(st)
		return true
	})
	cause := context.Cause(ctx)
	log.Info("agent disconnected", "err", err, "cause", cause)
	switch {
	case errors.Is(cause, errRemoved):
		return status.Error(codes.PermissionDenied, "node removed from the cluster")
	case errors.Is(cause, errReplaced):
		return status.Error(codes.Aborted, "replaced by a newer stream")
	}
	if err != nil && !errors.Is(err, io.EOF) && status.Code(err) != codes.Canceled {
		return err
	}
	return nil
}

func (a *agentStream) lastSeen() time.Time {
	a.hbMu.Lock()
	defer a.hbMu.Unlock()
	return a.lastHeartbeat.UTC()
}

func recvWithin(srv agentpb.AgentGateway_ConnectServer, d time.Duration) (*agentpb.AgentMessage, error) {
	type res struct {
		m   *agentpb.AgentMessage
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := srv.Recv(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(d):
		return nil, errors.New("timeout")
	}
}

// recordHello stores what the agent reports about its host, and the public
// key of the certificate it connected with, which secrets for the node are
// sealed to (pki.Seal).
func (g *gateway) recordHello(ctx context.Context, node string, pubKey []byte, h *agentpb.Hello) error {
	f := h.GetFacts()
	facts := store.NodeFacts{
		OS:           f.GetOs(),
		Kernel:       f.GetKernel(),
		Arch:         f.GetArch(),
		CPUs:         int(f.GetCpus()),
		MemoryBytes:  int64(f.GetMemoryBytes()),
		DiskBytes:    int64(f.GetDiskBytes()),
		Capabilities: f.GetCapabilities(),

		BackupSSHPublicKey: f.GetBackupSshPublicKey(),
	}
	now := time.Now().UTC()
	err := g.store.UpdateNodeState(ctx, node, func(st *store.NodeState) bool {
		st.AgentVersion = h.GetAgentVersion()
		st.Facts = facts
		st.GossipAddr = h.GetGossipAddress()
		st.MetricsAddr = h.GetMetricsAddress()
		st.LastSeen = now
		st.PublicKey = pubKey
		st.DeliveryStall = nil // a new stream starts afresh
		return true
	})
	if errors.Is(err, store.ErrNotFound) {
		return status.Errorf(codes.PermissionDenied, "node %q is not a member of this cluster", node)
	}
	if err != nil {
		return status.Error(codes.Unavailable, "cluster store unavailable")
	}
	return nil
}

// attach makes a the node's stream on this replica; an older one is ended, so
// that a node never has two streams here racing to apply its results.
func (g *gateway) attach(a *agentStream) {
	g.mu.Lock()
	old := g.streams[a.node]
	g.streams[a.node] = a
	g.mu.Unlock()
	if old != nil {
		old.cancel(errReplaced)
	}
}

func (g *gateway) detach(a *agentStream) {
	g.mu.Lock()
	if g.streams[a.node] == a {
		delete(g.streams, a.node)
	}
	g.mu.Unlock()
}

func (g *gateway) gossipSeeds(ctx context.Context) ([]string, error) {
	reps, err := g.store.Replicas(ctx)
	if err != nil {
		return nil, err
	}
	var seeds []string
	for _, r := range reps {
		if r.GossipAddr != "" {
			seeds = append(seeds, r.GossipAddr)
		}
	}
	return seeds, nil
}

// keepAlive keeps the node's liveness lease alive while heartbeats arrive.
// It uses the client's multiplexed KeepAlive (all leases of this replica on
// one stream, a renewal every TTL/3), not a request per heartbeat: at a
// thousand nodes that is the difference between idle and busy. When
// heartbeats stop (agent dead, network cut with TCP still open) the
// keepalive is cancelled and the lease runs out LeaseTTL later: the node
// turns DOWN. When they resume, or the lease was lost meanwhile (an etcd
// leader change, a long pause), a fresh lease is bound.
func (g *gateway) keepAlive(ctx context.Context, a *agentStream, lease store.LeaseID) {
	interval := g.s.cfg.HeartbeatInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	var stop context.CancelFunc
	var lost <-chan struct{}
	start := func() {
		kctx, cancel := context.WithCancel(ctx)
		done, err := g.store.KeepAlive(kctx, lease)
		if err != nil {
			cancel()
			return
		}
		stop, lost = cancel, done
	}
	start()
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-lost:
			// The keepalive ended on its own: the lease expired or was
			// revoked. Bind a new one if the node is still talking.
			stop, lost = nil, nil
		}
		beating := a.sinceHeartbeat() <= 3*interval
		switch {
		case beating && stop == nil:
			l, err := g.store.GrantLease(ctx, g.s.cfg.LeaseTTL)
			if err != nil {
				continue
			}
			if err := g.store.MarkAlive(ctx, a.node, g.s.id, l); err != nil {
				continue
			}
			lease = l
			start()
		case !beating && stop != nil:
			stop()
			stop, lost = nil, nil
		}
	}
}

// watchRemoval ends the stream as soon as the node's state is deleted or no
// longer accepts the certificate the stream was opened with.
func (g *gateway) watchRemoval(ctx context.Context, a *agentStream) {
	id := identityFrom(a.srv.Context())
	for b := range g.store.Watch(ctx, store.KindNodeState(a.node), 0) {
		for _, ev := range b.Events {
			if ev.Deleted {
				a.cancel(errRemoved)
				return
			}
			st, err := store.DecodeNodeState(ev.Value)
			if err == nil && !st.AcceptsSerial(serialHex(id.cert)) {
				a.cancel(errRemoved)
				return
			}
		}
	}
}

// sendTasks sends the queue snapshot, then follows the queue from the
// snapshot's revision.
func (g *gateway) sendTasks(ctx context.Context, a *agentStream) error {
	tasks, rev, err := g.store.PendingTasks(ctx, a.node)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		if err := a.send(taskMsg(t)); err != nil {
			return err
		}
		a.sent.add(t.GetId())
	}
	for b := range g.store.Watch(ctx, store.KindNodeQueue(a.node), rev, store.WithoutDeletes()) {
		if b.Err != nil {
			// Compacted past our revision or lost the etcd leader: end the
			// stream; the agent reconnects and gets a fresh snapshot.
			return b.Err
		}
		for _, ev := range b.Events {
			if !ev.Created {
				continue // rewritten entry, already sent
			}
			t, err := store.DecodeQueued(ev.Value)
			if err != nil {
				g.log.Error("undecodable queue entry", "node", a.node, "task", ev.Name, "err", err)
				continue
			}
			if err := a.send(taskMsg(t)); err != nil {
				return err
			}
			a.sent.add(t.GetId())
		}
	}
	return ctx.Err()
}

// pushScrapeAuth sends the node the scrape tokens' digests whenever they
// change after sent; a failed send ends the stream.
func (g *gateway) pushScrapeAuth(ctx context.Context, a *agentStream, sent *scrapeSet) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sent.changed:
		}
		sent = g.s.scrape.current()
		if err := a.send(scrapeAuthMsg(sent)); err != nil {
			a.cancel(err)
			return
		}
	}
}

func scrapeAuthMsg(set *scrapeSet) *agentpb.ServerMessage {
	digests := make([][]byte, len(set.digests))
	for i := range set.digests {
		digests[i] = set.digests[i][:]
	}
	return &agentpb.ServerMessage{Msg: &agentpb.ServerMessage_ScrapeAuth{ScrapeAuth: &agentpb.ScrapeAuth{TokenSha256: digests}}}
}

func taskMsg(t *agentpb.Task) *agentpb.ServerMessage {
	return &agentpb.ServerMessage{Msg: &agentpb.ServerMessage_Task{Task: t}}
}

func (g *gateway) receive(ctx context.Context, a *agentStream) error {
	source := peerAddr(a.srv.Context())
	for {
		m, err := a.srv.Recv()
		if err != nil {
			return err
		}
		switch msg := m.GetMsg().(type) {
		case *agentpb.AgentMessage_Heartbeat:
			a.heartbeat()
		case *agentpb.AgentMessage_Result:
			a.heartbeat()
			g.complete(ctx, a.node, source, msg.Result)
		case *agentpb.AgentMessage_Services:
			g.recordServices(ctx, a.node, msg.Services)
		case *agentpb.AgentMessage_BackupProgress:
			g.recordBackupProgress(ctx, a.node, msg.BackupProgress)
		case *agentpb.AgentMessage_Hello:
			// A second hello refreshes the facts (services installed since).
			if err := g.recordHello(ctx, a.node, identityFrom(a.srv.Context()).cert.RawSubjectPublicKeyInfo, msg.Hello); err != nil {
				return err
			}
		}
	}
}

// recordServices stores a node's service report. A failure only delays the
// operator's view until the next report, so it does not end the stream.
func (g *gateway) recordServices(ctx context.Context, node string, r *agentpb.ServiceReport) {
	rep := store.NodeServices{Node: node, ReportedAt: time.Now(), Services: make([]store.ServiceStatus, 0, len(r.GetServices()))}
	for _, s := range r.GetServices() {
		st := store.ServiceStatus{
			Name:     s.GetName(),
			State:    s.GetState(),
			Version:  s.GetVersion(),
			Listen:   s.GetListen(),
			Error:    s.GetError(),
			Restarts: int(s.GetRestarts()),
		}
		if ns := s.GetSinceUnixNano(); ns > 0 {
			st.Since = time.Unix(0, ns).UTC()
		}
		rep.Services = append(rep.Services, st)
	}
	if err := g.store.PutServices(ctx, rep); err != nil {
		g.log.Warn("store service report", "node", node, "err", err)
	}
}

func (g *gateway) complete(ctx context.Context, node, source string, r *agentpb.TaskResult) {
	ev := store.NewAuditEvent("node:"+node, source, "task", "", "")
	applied, err := g.store.CompleteTask(ctx, node, r, ev)
	if err != nil {
		// Not fatal: the task stays queued and is sent again on the next
		// stream; the agent's journal returns the same result.
		g.log.Warn("store task result", "node", node, "task", r.GetTaskId(), "err", err)
		return
	}
	if applied {
		g.s.metrics.tasksCompleted.WithLabelValues(r.GetStatus().String()).Inc()
	} else {
		g.s.metrics.duplicateResults.Inc()
	}
}
