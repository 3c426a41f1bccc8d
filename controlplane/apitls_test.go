package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/etcdtls"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
)

// By default the API serves HTTPS with a certificate from the cluster's
// CA: a client pinning the root's fingerprint gets through (queries and a
// subscription over wss), one without the pin or with another pin is
// refused in the handshake, and plain HTTP gets no API.
func TestAPIOverHTTPSClusterCA(t *testing.T) {
	var notice strings.Builder
	s := testenv.StartServer(t, testenv.WithAPITLS(), func(c *controlplane.Config) { c.Notice = &notice })
	ctx := testenv.Context(t)
	if !strings.HasPrefix(s.URL(), "https://") {
		t.Fatalf("API URL %s, want https", s.URL())
	}
	fp := s.CA().RootFingerprint()
	if !strings.Contains(notice.String(), fp) || !strings.Contains(notice.String(), "--ca-fingerprint "+fp) {
		t.Errorf("first start's notice lacks the fingerprint and the pinned login:\n%s", notice.String())
	}

	// s.Admin logged in through the pinned config.
	if _, err := s.Admin.Nodes(ctx); err != nil {
		t.Fatalf("pinned admin client: %v", err)
	}
	// A subscription's websocket gets through TLS to connection_ack.
	subCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.Admin.Subscribe(subCtx, `subscription($id:ID!){accountEvents(id:$id){status}}`, map[string]any{"id": "none"}); err != nil {
		t.Fatalf("subscription over wss: %v", err)
	}

	// The certificate: TLS 1.2 or later, issued by the cluster CA for the
	// address the API is reached at, the root sent along to be pinned.
	conn, err := tls.Dial("tcp", s.APIAddr(), s.ClientTLS)
	if err != nil {
		t.Fatal(err)
	}
	st := conn.ConnectionState()
	conn.Close()
	if st.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x", st.Version)
	}
	chain := st.PeerCertificates
	if !chain[len(chain)-1].Equal(s.CA().Root()) {
		t.Errorf("chain does not end in the cluster root")
	}
	inters := x509.NewCertPool()
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: s.CA().RootPool(), Intermediates: inters}); err != nil {
		t.Errorf("API certificate does not verify for 127.0.0.1 to the cluster root: %v", err)
	}
	if _, err := tls.Dial("tcp", s.APIAddr(), &tls.Config{ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true}); err == nil {
		t.Errorf("TLS 1.1 handshake succeeded")
	}

	// Without a pin: the system roots do not know the cluster CA.
	_, _, err = client.New(s.URL(), "").Login(ctx, "admin", testenv.AdminPassword)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("login without the pin: %v, want an unknown-authority error", err)
	}
	// Pinned to another cluster's root: refused, never a fallback.
	other := pki.PinnedTLSConfig("127.0.0.1", strings.Repeat("ab", 32))
	_, _, err = client.New(s.URL(), "", client.WithTLS(other)).Login(ctx, "admin", testenv.AdminPassword)
	if !errors.Is(err, pki.ErrPinMismatch) {
		t.Errorf("login with another pin: %v, want ErrPinMismatch", err)
	}
	// Plain HTTP to the HTTPS port gets no API.
	if resp, err := http.Get("http://" + s.APIAddr() + "/healthz"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP to the HTTPS API answered 200: %s", body)
		}
	}
	// Health over HTTPS with the pinned client.
	resp, err := s.Admin.HTTPClient().Get(s.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz over HTTPS: %s", resp.Status)
	}

	// A restart serves a new certificate from the same CA: the pin holds.
	s.Restart()
	if _, err := s.Admin.Nodes(ctx); err != nil {
		t.Fatalf("pinned client after restart: %v", err)
	}
}

