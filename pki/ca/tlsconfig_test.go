package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/npanel/npanel/pki"
)

// issueWithSANs issues a certificate with arbitrary SANs through the CA's
// internal path, for peers that are valid for a host name but carry the
// wrong identity.
func issueWithSANs(t *testing.T, ca *CA, subject string, sans ...string) *tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr := mustCSR(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: subject}})
	tok, _, err := ca.signToken(subject, sans, time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := ca.authorizeToken(context.Background(), tok)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := ca.sign(context.Background(), csr, opts)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{chain[0].Raw, chain[1].Raw, ca.Root().Raw},
		PrivateKey:  key,
		Leaf:        chain[0],
	}
}

type tlsFixture struct {
	ca       *CA
	server   tls.Certificate
	gateway  *tls.Config
	node     enrolled
	otherCA  *CA
	foreign  enrolled // a node certificate from another cluster
	hostname string
}

func newTLSFixture(t *testing.T) *tlsFixture {
	t.Helper()
	ca, _ := newTestCA(t, 0)
	otherCA, _ := newTestCA(t, 0)
	server, err := ca.IssueServerCertificate("cp-1", []string{"gateway.npanel.internal", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	f := &tlsFixture{
		ca:       ca,
		server:   server,
		node:     enroll(t, ca, "web-1"),
		otherCA:  otherCA,
		foreign:  enroll(t, otherCA, "web-1"),
		hostname: "gateway.npanel.internal",
	}
	f.gateway = pki.GatewayTLSConfig(ca.Root(), func() (*tls.Certificate, error) { return &f.server, nil })
	return f
}

func staticCert(c *tls.Certificate) func() (*tls.Certificate, error) {
	return func() (*tls.Certificate, error) { return c, nil }
}

func TestGatewayAndAgentMTLS(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t)
	res := handshake(t, f.gateway, pki.AgentTLSConfig(f.hostname, f.ca.Root(), staticCert(f.node.tlsCert())))
	if res.client != nil || res.server != nil {
		t.Fatalf("handshake: client %v, server %v", res.client, res.server)
	}
	if res.serverState.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %x, want TLS 1.3", res.serverState.Version)
	}
	if len(res.serverState.PeerCertificates) == 0 {
		t.Fatal("gateway saw no client certificate")
	}
	if name, err := pki.NodeName(res.serverState.PeerCertificates[0]); err != nil || name != "web-1" {
		t.Errorf("gateway sees node %q, %v", name, err)
	}

	// The agent also reaches the gateway by IP.
	res = handshake(t, f.gateway, pki.AgentTLSConfig("127.0.0.1", f.ca.Root(), staticCert(f.node.tlsCert())))
	if res.client != nil || res.server != nil {
		t.Fatalf("handshake by IP: client %v, server %v", res.client, res.server)
	}
}

func TestAgentPicksUpRenewedCertificate(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t)
	var current atomic.Pointer[tls.Certificate]
	current.Store(f.node.tlsCert())
	cfg := pki.AgentTLSConfig(f.hostname, f.ca.Root(), func() (*tls.Certificate, error) { return current.Load(), nil })

	res := handshake(t, f.gateway, cfg)
	if res.client != nil || res.server != nil {
		t.Fatalf("first handshake: client %v, server %v", res.client, res.server)
	}
	first := res.serverState.PeerCertificates[0].SerialNumber

	second := enroll(t, f.ca, "web-1")
	current.Store(second.tlsCert())
	res = handshake(t, f.gateway, cfg)
	if res.client != nil || res.server != nil {
		t.Fatalf("second handshake: client %v, server %v", res.client, res.server)
	}
	if got := res.serverState.PeerCertificates[0].SerialNumber; got.Cmp(first) == 0 || got.Cmp(second.chain[0].SerialNumber) != 0 {
		t.Errorf("gateway saw serial %v, want the new certificate's %v", got, second.chain[0].SerialNumber)
	}
}

func TestGatewayRefusesBadClientCertificates(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t)
	tests := map[string]*tls.Certificate{
		"another CA's node": f.foreign.tlsCert(),
		// Ours, but a server identity: agents only.
		"server certificate": &f.server,
	}
	for desc, cert := range tests {
		t.Run(desc, func(t *testing.T) {
			res := handshake(t, f.gateway, pki.AgentTLSConfig(f.hostname, f.ca.Root(), staticCert(cert)))
			if res.server == nil {
				t.Fatal("gateway accepted the client certificate")
			}
			t.Logf("refused as expected: %v", res.server)
		})
	}
}

