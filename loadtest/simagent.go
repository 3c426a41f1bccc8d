package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// simulatedAgent is a SIMULATION of a node agent, not an agent: it touches
// nothing on this host. It speaks the real gateway protocol end to end —
// a join token from createJoinToken, the real Enroll RPC with a fresh key
// and CSR, an mTLS Connect stream with pki.AgentTLSConfig, Hello, Welcome,
// heartbeats at the interval the Welcome asks for, one TaskResult per task —
// but its executor only sleeps for the configured latency and then reports
// success with a plausible result for the action. There is no journal and
// no gossip; tasks are deduplicated by id in memory, as the real agent does
// with its journal, so a task the gateway re-sends after a reconnect is
// answered again instead of executed twice.
type simulatedAgent struct {
	node    string
	gateway string // host:port
	latency time.Duration

	root *x509.Certificate
	cert *tls.Certificate

	stats *agentStats

	mu        sync.Mutex
	cur       *simSession                    // the welcomed stream results go to
	done      map[string]*agentpb.TaskResult // finished tasks, for re-sends
	doneOrder []string                       // ids in done, oldest first
	inflight  map[string]bool
	uids      map[string]uint32 // username -> uid, stable per node
	nextUID   uint32
	slots     chan struct{}
}

// agentStats is shared by all simulated agents.
type agentStats struct {
	tasks      atomic.Int64 // Task messages received
	duplicates atomic.Int64 // of which re-sends of a task in flight or done
	results    atomic.Int64 // TaskResults sent
	failed     atomic.Int64 // of which FAILED (unknown action)
	reconnects atomic.Int64 // streams that dropped and were reopened
	connected  atomic.Int64 // agents holding a welcomed stream right now

	mu         sync.Mutex
	errSamples []string // the first few stream errors, for the report
}

func (s *agentStats) streamError(node string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errSamples) < 10 {
		s.errSamples = append(s.errSamples, node+": "+err.Error())
	}
}

// simConcurrency mirrors the real agent's default number of tasks applied
// at once. Like the real agent, a simulated one stops reading its stream
// while every slot is busy, which pushes back on the gateway.
const simConcurrency = 8

// simFacts are the node facts every simulated agent reports: a typical
// hosting node with the full service set installed.
func simFacts() *agentpb.NodeFacts {
	return &agentpb.NodeFacts{
		Os:           "AlmaLinux 9.4 (Seafoam Ocelot) [simulated]",
		Kernel:       "5.14.0-427.13.1.el9_4.x86_64",
		Arch:         "x86_64",
		Cpus:         8,
		MemoryBytes:  32 << 30,
		DiskBytes:    2 << 40,
		Capabilities: []string{"nginx", "php-fpm", "pdns_server", "mariadbd", "exim", "dovecot", "rsync"},
	}
}

// simRoles are the roles every simulated node is declared with.
var simRoles = []string{"WEB", "DNS", "MAIL", "DB"}