// --api-cert/--api-key: the files' certificate is served, a changed pair is
// picked up on reload, a pair whose key does not match is refused (at start,
// and on reload, where the certificate in service stays).
func TestAPICertFiles(t *testing.T) {
	a, err := etcdtls.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := etcdtls.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := dir+"/api.pem", dir+"/api-key.pem"
	copyFile(t, a.ServerCert, certFile)
	copyFile(t, a.ServerKey, keyFile)

	roots := x509.NewCertPool()
	for _, f := range []string{a.CA, b.CA} {
		pem, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		roots.AppendCertsFromPEM(pem)
	}
	s := testenv.StartServerWithRoots(t, roots, testenv.WithAPICertFiles(certFile, keyFile))
	ctx := testenv.Context(t)
	if _, err := s.Admin.Nodes(ctx); err != nil {
		t.Fatalf("client trusting the files' CA: %v", err)
	}
	issuer := func() string {
		t.Helper()
		c, err := tls.Dial("tcp", s.APIAddr(), s.ClientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return pki.Fingerprint(c.ConnectionState().VerifiedChains[0][1])
	}
	caA, caB := fingerprintFile(t, a.CA), fingerprintFile(t, b.CA)
	if got := issuer(); got != caA {
		t.Fatalf("served certificate's CA %s, want the files' %s", got, caA)
	}

	// A key that is not the certificate's: the reload fails, the
	// certificate in service stays.
	copyFile(t, b.ServerKey, keyFile)
	if err := s.ReloadAPICertificate(); err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("reload with a mismatched key: %v", err)
	}
	if got := issuer(); got != caA {
		t.Fatalf("after a failed reload the CA is %s, want %s still", got, caA)
	}
	// The whole new pair: served from the next handshake on.
	copyFile(t, b.ServerCert, certFile)
	if err := s.ReloadAPICertificate(); err != nil {
		t.Fatal(err)
	}
	if got := issuer(); got != caB {
		t.Fatalf("after reload the CA is %s, want the new pair's %s", got, caB)
	}

	// At start, a mismatched pair is an error, not a server.
	copyFile(t, a.ServerKey, keyFile)
	cfg := controlplane.Config{DataDir: t.TempDir(), APIListen: testenv.FreeAddr(t), AgentListen: testenv.FreeAddr(t),
		GossipListen: "127.0.0.1:0", APICertFile: certFile, APIKeyFile: keyFile, Logger: testenv.Logger()}
	srv, err := controlplane.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "private key does not match") {
		t.Fatalf("server with a mismatched --api-key: %v", err)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("the error shows key material: %v", err)
	}
}

// Config errors: the key without the certificate, files with plain HTTP.
func TestAPITLSConfigErrors(t *testing.T) {
	for _, c := range []controlplane.Config{
		{DataDir: t.TempDir(), APICertFile: "c.pem"},
		{DataDir: t.TempDir(), APIKeyFile: "k.pem"},
		{DataDir: t.TempDir(), APICertFile: "c.pem", APIKeyFile: "k.pem", APIInsecureHTTP: true},
	} {
		if _, err := controlplane.New(c); err == nil || !strings.Contains(err.Error(), "--api-") {
			t.Errorf("%+v: %v", c, err)
		}
	}
}

// --api-insecure-http serves plain HTTP (what the test servers and make
// dev use on loopback).
func TestAPIInsecureHTTP(t *testing.T) {
	s := testenv.StartServer(t)
	if !strings.HasPrefix(s.URL(), "http://") || s.ClientTLS != nil {
		t.Fatalf("URL %s", s.URL())
	}
	resp, err := http.Get(s.URL() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/healthz: %s", resp.Status)
	}
	if _, err := s.Admin.Nodes(testenv.Context(t)); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func fingerprintFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return pki.Fingerprint(certs[0])
}

// The cluster CA's certificate for the API is re-issued before it expires:
// new handshakes get the new one, and the pinned client never notices.
func TestAPIClusterCertRenewed(t *testing.T) {
	s := testenv.StartServer(t, testenv.WithAPITLS(), testenv.WithCertLifetime(6*time.Second))
	leaf := func() *x509.Certificate {
		t.Helper()
		c, err := tls.Dial("tcp", s.APIAddr(), s.ClientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	first := leaf()
	testenv.WaitFor(t, 10*time.Second, "a renewed API certificate", func() bool {
		l := leaf()
		return l.SerialNumber.Cmp(first.SerialNumber) != 0 && time.Now().Before(first.NotAfter)
	})
	if _, err := s.Admin.Nodes(testenv.Context(t)); err != nil {
		t.Fatal(err)
	}
}
