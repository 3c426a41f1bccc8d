package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/pki/ca"
	"github.com/npanel/npanel/protos/agentpb"
)

// gateway serves agents. Its one rule: a node's identity comes from its
// verified client certificate and nowhere else, and a certificate is honoured
// only while the node's state in etcd lists its serial.
//
// It reaches etcd through a client of its own (store): the API's
// requests run on another, so that however the API's load wedges its
// client's streams (etcd issues #18879, #20716 on the in-process client),
// tasks still reach the agents.
type gateway struct {
	agentpb.UnimplementedAgentGatewayServer
	s     *Server
	log   *slog.Logger
	store *store.Store

	mu      sync.Mutex
	streams map[string]*agentStream // node → its stream on this replica

	delivery *deliveryMetrics
	// progress paces the writes of backup progress reports.
	progress *progressLimiter
}

func newGateway(s *Server, st *store.Store) *gateway {
	return &gateway{s: s, log: s.log.With("component", "gateway"), store: st,
		streams: map[string]*agentStream{}, delivery: newDeliveryMetrics(s.metrics.reg),
		progress: newProgressLimiter(progressEvery)}
}

type nodeCtxKey struct{}

type nodeIdentity struct {
	name string
	cert *x509.Certificate
}

func identityFrom(ctx context.Context) nodeIdentity {
	id, _ := ctx.Value(nodeCtxKey{}).(nodeIdentity)
	return id
}

func (g *gateway) grpcServer() *grpc.Server {
	tlsCfg := pki.GatewayTLSConfig(g.s.ca.Root(), func() (*tls.Certificate, error) { return g.s.gatewayCert.Load(), nil })
	// Enroll is the one method an agent calls before it has a certificate.
	needsCert := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.FullMethod() != agentpb.AgentGateway_Enroll_FullMethodName
	})
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	recoverOpt := recovery.WithRecoveryHandler(func(p any) error {
		g.log.Error("gateway handler panic", "panic", p)
		return status.Error(codes.Internal, "internal error")
	})
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsCfg)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 15 * time.Second, Timeout: 5 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Every node holds a connection open and is idle on it most of the
		// time; gRPC's default 32 KiB buffers per connection add up across
		// thousands of them.
		grpc.ReadBufferSize(gatewayConnBuffer),
		grpc.WriteBufferSize(gatewayConnBuffer),
		grpc.ChainUnaryInterceptor(
			g.s.metrics.grpc.UnaryServerInterceptor(),
			logging.UnaryServerInterceptor(interceptorLogger(g.log), logOpts...),
			recovery.UnaryServerInterceptor(recoverOpt),
			selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(g.authenticate), needsCert),
		),
		grpc.ChainStreamInterceptor(
			g.s.metrics.grpc.StreamServerInterceptor(),
			logging.StreamServerInterceptor(interceptorLogger(g.log), logOpts...),
			recovery.StreamServerInterceptor(recoverOpt),
			selector.StreamServerInterceptor(auth.StreamServerInterceptor(g.authenticate), needsCert),
		),
	)
	agentpb.RegisterAgentGatewayServer(srv, g)
	g.s.metrics.grpc.InitializeMetrics(srv)
	return srv
}

// gatewayConnBuffer is the gateway's per-connection read and write buffer
// size; tasks and results are a few KiB.
const gatewayConnBuffer = 8 << 10

// authenticate admits a call only with a verified client certificate that
// names a node whose state currently accepts that certificate's serial.
func (g *gateway) authenticate(ctx context.Context) (context.Context, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return nil, status.Error(codes.Unauthenticated, "a client certificate issued by this cluster is required")
	}
	leaf := ti.State.VerifiedChains[0][0]
	name, err := pki.NodeName(leaf)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "client certificate is not a node identity")
	}
	st, _, err := g.store.GetNodeState(ctx, name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Errorf(codes.PermissionDenied, "node %q is not a member of this cluster", name)
		}
		return nil, status.Error(codes.Unavailable, "cluster store unavailable")
	}
	if !st.AcceptsSerial(serialHex(leaf)) {
		return nil, status.Errorf(codes.PermissionDenied, "certificate of node %q has been replaced or revoked", name)
	}
	return context.WithValue(ctx, nodeCtxKey{}, nodeIdentity{name: name, cert: leaf}), nil
}

func serialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// Enroll trades a join token and a CSR for the node's first certificate.
func (g *gateway) Enroll(ctx context.Context, req *agentpb.EnrollRequest) (*agentpb.EnrollResponse, error) {
	csr, err := x509.ParseCertificateRequest(req.GetCsr())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "csr is not a valid PKCS#10 request")
	}
	var node string
	chain, claims, err := g.s.ca.Enroll(ctx, req.GetJoinToken(), csr, func(c pki.JoinClaims) error {
		node = c.Node
		st, _, err := g.store.GetNodeState(ctx, c.Node)
		if err != nil {
			return err
		}
		if !st.EnrolledAt.IsZero() {
			return errAlreadyEnrolled
		}
		// A token made for an earlier record of the node (removed and
		// declared again) names the address it had then.
		n, err := g.store.GetNode(ctx, c.Node)
		if err != nil {
			return err
		}
		if want, _ := pki.NodeHosts(nodeHosts(n.Node)); !slices.Equal(want, c.Hosts) {
			return errStaleHosts
		}
		return g.store.UseJoinToken(ctx, c.ID, c.Node, c.ExpiresAt)
	})
	source := peerAddr(ctx)
	if err != nil {
		code, msg := enrollError(err)
		g.log.Warn("enrolment refused", "node", node, "source", source, "err", err)
		_ = g.store.AppendAudit(ctx, store.NewAuditEvent("node:"+node, source, "enroll", node, msg))
		return nil, status.Error(code, msg)
	}
	now := time.Now().UTC()
	ev := store.NewAuditEvent("node:"+claims.Node, source, "enroll", claims.Node, "ok")
	err = g.store.UpdateNodeState(ctx, claims.Node, func(st *store.NodeState) bool {
		st.EnrolledAt = now
		st.CertSerials = []string{serialHex(chain[0])}
		return true
	}, store.AuditOp(ev))
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Errorf(codes.PermissionDenied, "node %q was removed", claims.Node)
		}
		return nil, status.Error(codes.Unavailable, "cluster store unavailable")
	}
	g.log.Info("node enrolled", "node", claims.Node, "source", source, "serial", serialHex(chain[0]))
	return &agentpb.EnrollResponse{CertificateChain: derChain(chain), Root: g.s.ca.Root().Raw}, nil
}

var errAlreadyEnrolled = errors.New("node is already enrolled")

// errStaleHosts: the join token names other addresses than the node's
// record does now.
var errStaleHosts = errors.New("join token names another address than the node's record")

func enrollError(err error) (codes.Code, string) {
	switch {
	case errors.Is(err, pki.ErrTokenExpired):
		return codes.Unauthenticated, "join token expired"
	case errors.Is(err, pki.ErrInvalidToken):
		return codes.Unauthenticated, "join token invalid"
	case errors.Is(err, ca.ErrInvalidCSR):
		return codes.InvalidArgument, "certificate request does not match the join token"
	case errors.Is(err, store.ErrConflict):
		return codes.PermissionDenied, "join token already used"
	case errors.Is(err, errAlreadyEnrolled):
		return codes.PermissionDenied, "node is already enrolled; remove it and issue a new token to re-enrol"
	case errors.Is(err, errStaleHosts):
		return codes.PermissionDenied, "join token was made for another address of the node; issue a new token"
	case errors.Is(err, store.ErrNotFound):
		return codes.PermissionDenied, "node is not declared in this cluster"
	}
	return codes.Unavailable, "enrolment failed; try again"
}

// Renew re-issues the caller's certificate. The new serial is accepted
// alongside the old one until the next renewal, so a stream that is still up
// on the old certificate keeps working. The new certificate names the
// node's address as its record says now (an IP SAN next to the URI), so
// that TLS clients dialling that address, Prometheus first, can verify it.
func (g *gateway) Renew(ctx context.Context, _ *agentpb.RenewRequest) (*agentpb.RenewResponse, error) {
	id := identityFrom(ctx)
	n, err := g.store.GetNode(ctx, id.name)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, status.Error(codes.PermissionDenied, "node is not a member of this cluster")
		}
		return nil, status.Error(codes.Unavailable, "cluster store unavailable")
	}
	hosts := nodeHosts(n.Node)
	if _, err := pki.NodeHosts(hosts); err != nil {
		// A record the API would not write today must not cost the node
		// its certificate: renew it without the address.
		g.log.Warn("node address cannot be named in its certificate", "node", id.name, "address", n.Address, "err", err)
		hosts = nil
	}
	chain, err := g.s.ca.Renew(ctx, id.cert, hosts)
	if err != nil {
		g.log.Warn("renewal refused", "node", id.name, "err", err)
		return nil, status.Error(codes.PermissionDenied, "certificate cannot be renewed")
	}
	newSerial, oldSerial := serialHex(chain[0]), serialHex(id.cert)
	ev := store.NewAuditEvent("node:"+id.name, peerAddr(ctx), "renewCertificate", id.name, "ok")
	// The names can change at a renewal (the node's address): say which.
	ev.Detail = map[string]string{"serial": newSerial, "hosts": strings.Join(pki.HostsOf(chain[0].IPAddresses, chain[0].DNSNames), ",")}
	err = g.store.UpdateNodeState(ctx, id.name, func(st *store.NodeState) bool {
		if !st.AcceptsSerial(oldSerial) {
			return false
		}
		st.CertSerials = []string{oldSerial, newSerial}
		return true
	}, store.AuditOp(ev))
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, "node is not a member of this cluster")
	}
	st, _, err := g.store.GetNodeState(ctx, id.name)
	if err != nil || !st.AcceptsSerial(newSerial) {
		return nil, status.Error(codes.PermissionDenied, "certificate was revoked during renewal")
	}
	return &agentpb.RenewResponse{CertificateChain: derChain(chain)}, nil
}

// nodeHosts are the names a node's certificate carries besides its URI:
// its declared address (always an IP address, validate.NodeAddress).
func nodeHosts(n store.Node) []string {
	if n.Address == "" {
		return nil
	}
	return []string{n.Address}
}

func derChain(chain []*x509.Certificate) [][]byte {
	out := make([][]byte, len(chain))
	for i, c := range chain {
		out[i] = c.Raw
	}
	return out
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		return p.Addr.String()
	}
	return ""
}

func interceptorLogger(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		// Successful calls are routine; only failures are worth a line.
		if lvl < logging.LevelWarn {
			return
		}
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