// enrolSimAgent declares node through GraphQL and enrols it over the real
// Enroll RPC. The returned agent is not connected yet; see run.
func enrolSimAgent(ctx context.Context, admin *client.Client, gateway, node string, latency time.Duration, stats *agentStats) (*simulatedAgent, error) {
	host, _, err := net.SplitHostPort(gateway)
	if err != nil {
		return nil, fmt.Errorf("gateway address %q: %w", gateway, err)
	}
	tok, err := admin.CreateJoinToken(ctx, node, "127.0.0.1", simRoles, map[string]string{"loadtest": "sim"})
	if err != nil {
		return nil, fmt.Errorf("create join token for %s: %w", node, err)
	}
	claims, err := pki.ParseJoinToken(tok.Token)
	if err != nil {
		return nil, fmt.Errorf("join token for %s: %w", node, err)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewNodeCSR(key, node, claims.Hosts)
	if err != nil {
		return nil, err
	}

	// The enrolment dial pins the root by the fingerprint in the token, as
	// the real agent's does.
	var pinned atomic.Pointer[x509.Certificate]
	creds := credentials.NewTLS(pki.EnrollClientTLSConfig(host, claims.RootFingerprint,
		func(root *x509.Certificate) { pinned.Store(root) }))
	conn, err := grpc.NewClient(gateway, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", gateway, err)
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := agentpb.NewAgentGatewayClient(conn).Enroll(rctx, &agentpb.EnrollRequest{JoinToken: tok.Token, Csr: csr.Raw})
	if err != nil {
		return nil, fmt.Errorf("enrol %s: %w", node, err)
	}
	root, err := x509.ParseCertificate(resp.GetRoot())
	if err != nil {
		return nil, fmt.Errorf("enrol %s: parse root: %w", node, err)
	}
	if p := pinned.Load(); p == nil || !p.Equal(root) {
		return nil, fmt.Errorf("enrol %s: root in the response differs from the pinned one", node)
	}
	if len(resp.GetCertificateChain()) == 0 {
		return nil, fmt.Errorf("enrol %s: empty certificate chain", node)
	}
	cert := &tls.Certificate{Certificate: resp.GetCertificateChain(), PrivateKey: key}
	if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
		return nil, fmt.Errorf("enrol %s: parse certificate: %w", node, err)
	}
	return &simulatedAgent{
		node:     node,
		gateway:  gateway,
		latency:  latency,
		root:     root,
		cert:     cert,
		stats:    stats,
		done:     map[string]*agentpb.TaskResult{},
		inflight: map[string]bool{},
		uids:     map[string]uint32{},
		nextUID:  1000,
		slots:    make(chan struct{}, simConcurrency),
	}, nil
}

// keepalive as the real agent sets it: the ping interval stays above the
// gateway's 5-minute minimum.
var simKeepalive = keepalive.ClientParameters{Time: 5*time.Minute + 30*time.Second, Timeout: 20 * time.Second}

// run keeps a stream up until ctx is done, reconnecting with jittered
// exponential backoff. welcomed is called after the first Welcome.
func (a *simulatedAgent) run(ctx context.Context, welcomed func()) {
	var once sync.Once
	delay := time.Duration(0)
	for ctx.Err() == nil {
		ok, err := a.session(ctx, func() { once.Do(welcomed) })
		if ctx.Err() != nil {
			return
		}
		a.stats.streamError(a.node, err)
		if ok {
			a.stats.reconnects.Add(1)
			delay = 0
		}
		delay = min(max(2*delay, 200*time.Millisecond), 5*time.Second)
		half := delay / 2
		t := time.NewTimer(half + rand.N(half+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// simSession is one welcomed stream.
type simSession struct {
	mu     sync.Mutex // gRPC allows one sender per stream
	stream grpc.BidiStreamingClient[agentpb.AgentMessage, agentpb.ServerMessage]
}

func (s *simSession) send(m *agentpb.AgentMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

// session runs one stream: Hello, Welcome, heartbeats out, tasks in.
// Each attempt dials a fresh ClientConn, as the real agent does, so gRPC's
// own reconnect backoff does not stack under ours.
func (a *simulatedAgent) session(ctx context.Context, welcomed func()) (bool, error) {
	host, _, _ := net.SplitHostPort(a.gateway)
	creds := credentials.NewTLS(pki.AgentTLSConfig(host, a.root, func() (*tls.Certificate, error) { return a.cert, nil }))
	conn, err := grpc.NewClient(a.gateway, grpc.WithTransportCredentials(creds), grpc.WithKeepaliveParams(simKeepalive))
	if err != nil {
		return false, err
	}
	defer conn.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := agentpb.NewAgentGatewayClient(conn).Connect(sctx)
	if err != nil {
		return false, err
	}
	hello := &agentpb.Hello{AgentVersion: "loadtest-simulated", Facts: simFacts(), Protocol: agentpb.Protocol}
	if err := stream.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Hello{Hello: hello}}); err != nil {
		return false, err
	}
	wt := time.AfterFunc(30*time.Second, cancel)
	msg, err := stream.Recv()
	wt.Stop()
	if err != nil {
		return false, err
	}
	w := msg.GetWelcome()
	if w == nil {
		return false, fmt.Errorf("%s: gateway answered Hello with %T", a.node, msg.GetMsg())
	}
	s := &simSession{stream: stream}
	a.mu.Lock()
	a.cur = s
	a.mu.Unlock()
	a.stats.connected.Add(1)
	defer func() {
		a.mu.Lock()
		if a.cur == s {
			a.cur = nil
		}
		a.mu.Unlock()
		a.stats.connected.Add(-1)
	}()
	welcomed()

	every := time.Duration(w.GetHeartbeatIntervalMs()) * time.Millisecond
	if every <= 0 {
		every = 5 * time.Second
	}
	every = max(every, 100*time.Millisecond)
	var hb sync.WaitGroup
	hb.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case now := <-t.C:
				m := &agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Heartbeat{Heartbeat: &agentpb.Heartbeat{SentUnixNano: now.UnixNano()}}}
				if s.send(m) != nil {
					return
				}
			}
		}
	})
	defer func() {
		cancel()
		hb.Wait()
	}()

	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("gateway closed the stream")
			}
			return true, err
		}
		if t := msg.GetTask(); t != nil {
			a.handle(sctx, t)
		}
	}
}

