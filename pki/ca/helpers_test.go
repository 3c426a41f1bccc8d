package ca

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/pki"
)

// testLogger discards: New may route the process-wide standard logger into
// the first CA's logger, and a logger tied to one test's *testing.T would
// outlive that test.
func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newTestMaterial(t testing.TB) *Material {
	t.Helper()
	m, err := GenerateMaterial("test cluster")
	if err != nil {
		t.Fatalf("GenerateMaterial: %v", err)
	}
	return m
}

func newTestCAFrom(t testing.TB, m *Material, lifetime time.Duration) *CA {
	t.Helper()
	ca, err := New(m, Options{CertLifetime: lifetime, Logger: testLogger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return ca
}

func newTestCA(t testing.TB, lifetime time.Duration) (*CA, *Material) {
	t.Helper()
	m := newTestMaterial(t)
	return newTestCAFrom(t, m, lifetime), m
}

// usedTokens stands in for the control plane's etcd record of redeemed
// tokens: one set shared by every replica.
type usedTokens struct {
	mu    sync.Mutex
	ids   map[string]bool
	calls int
}

func newUsedTokens() *usedTokens { return &usedTokens{ids: map[string]bool{}} }

func (u *usedTokens) mark(c pki.JoinClaims) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls++
	if u.ids[c.ID] {
		return fmt.Errorf("token %s: %w", c.ID, pki.ErrTokenUsed)
	}
	u.ids[c.ID] = true
	return nil
}

func (u *usedTokens) callCount() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls
}

type enrolled struct {
	key    crypto.Signer
	chain  []*x509.Certificate
	claims pki.JoinClaims
}

func (e enrolled) tlsCert() *tls.Certificate {
	c := &tls.Certificate{PrivateKey: e.key, Leaf: e.chain[0]}
	for _, x := range e.chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// enroll runs the agent's side and the gateway's side of an enrolment.
func enroll(t testing.TB, ca *CA, node string) enrolled {
	t.Helper()
	tok, _, err := ca.NewJoinToken(node, nil, 0)
	if err != nil {
		t.Fatalf("NewJoinToken: %v", err)
	}
	key, err := pki.NewKey()
	if err != nil {
		t.Fatalf("NewKey: %v", err)
	}
	csr, err := pki.NewNodeCSR(key, node, nil)
	if err != nil {
		t.Fatalf("NewNodeCSR: %v", err)
	}
	chain, claims, err := ca.Enroll(context.Background(), tok, csr, newUsedTokens().mark)
	if err != nil {
		t.Fatalf("Enroll: %v", err)
	}
	return enrolled{key: key, chain: chain, claims: claims}
}

type handshakeResult struct {
	client, server       error
	serverState          tls.ConnectionState
	clientPeerCertsCount int
}

// handshake runs a TLS handshake over an in-memory pipe. In TLS 1.3 the client
// finishes before the server has checked the client's certificate, so the
// server's verdict is reported separately.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv := tls.Server(c1, serverCfg)
	cli := tls.Client(c2, clientCfg)

	serr := make(chan error, 1)
	go func() { serr <- srv.HandshakeContext(ctx) }()
	var res handshakeResult
	res.client = cli.HandshakeContext(ctx)
	if res.client != nil {
		c2.Close() // unblock the server
	} else {
		// net.Pipe is unbuffered: keep reading so the server can write its
		// session tickets or its alert.
		go func() {
			buf := make([]byte, 512)
			for {
				if _, err := cli.Read(buf); err != nil {
					return
				}
			}
		}()
		res.clientPeerCertsCount = len(cli.ConnectionState().PeerCertificates)
	}
	res.server = <-serr
	res.serverState = srv.ConnectionState()
	return res
}
