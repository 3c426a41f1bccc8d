package nodeagent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/pki/ca"
	"github.com/npanel/npanel/protos/agentpb"
)

// testGateway is a minimal agent gateway for testing the agent alone: the
// real CA from package pki behind the real TLS configs, and a Connect that
// lets the test drive each stream by hand.
type testGateway struct {
	agentpb.UnimplementedAgentGatewayServer
	t    *testing.T
	ca   *ca.CA
	addr string

	refuseEnroll  atomic.Bool
	refuseConnect atomic.Bool // answer Connect with PermissionDenied
	enrolls       atomic.Int32
	renewals      atomic.Int32
	connects      chan *gwStream // every welcomed stream, in order

	mu         sync.Mutex
	srv        *grpc.Server
	serverCert *tls.Certificate
	usedTokens map[string]bool
	gossipKey  []byte
	gossipAddr []string // from the Hellos seen so far: the seeds handed out
}

// gwStream is one agent stream as the gateway sees it.
type gwStream struct {
	node       string
	hello      *agentpb.Hello
	tasks      chan *agentpb.Task
	msgs       chan *agentpb.ServerMessage // other messages to the agent
	drop       chan struct{}               // closed by the test to end the stream
	results    chan *agentpb.TaskResult
	heartbeats atomic.Int32
}

func newTestCA(t *testing.T, lifetime time.Duration) *ca.CA {
	t.Helper()
	m, err := ca.GenerateMaterial("test")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.New(m, ca.Options{CertLifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func startGateway(t *testing.T, c *ca.CA) *testGateway {
	t.Helper()
	g := &testGateway{
		t:          t,
		ca:         c,
		connects:   make(chan *gwStream, 100),
		usedTokens: map[string]bool{},
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = lis.Addr().String()
	g.serve(lis)
	t.Cleanup(g.stop)
	return g
}

func (g *testGateway) serve(lis net.Listener) {
	creds := credentials.NewTLS(pki.GatewayTLSConfig(g.ca.Root(), g.certificate))
	srv := grpc.NewServer(grpc.Creds(creds))
	agentpb.RegisterAgentGatewayServer(srv, g)
	g.mu.Lock()
	g.srv = srv
	g.mu.Unlock()
	go srv.Serve(lis)
}

func (g *testGateway) stop() {
	g.mu.Lock()
	srv := g.srv
	g.mu.Unlock()
	srv.Stop()
}

// restart stops the server and serves again on the same address.
func (g *testGateway) restart() {
	g.t.Helper()
	g.stop()
	lis, err := net.Listen("tcp", g.addr)
	if err != nil {
		g.t.Fatal(err)
	}
	g.serve(lis)
}

// certificate re-issues the server certificate when a third of its life is
// left, so that short-lived test CAs keep working.
func (g *testGateway) certificate() (*tls.Certificate, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.serverCert; c != nil && time.Until(c.Leaf.NotAfter) > g.ca.CertLifetime()/3 {
		return c, nil
	}
	c, err := g.ca.IssueServerCertificate("gw-test", []string{"127.0.0.1"})
	if err != nil {
		return nil, err
	}
	g.serverCert = &c
	return &c, nil
}

func (g *testGateway) setGossipKey(key []byte) {
	g.mu.Lock()
	g.gossipKey = key
	g.mu.Unlock()
}

func peerLeaf(ctx context.Context) (*x509.Certificate, string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, "", errors.New("no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 {
		return nil, "", errors.New("no verified client certificate")
	}
	leaf := info.State.VerifiedChains[0][0]
	node, err := pki.NodeName(leaf)
	return leaf, node, err
}

func (g *testGateway) Enroll(ctx context.Context, req *agentpb.EnrollRequest) (*agentpb.EnrollResponse, error) {
	g.enrolls.Add(1)
	if g.refuseEnroll.Load() {
		return nil, status.Error(codes.PermissionDenied, "join token already used")
	}
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	chain, _, err := g.ca.Enroll(ctx, req.GetJoinToken(), csr, func(c pki.JoinClaims) error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.usedTokens[c.ID] {
			return pki.ErrTokenUsed
		}
		g.usedTokens[c.ID] = true
		return nil
	})
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	resp := &agentpb.EnrollResponse{Root: g.ca.Root().Raw}
	for _, c := range chain {
		resp.CertificateChain = append(resp.CertificateChain, c.Raw)
	}
	return resp, nil
}

func (g *testGateway) Renew(ctx context.Context, _ *agentpb.RenewRequest) (*agentpb.RenewResponse, error) {
	leaf, _, err := peerLeaf(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	chain, err := g.ca.Renew(ctx, leaf, nil)
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	g.renewals.Add(1)
	resp := &agentpb.RenewResponse{}
	for _, c := range chain {
		resp.CertificateChain = append(resp.CertificateChain, c.Raw)
	}
	return resp, nil
}

func (g *testGateway) Connect(stream grpc.BidiStreamingServer[agentpb.AgentMessage, agentpb.ServerMessage]) error {
	_, node, err := peerLeaf(stream.Context())
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if g.refuseConnect.Load() {
		return status.Error(codes.PermissionDenied, "node fenced")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "first message must be Hello")
	}
	g.mu.Lock()
	if a := hello.GetGossipAddress(); a != "" && !slices.Contains(g.gossipAddr, a) {
		g.gossipAddr = append(g.gossipAddr, a)
	}
	welcome := &agentpb.Welcome{
		ServerId:            "gw-test",
		HeartbeatIntervalMs: 50,
		GossipSeeds:         slices.Clone(g.gossipAddr),
		GossipKey:           g.gossipKey,
	}
	g.mu.Unlock()
	if err := stream.Send(&agentpb.ServerMessage{Msg: &agentpb.ServerMessage_Welcome{Welcome: welcome}}); err != nil {
		return err
	}

	s := &gwStream{
		node:    node,
		hello:   hello,
		tasks:   make(chan *agentpb.Task, 100),
		msgs:    make(chan *agentpb.ServerMessage, 10),
		drop:    make(chan struct{}),
		results: make(chan *agentpb.TaskResult, 1000),
	}
	g.connects <- s
	recvErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			switch m := m.GetMsg().(type) {
			case *agentpb.AgentMessage_Heartbeat:
				s.heartbeats.Add(1)
			case *agentpb.AgentMessage_Result:
				s.results <- m.Result
			}
		}
	}()
	for {
		select {
		case task := <-s.tasks:
			if err := stream.Send(&agentpb.ServerMessage{Msg: &agentpb.ServerMessage_Task{Task: task}}); err != nil {
				return err
			}
		case m := <-s.msgs:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-s.drop:
			return status.Error(codes.Unavailable, "stream dropped by test")
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (s *gwStream) send(tasks ...*agentpb.Task) {
	for _, t := range tasks {
		s.tasks <- t
	}
}

func (s *gwStream) result(t *testing.T) *agentpb.TaskResult {
	t.Helper()
	select {
	case r := <-s.results:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no task result within 10s")
		return nil
	}
}

// noResult checks that no further result was received so far.
func (s *gwStream) noResult(t *testing.T) {
	t.Helper()
	select {
	case r := <-s.results:
		t.Fatalf("unexpected result %v", r)
	default:
	}
}

func (g *testGateway) nextStream(t *testing.T) *gwStream {
	t.Helper()
	select {
	case s := <-g.connects:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not connect within 10s")
		return nil
	}
}

func pingTask(id, payload string, delayMs uint32) *agentpb.Task {
	return &agentpb.Task{
		Id:         id,
		Generation: 3,
		Action:     &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: payload, DelayMs: delayMs}},
	}
}

// --- agent side helpers ---

var testTiming = timing{
	backoffMin:       20 * time.Millisecond,
	backoffMax:       200 * time.Millisecond,
	deniedBackoffMax: 300 * time.Millisecond,
	renewBackoffMax:  200 * time.Millisecond,
	welcomeTimeout:   5 * time.Second,
	rpcTimeout:       5 * time.Second,
	defaultHeartbeat: 100 * time.Millisecond,
	minHeartbeat:     10 * time.Millisecond,
}

type runningAgent struct {
	*Agent
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	runErr error         // what Run returned; read after done
}

// startAgent runs an agent until the test ends (or stop is called).
func startAgent(t *testing.T, cfg Config) *runningAgent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a.timing = testTiming
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		ra.runErr = a.Run(ctx)
		close(ra.done)
	}()
	t.Cleanup(func() { ra.stop(t) })
	return ra
}

