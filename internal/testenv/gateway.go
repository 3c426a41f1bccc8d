package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// DialGateway returns a client of the agent gateway at addr speaking TLS
// with cfg, closed when the test ends: tests that play an agent, or an
// attacker, use it.
func DialGateway(t testing.TB, addr string, cfg *tls.Config, opts ...grpc.DialOption) agentpb.AgentGatewayClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentpb.NewAgentGatewayClient(conn)
}

// EnrollNode runs the enrolment RPC with a fresh key and returns the
// resulting client certificate.
func EnrollNode(ctx context.Context, c agentpb.AgentGatewayClient, token, node string) (*tls.Certificate, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	// The request names the token's hosts, as the agent's does; a token
	// that does not parse still goes to the gateway, which is what tests
	// of refused tokens exercise.
	claims, _ := pki.ParseJoinToken(token)
	csr, err := pki.NewNodeCSR(key, node, claims.Hosts)
	if err != nil {
		return nil, err
	}
	resp, err := c.Enroll(ctx, &agentpb.EnrollRequest{JoinToken: token, Csr: csr.Raw})
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{Certificate: resp.GetCertificateChain(), PrivateKey: key}
	cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0])
	return cert, err
}

// AgentCert loads the certificate an agent keeps in its data dir.
func AgentCert(t testing.TB, a *Agent) *tls.Certificate {
	t.Helper()
	keyPEM, err := os.ReadFile(filepath.Join(a.Config.DataDir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, err := os.ReadFile(filepath.Join(a.Config.DataDir, "node.crt"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pki.ParseCertsPEM(chainPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// OpenStream connects to the gateway, says hello and reads the welcome.
func OpenStream(ctx context.Context, c agentpb.AgentGatewayClient) (agentpb.AgentGateway_ConnectClient, error) {
	st, err := c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	err = st.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Hello{Hello: &agentpb.Hello{
		AgentVersion: "test", Facts: &agentpb.NodeFacts{Cpus: 1}, Protocol: agentpb.Protocol}}})
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	m, err := st.Recv()
	if err != nil {
		return nil, err
	}
	if m.GetWelcome() == nil {
		return nil, status.Error(codes.Internal, "expected welcome")
	}
	return st, nil
}