func TestGatewayWithoutClientCertificate(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t)
	var pinned *x509.Certificate
	res := handshake(t, f.gateway, pki.EnrollClientTLSConfig(f.hostname, f.ca.RootFingerprint(), func(c *x509.Certificate) { pinned = c }))
	if res.client != nil || res.server != nil {
		t.Fatalf("handshake without client certificate: client %v, server %v", res.client, res.server)
	}
	if len(res.serverState.PeerCertificates) != 0 {
		t.Error("gateway saw a client certificate")
	}
	if pinned == nil || !pinned.Equal(f.ca.Root()) {
		t.Error("onRoot did not receive the root")
	}

	// An agent whose certificate source is empty sends none, too.
	res = handshake(t, f.gateway, pki.AgentTLSConfig(f.hostname, f.ca.Root(), staticCert(nil)))
	if res.client != nil || res.server != nil {
		t.Fatalf("agent with no certificate: client %v, server %v", res.client, res.server)
	}
}

func TestEnrollClientPinsFingerprint(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t)
	otherServer, err := f.otherCA.IssueServerCertificate("cp-1", []string{f.hostname})
	if err != nil {
		t.Fatal(err)
	}
	withoutRoot := f.server
	withoutRoot.Certificate = withoutRoot.Certificate[:2]
	// Chains to the pinned root and is valid for the host name, but carries
	// a node identity.
	nodeAsServer := issueWithSANs(t, f.ca, "web-1", pki.NodeURI("web-1").String(), f.hostname)

	tests := []struct {
		desc        string
		server      *tls.Certificate
		fingerprint string
		serverName  string
		want        string // error substring; empty means success
	}{
		{"right fingerprint", &f.server, f.ca.RootFingerprint(), f.hostname, ""},
		{"fingerprint in uppercase", &f.server, strings.ToUpper(f.ca.RootFingerprint()), f.hostname, ""},
		{"wrong fingerprint", &f.server, f.otherCA.RootFingerprint(), f.hostname, "no certificate with the pinned fingerprint"},
		{"another cluster's gateway", &otherServer, f.ca.RootFingerprint(), f.hostname, "no certificate with the pinned fingerprint"},
		{"root not presented", &withoutRoot, f.ca.RootFingerprint(), f.hostname, "no certificate with the pinned fingerprint"},
		{"intermediate's fingerprint", &f.server, pki.Fingerprint(f.ca.inter), f.hostname, "not a self-signed CA"},
		{"wrong server name", &f.server, f.ca.RootFingerprint(), "evil.example.com", "verify against the pinned root"},
		{"not a server", nodeAsServer, f.ca.RootFingerprint(), f.hostname, "not a control-plane server"},
		{"malformed fingerprint", &f.server, "abc", f.hostname, "not 64 hex digits"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var pinned *x509.Certificate
			gateway := pki.GatewayTLSConfig(f.ca.Root(), staticCert(tt.server))
			client := pki.EnrollClientTLSConfig(tt.serverName, tt.fingerprint, func(c *x509.Certificate) { pinned = c })
			res := handshake(t, gateway, client)
			if tt.want == "" {
				if res.client != nil {
					t.Fatalf("handshake: %v", res.client)
				}
				if pinned == nil || !pinned.Equal(f.ca.Root()) {
					t.Error("onRoot did not receive the root")
				}
				return
			}
			if res.client == nil || !strings.Contains(res.client.Error(), tt.want) {
				t.Fatalf("handshake error = %v, want it to contain %q", res.client, tt.want)
			}
			if pinned != nil {
				t.Error("onRoot called on a failed handshake")
			}
		})
	}
}

func TestAgentRefusesNonServer(t *testing.T) {
	t.Parallel()
	f := newTLSFixture(t)
	// A node of the cluster pretending to be the gateway, with a
	// certificate valid for the gateway's name.
	rogue := pki.GatewayTLSConfig(f.ca.Root(), staticCert(issueWithSANs(t, f.ca, "web-1", pki.NodeURI("web-1").String(), f.hostname)))
	res := handshake(t, rogue, pki.AgentTLSConfig(f.hostname, f.ca.Root(), staticCert(f.node.tlsCert())))
	if res.client == nil || !strings.Contains(res.client.Error(), "not a control-plane server") {
		t.Fatalf("agent accepted a node certificate as the server's: %v", res.client)
	}
	// And a real server of another cluster.
	other, err := f.otherCA.IssueServerCertificate("cp-1", []string{f.hostname})
	if err != nil {
		t.Fatal(err)
	}
	res = handshake(t, pki.GatewayTLSConfig(f.otherCA.Root(), staticCert(&other)), pki.AgentTLSConfig(f.hostname, f.ca.Root(), staticCert(f.node.tlsCert())))
	if res.client == nil {
		t.Fatal("agent accepted another cluster's server")
	}
}
