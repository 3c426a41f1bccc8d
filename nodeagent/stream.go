package nodeagent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/nodeagent/actions/backup"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// clientKeepalive is what detects a dead gateway. The heartbeats the agent
// sends keep unacknowledged data in flight, and with keepalive enabled gRPC
// sets TCP_USER_TIMEOUT to Timeout, so the kernel drops a connection whose
// peer vanished (power loss, partition: no FIN ever arrives) about 20 s after
// the first unanswered heartbeat. The ping interval itself stays above the
// 5-minute minimum that gRPC servers enforce by default: pinging more often
// on a stream where the server sends nothing would get the connection closed
// with "too_many_pings".
var clientKeepalive = keepalive.ClientParameters{
	Time:    5*time.Minute + 30*time.Second,
	Timeout: 20 * time.Second,
}

var errWelcomeTimeout = errors.New("no Welcome from the gateway in time")

// dialAgent prepares an mTLS connection to server with the node's current
// certificate. Each attempt gets a fresh ClientConn: a reused one would
// apply gRPC's own reconnect backoff (up to two minutes) underneath ours and
// fail fast while the server is already back.
func (a *Agent) dialAgent(server string) (*grpc.ClientConn, error) {
	creds := credentials.NewTLS(pki.AgentTLSConfig(serverHost(server), a.id.root, a.getCert))
	conn, err := grpc.NewClient(server,
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(clientKeepalive),
	)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", server, err)
	}
	return conn, nil
}

// getCert hands the TLS stack the newest certificate at every handshake, so
// a renewed certificate is used from the next connection on.
func (a *Agent) getCert() (*tls.Certificate, error) { return a.id.cert.Load(), nil }

// session is one welcomed stream.
type session struct {
	server string
	conn   *grpc.ClientConn
	stream grpc.BidiStreamingClient[agentpb.AgentMessage, agentpb.ServerMessage]
	mu     sync.Mutex // gRPC allows one concurrent sender per stream
}

// send writes m to the stream. A failure needs no handling beyond giving up
// on m: it aborts the stream, and the session's Recv then returns the real
// status and ends the session.
func (s *session) send(m *agentpb.AgentMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

// connectLoop keeps a session up until ctx is done.
//
// Servers are tried in order; a failure to get a Welcome moves on to the
// next one, while a session that was welcomed and then dropped is retried on
// the same server first, since it was healthy a moment ago. Delays grow
// exponentially with jitter (so a restarted gateway is not hit by every node
// in the same instant) and reset after each Welcome.
func (a *Agent) connectLoop(ctx context.Context, r *runner, g *gossip) {
	bo := backoff{min: a.timing.backoffMin, max: a.timing.backoffMax}
	idx := 0
	// The last refusal logged at error level, empty while accepted: a node
	// that stays refused retries every 30 s and would otherwise fill the log.
	refusal := ""
	onWelcome := func(server string) {
		bo.reset()
		if refusal != "" {
			a.log.Info("gateway accepts this node again", "server", server)
			refusal = ""
		}
	}
	for ctx.Err() == nil {
		server := a.cfg.Servers[idx]
		welcomed, err := a.session(ctx, server, r, g, onWelcome)
		if ctx.Err() != nil {
			return
		}
		if !welcomed {
			idx = (idx + 1) % len(a.cfg.Servers)
		}
		if isRefusal(err) {
			// The node was removed or fenced. Keep asking, slowly: an
			// operator may re-admit it, and then it must come back by itself.
			bo.max = a.timing.deniedBackoffMax
			if key := refusalKey(err); key != refusal {
				a.log.Error("gateway refuses this node (removed or fenced?); retrying slowly", "server", server, "err", err)
				refusal = key
			} else {
				a.log.Debug("gateway still refuses this node", "server", server)
			}
		} else {
			bo.max = a.timing.backoffMax
			a.log.Warn("stream down; reconnecting", "server", server, "welcomed", welcomed, "err", err)
		}
		sleepCtx(ctx, bo.next())
	}
}

// refusalKey identifies a refusal by the gateway's own code and message,
// without the wrapping that says at which protocol step it arrived (the same
// refusal can surface at Send or at Recv).
func refusalKey(err error) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		return st.Code().String() + ": " + st.Message()
	}
	return status.Code(err).String()
}