// stop cancels Run and returns what it returned.
func (r *runningAgent) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancel")
	}
	return r.runErr
}

// inflight reports whether task id is being applied.
func (a *Agent) inflight(id string) bool {
	a.mu.Lock()
	r := a.run
	a.mu.Unlock()
	if r == nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.inflight[id]
	return ok
}

func (r *runningAgent) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-r.Ready():
	case <-r.done:
		t.Fatalf("Run returned before Ready: %v", r.runErr)
	case <-time.After(10 * time.Second):
		t.Fatal("agent not ready within 10s")
	}
}

// waitFor polls cond until it holds or the bound passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func metricValue(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	m, ok := c.(prometheus.Metric)
	if !ok {
		t.Fatalf("%T is not a single metric", c)
	}
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	switch {
	case out.Counter != nil:
		return out.Counter.GetValue()
	case out.Gauge != nil:
		return out.Gauge.GetValue()
	case out.Histogram != nil:
		return float64(out.Histogram.GetSampleCount())
	}
	t.Fatalf("unsupported metric %v", &out)
	return 0
}

func (a *Agent) appliedCount(t *testing.T, action, status string) float64 {
	return metricValue(t, a.metrics.applied.WithLabelValues(action, status))
}

// logSink sends agent logs to t.Log, stops at test end (goroutines of
// libraries may log a moment after), and keeps the records for assertions.
type logSink struct {
	mu      sync.Mutex
	t       *testing.T
	done    bool
	records []slog.Record
}

func newLogger(t *testing.T) (*slog.Logger, *logSink) {
	s := &logSink{t: t}
	t.Cleanup(func() {
		s.mu.Lock()
		s.done = true
		s.mu.Unlock()
	})
	return slog.New(&sinkHandler{sink: s, level: slog.LevelDebug}), s
}

func (s *logSink) count(level slog.Level, msgPart string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.records {
		if r.Level == level && strings.Contains(r.Message, msgPart) {
			n++
		}
	}
	return n
}

type sinkHandler struct {
	sink  *logSink
	level slog.Level
	attrs []slog.Attr
}

func (h *sinkHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *sinkHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	h.sink.records = append(h.sink.records, r)
	if !h.sink.done {
		var b strings.Builder
		b.WriteString(r.Level.String() + " " + r.Message)
		r.Attrs(func(a slog.Attr) bool {
			b.WriteString(" " + a.String())
			return true
		})
		h.sink.t.Log(b.String())
	}
	return nil
}

func (h *sinkHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sinkHandler{sink: h.sink, level: h.level, attrs: append(slices.Clone(h.attrs), attrs...)}
}

// WithGroup is not needed by the agent; groups are flattened.
func (h *sinkHandler) WithGroup(string) slog.Handler { return h }