// handle takes one task: a re-send of a finished task is answered from
// memory, one still in flight is ignored (its result will follow), and a new
// one is "executed" in a free slot.
func (a *simulatedAgent) handle(streamCtx context.Context, t *agentpb.Task) {
	a.stats.tasks.Add(1)
	id := t.GetId()
	a.mu.Lock()
	if a.inflight[id] {
		a.mu.Unlock()
		a.stats.duplicates.Add(1)
		return
	}
	if res, ok := a.done[id]; ok {
		a.mu.Unlock()
		a.stats.duplicates.Add(1)
		a.sendResult(res)
		return
	}
	a.inflight[id] = true
	a.mu.Unlock()

	select {
	case a.slots <- struct{}{}:
	case <-streamCtx.Done():
		a.mu.Lock()
		delete(a.inflight, id)
		a.mu.Unlock()
		return
	}
	go func() {
		// The simulated work: a sleep. The real agent's apply would shell
		// out to useradd, write a home skeleton, set a quota.
		time.Sleep(a.latency)
		<-a.slots
		res := a.execute(t)
		a.mu.Lock()
		delete(a.inflight, id)
		a.remember(id, res)
		a.mu.Unlock()
		a.sendResult(res)
	}()
}

// simDoneCap bounds the memory of finished tasks per agent. The gateway
// re-sends only unacknowledged tasks, so a task older than the last few
// thousand is not coming back.
const simDoneCap = 4096

// remember records a finished task; a.mu must be held.
func (a *simulatedAgent) remember(id string, res *agentpb.TaskResult) {
	a.done[id] = res
	a.doneOrder = append(a.doneOrder, id)
	if len(a.doneOrder) > simDoneCap {
		delete(a.done, a.doneOrder[0])
		a.doneOrder = a.doneOrder[1:]
	}
}

// execute builds the result the real action would report.
func (a *simulatedAgent) execute(t *agentpb.Task) *agentpb.TaskResult {
	res := &agentpb.TaskResult{TaskId: t.GetId(), Generation: t.GetGeneration(), Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED}
	switch act := t.GetAction().(type) {
	case *agentpb.Task_Ping:
		res.Result = &agentpb.TaskResult_Ping{Ping: &agentpb.PingResult{Payload: act.Ping.GetPayload(), Node: a.node, AgentUnixNano: time.Now().UnixNano()}}
	case *agentpb.Task_EnsureAccount:
		u := act.EnsureAccount.GetUsername()
		uid, existed := a.uid(u, true)
		res.Result = &agentpb.TaskResult_Account{Account: &agentpb.AccountResult{Username: u, Uid: uid, Gid: uid, Home: "/home/" + u, Locked: act.EnsureAccount.GetSuspended(),
			QuotaNote: "simulated node: no quota", Existed: existed}}
	case *agentpb.Task_DeleteAccount:
		u := act.DeleteAccount.GetUsername()
		uid, existed := a.uid(u, false)
		res.Result = &agentpb.TaskResult_Account{Account: &agentpb.AccountResult{Username: u, Uid: uid, Gid: uid, Home: "/home/" + u,
			Archive: "/var/lib/npanel/backups/" + u + ".tar.zst", Existed: existed}}
	default:
		a.stats.failed.Add(1)
		res.Status = agentpb.TaskStatus_TASK_STATUS_FAILED
		res.Reason = agentpb.ErrorReason_ERROR_REASON_UNSUPPORTED
		res.Error = fmt.Sprintf("action %T is not in the simulated agent's allow-list", act)
	}
	res.FinishedUnixNano = time.Now().UnixNano()
	return res
}

// uid returns the simulated uid of user, allocating one when create is set,
// and whether the user already existed.
func (a *simulatedAgent) uid(user string, create bool) (uint32, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if uid, ok := a.uids[user]; ok {
		if !create {
			delete(a.uids, user)
		}
		return uid, true
	}
	if !create {
		return 0, false
	}
	uid := a.nextUID
	a.nextUID++
	a.uids[user] = uid
	return uid, false
}

// sendResult sends res on the current stream, which need not be the one
// the task came in on; while disconnected the result is dropped and the
// gateway's re-send after reconnecting is answered from a.done.
func (a *simulatedAgent) sendResult(res *agentpb.TaskResult) {
	a.mu.Lock()
	s := a.cur
	a.mu.Unlock()
	if s == nil {
		return
	}
	if s.send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Result{Result: res}}) == nil {
		a.stats.results.Add(1)
	}
}