func isRefusal(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// session runs one stream: Hello, Welcome, then heartbeats out and tasks in
// until the stream fails or ctx is done. welcomed reports whether it got as
// far as the Welcome.
func (a *Agent) session(ctx context.Context, server string, r *runner, g *gossip, onWelcome func(server string)) (welcomed bool, err error) {
	conn, err := a.dialAgent(server)
	if err != nil {
		return false, err
	}
	defer conn.Close()

	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := agentpb.NewAgentGatewayClient(conn).Connect(sctx)
	if err != nil {
		return false, fmt.Errorf("connect to %s: %w", server, err)
	}

	hello := &agentpb.Hello{AgentVersion: a.cfg.Version, Facts: a.facts(), Protocol: agentpb.Protocol, MetricsAddress: a.MetricsAddr()}
	if g != nil {
		hello.GossipAddress = g.address()
	}
	if err := stream.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Hello{Hello: hello}}); err != nil {
		return false, fmt.Errorf("send Hello to %s: %w", server, streamError(stream, err))
	}

	timer := time.AfterFunc(a.timing.welcomeTimeout, func() { cancel(errWelcomeTimeout) })
	msg, err := stream.Recv()
	timer.Stop()
	if err != nil {
		if errors.Is(context.Cause(sctx), errWelcomeTimeout) {
			err = errWelcomeTimeout
		}
		return false, fmt.Errorf("wait for Welcome from %s: %w", server, err)
	}
	w := msg.GetWelcome()
	if w == nil {
		return false, fmt.Errorf("gateway %s answered Hello with %T instead of a Welcome", server, msg.GetMsg())
	}

	s := &session{server: server, conn: conn, stream: stream}
	a.setSession(s)
	defer a.clearSession(s)
	onWelcome(server)
	a.log.Info("connected", "server", server, "server_id", w.GetServerId())
	a.reportServices()
	if g != nil {
		g.welcome(w.GetGossipKey(), w.GetGossipSeeds())
	}

	var hb sync.WaitGroup
	hb.Go(func() { a.heartbeat(sctx, s, a.heartbeatInterval(w)) })
	defer func() {
		cancel(nil)
		hb.Wait()
	}()

	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("gateway closed the stream")
			}
			return true, fmt.Errorf("stream from %s: %w", server, err)
		}
		switch m := msg.GetMsg().(type) {
		case *agentpb.ServerMessage_Task:
			r.handle(sctx, m.Task)
		case *agentpb.ServerMessage_ScrapeAuth:
			if err := a.SetScrapeAuth(m.ScrapeAuth.GetTokenSha256()); err != nil {
				a.log.Error("scrape tokens from the server", "err", err)
			} else {
				a.log.Debug("scrape tokens updated", "count", a.tokens.Len())
			}
		case *agentpb.ServerMessage_Welcome:
			// Not expected after the first, but a new gossip key or seed list
			// is worth taking.
			a.log.Debug("repeated Welcome", "server", server)
			if g != nil {
				g.welcome(m.Welcome.GetGossipKey(), m.Welcome.GetGossipSeeds())
			}
		default:
			a.log.Warn("ignoring unknown message from gateway", "server", server)
		}
	}
}

// streamError turns the io.EOF that Send returns for an aborted stream into
// the stream's status, which only Recv reports.
func streamError(stream grpc.BidiStreamingClient[agentpb.AgentMessage, agentpb.ServerMessage], err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := stream.Recv(); rerr != nil && !errors.Is(rerr, io.EOF) {
		return rerr
	}
	return err
}

func (a *Agent) heartbeatInterval(w *agentpb.Welcome) time.Duration {
	d := time.Duration(w.GetHeartbeatIntervalMs()) * time.Millisecond
	if d == 0 {
		d = a.timing.defaultHeartbeat
	}
	return max(d, a.timing.minHeartbeat)
}

func (a *Agent) heartbeat(ctx context.Context, s *session, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			hb := &agentpb.Heartbeat{SentUnixNano: now.UnixNano()}
			if err := s.send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Heartbeat{Heartbeat: hb}}); err != nil {
				return
			}
		}
	}
}

func (a *Agent) facts() *agentpb.NodeFacts {
	f, err := a.cfg.Facts()
	if err != nil {
		// Partial facts are still worth sending; the scheduler treats missing
		// ones as unknown.
		a.log.Warn("detect node facts", "err", err)
	}
	// The key backup nodes let this node in with (made once).
	if f != nil && f.BackupSshPublicKey == "" {
		if pub, _, err := backup.EnsureSSHKey(a.cfg.DataDir); err != nil {
			a.log.Warn("backup ssh key", "err", err)
		} else {
			f.BackupSshPublicKey = pub
		}
	}
	return f
}

// sendBackupProgress forwards a running backup's progress (the backup
// module rate-limits it); it is dropped while disconnected.
func (a *Agent) sendBackupProgress(p *agentpb.BackupProgress) {
	a.mu.Lock()
	s := a.cur
	a.mu.Unlock()
	if s != nil {
		_ = s.send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_BackupProgress{BackupProgress: p}})
	}
}

func (a *Agent) setSession(s *session) {
	a.mu.Lock()
	a.cur = s
	a.mu.Unlock()
	a.connected.Store(true)
	a.metrics.connected.Set(1)
	a.readyOnce.Do(func() { close(a.ready) })
}

// publishChallenge calls the gateway's PublishChallenge on the connection
// of the current session.
func (a *Agent) publishChallenge(ctx context.Context, req *agentpb.PublishChallengeRequest) error {
	a.mu.Lock()
	s := a.cur
	a.mu.Unlock()
	if s == nil {
		return errors.New("not connected to a gateway")
	}
	_, err := agentpb.NewAgentGatewayClient(s.conn).PublishChallenge(ctx, req)
	return err
}

func (a *Agent) clearSession(s *session) {
	a.mu.Lock()
	if a.cur == s {
		a.cur = nil
	}
	a.mu.Unlock()
	a.connected.Store(false)
	a.metrics.connected.Set(0)
}

// sendResult sends res on the current stream, which need not be the one the
// task came in on: a task that was still applying when its stream dropped is
// ignored as in flight when the gateway re-sends it, so its result must go
// out on the new stream. Results are not buffered while disconnected; the
// gateway re-sends the task after reconnecting and the journal answers.
func (a *Agent) sendResult(res *agentpb.TaskResult) {
	a.mu.Lock()
	s := a.cur
	a.mu.Unlock()
	if s == nil {
		a.log.Debug("disconnected; result left to the journal", "task", res.GetTaskId())
		return
	}
	if err := s.send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Result{Result: res}}); err != nil {
		a.log.Debug("send result failed; left to the journal", "task", res.GetTaskId(), "err", err)
	}
}

// backoff yields exponentially growing delays with jitter.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur *= 2
	}
	b.cur = min(b.cur, b.max)
	// Half fixed, half random: spreads a fleet reconnecting at once without
	// ever retrying much sooner than the current step.
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleepCtx waits d; it reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
