package web_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/protos/agentpb"
)

// testCA is a certificate authority made by the test, standing in for the
// ACME CA: it signs leaves InstallCertificate is given.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "npanel test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a chain (leaf, CA) and key PEM for names, and the leaf.
func (ca *testCA) issue(t testing.TB, names ...string) (chainPEM, keyPEM []byte, leaf *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	chainPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	return chainPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), leaf
}

// tlsResponse is what an HTTPS request saw.
type tlsResponse struct {
	code  int
	proto string // "HTTP/2.0"
	alpn  string
	leaf  *x509.Certificate
	hdr   http.Header
	body  string
}

// tlsGet sends GET path over HTTPS to the stack's nginx with SNI and Host
// host, offering h2 and http/1.1. roots nil accepts any certificate (the
// served leaf is returned for the test to check).
func (s *stack) tlsGet(host, path string, roots *x509.CertPool) (tlsResponse, error) {
	conf := &tls.Config{ServerName: host, RootCAs: roots, InsecureSkipVerify: roots == nil, NextProtos: []string{"h2", "http/1.1"}}
	tr := &http.Transport{
		TLSClientConfig:   conf,
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true,
		Proxy:             nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, s.tlsAddr)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("https://" + host + path)
	if err != nil {
		return tlsResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	r := tlsResponse{code: resp.StatusCode, proto: resp.Proto, hdr: resp.Header, body: string(b)}
	if resp.TLS != nil {
		r.alpn = resp.TLS.NegotiatedProtocol
		if len(resp.TLS.PeerCertificates) > 0 {
			r.leaf = resp.TLS.PeerCertificates[0]
		}
	}
	return r, err
}

func (s *stack) mustTLSGet(t testing.TB, host, path string, roots *x509.CertPool) tlsResponse {
	t.Helper()
	r, err := s.tlsGet(host, path, roots)
	if err != nil {
		dumpLogs(t, s)
		t.Fatalf("GET https://%s%s: %v", host, path, err)
	}
	return r
}

func isSelfSigned(c *x509.Certificate) bool {
	return c != nil && len(c.Subject.Organization) == 1 && c.Subject.Organization[0] == "nPanel self-signed"
}

func TestTLSSelfSignedAtOnce(t *testing.T) {
	s := startStack(t)
	o := s.fakeOwner(t)
	d := "npt-tls.example.com"
	s.ensure(t, o, spec(site(d, "public_html", "", "www."+d)), false)

	for _, host := range []string{d, "www." + d} {
		r := s.mustTLSGet(t, host, "/", nil)
		if r.code != 200 || r.body != "ok" {
			t.Fatalf("GET https://%s/: %d %q", host, r.code, r.body)
		}
		if r.alpn != "h2" || r.proto != "HTTP/2.0" {
			t.Errorf("%s: ALPN %q, proto %q; want h2", host, r.alpn, r.proto)
		}
		if !isSelfSigned(r.leaf) || r.leaf.VerifyHostname(host) != nil {
			t.Errorf("%s: served leaf %v (names %v), want our self-signed one covering it", host, r.leaf.Subject, r.leaf.DNSNames)
		}
		if _, ok := r.leaf.PublicKey.(*ecdsa.PublicKey); !ok {
			t.Errorf("self-signed key is %T, want ECDSA", r.leaf.PublicKey)
		}
	}
	// TLS 1.1 is refused.
	raw, err := tls.Dial("tcp", s.tlsAddr, &tls.Config{ServerName: d, InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11})
	if err == nil {
		raw.Close()
		t.Error("TLS 1.1 handshake accepted")
	}
	// An unknown name gets no certificate at all.
	raw, err = tls.Dial("tcp", s.tlsAddr, &tls.Config{ServerName: "unknown.example.org", InsecureSkipVerify: true})
	if err == nil {
		raw.Close()
		t.Error("handshake for an unknown name accepted; want it rejected")
	}

	w := s.env.Profile.Web()
	chain, key := web.CertFiles(w, d)
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key %s: %v %v, want 0600", key, fi.Mode(), err)
	}
	if fi, err := os.Stat(w.CertDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("cert dir: %v %v, want 0700", fi.Mode(), err)
	}
	before, _ := os.ReadFile(chain)

	// The same spec again writes nothing: the self-signed pair stays.
	if res := s.ensure(t, o, spec(site(d, "public_html", "", "www."+d)), false); res.Changed {
		t.Error("second ensure changed files")
	}
	if after, _ := os.ReadFile(chain); string(after) != string(before) {
		t.Error("second ensure remade the self-signed certificate")
	}
	// New names: a new self-signed certificate covering them.
	s.ensure(t, o, spec(site(d, "public_html", "", "www."+d, "shop."+d)), false)
	r := s.mustTLSGet(t, "shop."+d, "/", nil)
	if now, _ := os.ReadFile(chain); string(now) == string(before) {
		t.Error("new names: the self-signed certificate was not remade")
	}
	if !isSelfSigned(r.leaf) || r.leaf.VerifyHostname("shop."+d) != nil {
		t.Errorf("after adding an alias: served %v %v", r.leaf.Subject, r.leaf.DNSNames)
	}
}

func TestTLSInstallCertificate(t *testing.T) {
	s := startStack(t)
	o := s.fakeOwner(t)
	d := "npt-inst.example.com"
	s.ensure(t, o, spec(site(d, "public_html", "", "www."+d)), false)
	ca := newTestCA(t)
	ctx := testenv.Context(t)

	chain, key, leaf := ca.issue(t, d, "www."+d)
	reloaded, err := s.web.InstallCertificate(ctx, s.env, d, chain, key)
	if err != nil {
		t.Fatalf("install: %v", err)
	}
	if fmt.Sprint(reloaded) != "[nginx]" {
		t.Errorf("reloaded %v, want [nginx]", reloaded)
	}
	for _, host := range []string{d, "www." + d} {
		r := s.mustTLSGet(t, host, "/", ca.pool) // verifies against the test CA
		if r.leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 || r.code != 200 {
			t.Fatalf("%s: served serial %v (%d), want the installed %v", host, r.leaf.SerialNumber, r.code, leaf.SerialNumber)
		}
	}

	// A key that does not match the leaf is refused and the installed
	// certificate keeps being served; the error quotes no key.
	chain2, _, _ := ca.issue(t, d)
	_, otherKey, _ := ca.issue(t, d)
	if _, err := s.web.InstallCertificate(ctx, s.env, d, chain2, otherKey); err == nil {
		t.Fatal("mismatched key accepted")
	} else if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), string(otherKey[30:60])) {
		t.Fatalf("error quotes the key: %v", err)
	}
	if _, err := s.web.InstallCertificate(ctx, s.env, d, []byte("garbage"), key); err == nil {
		t.Fatal("garbage chain accepted")
	}
	if _, err := s.web.InstallCertificate(ctx, s.env, "../etc", chain, key); err == nil {
		t.Fatal("site ../etc accepted")
	}
	if r := s.mustTLSGet(t, d, "/", ca.pool); r.leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("after the refused install: serial %v, want %v", r.leaf.SerialNumber, leaf.SerialNumber)
	}

	// The next Ensure, even with changed names, keeps the issued one.
	s.ensure(t, o, spec(site(d, "public_html", "", "www."+d)), false)
	s.ensure(t, o, spec(site(d, "public_html", "", "www."+d, "new."+d)), false)
	if r := s.mustTLSGet(t, d, "/", ca.pool); r.leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("after ensure: serial %v, want the issued %v", r.leaf.SerialNumber, leaf.SerialNumber)
	}

	// Remove puts a self-signed certificate for the site's names back.
	if _, err := s.web.RemoveCertificate(ctx, s.env, d); err != nil {
		t.Fatalf("remove: %v", err)
	}
	r := s.mustTLSGet(t, "new."+d, "/", nil)
	if !isSelfSigned(r.leaf) || r.leaf.VerifyHostname("new."+d) != nil || r.leaf.VerifyHostname(d) != nil {
		t.Fatalf("after remove: served %v %v", r.leaf.Subject, r.leaf.DNSNames)
	}
	_, keyPath := web.CertFiles(s.env.Profile.Web(), d)
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key after remove: %v %v", fi.Mode(), err)
	}
}

// TestTLSInstallRollback: when nginx -t refuses the configuration with the
// new pair (here made to fail by a broken file beside the vhosts), the
// previous chain and key are put back, the key still 0600.
func TestTLSInstallRollback(t *testing.T) {
	s := startStack(t)
	o := s.fakeOwner(t)
	d := "npt-roll.example.com"
	s.ensure(t, o, spec(site(d, "public_html", "")), false)
	ca := newTestCA(t)
	ctx := testenv.Context(t)
	chain, key, leaf := ca.issue(t, d)
	if _, err := s.web.InstallCertificate(ctx, s.env, d, chain, key); err != nil {
		t.Fatal(err)
	}
	chainPath, keyPath := web.CertFiles(s.env.Profile.Web(), d)
	oldChain, _ := os.ReadFile(chainPath)
	oldKey, _ := os.ReadFile(keyPath)

	// Another vhost on disk that nginx -t refuses makes every test fail.
	bad := filepath.Join(s.env.Profile.Web().VhostDir, "zz-broken.conf")
	if err := os.WriteFile(bad, []byte("server { bogus_directive; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	chain2, key2, _ := ca.issue(t, d)
	if _, err := s.web.InstallCertificate(ctx, s.env, d, chain2, key2); err == nil || !strings.Contains(err.Error(), "nginx -t") {
		t.Fatalf("install with nginx -t failing: %v", err)
	}
	os.Remove(bad)
	if c, _ := os.ReadFile(chainPath); string(c) != string(oldChain) {
		t.Error("chain not rolled back")
	}
	if k, _ := os.ReadFile(keyPath); string(k) != string(oldKey) {
		t.Error("key not rolled back")
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("rolled-back key: %v %v, want 0600", fi.Mode(), err)
	}
	if r := s.mustTLSGet(t, d, "/", ca.pool); r.leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("served serial %v, want %v", r.leaf.SerialNumber, leaf.SerialNumber)
	}
}

func TestTLSChallengeRedirectsAndHSTS(t *testing.T) {
	s := startStack(t)
	w := s.env.Profile.Web()
	const token = "npt-token-123"
	if err := os.WriteFile(filepath.Join(web.ChallengeDir(w), token), []byte("key-authorization"), 0o644); err != nil {
		t.Fatal(err)
	}
	active, redirected, suspended := s.fakeOwner(t), s.fakeOwner(t), s.fakeOwner(t)
	forced := &agentpb.Site{Domain: "npt-force.example.com", Docroot: "public_html", HttpsRedirect: true, HstsMaxAge: 31536000}
	s.ensure(t, active, spec(forced), false)
	s.ensure(t, redirected, spec(&agentpb.Site{Domain: "npt-redir.example.com", RedirectTo: "https://example.net/x"}), false)
	s.ensure(t, suspended, spec(site("npt-susp.example.com", "public_html", "")), true)

	for _, host := range []string{"npt-force.example.com", "npt-redir.example.com", "npt-susp.example.com"} {
		code, h, body := s.get(t, host, "/.well-known/acme-challenge/"+token)
		if code != 200 || body != "key-authorization" || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			dumpLogs(t, s)
			t.Errorf("http://%s challenge: %d %q %q", host, code, body, h.Get("Content-Type"))
		}
		r := s.mustTLSGet(t, host, "/.well-known/acme-challenge/"+token, nil)
		if r.code != 200 || r.body != "key-authorization" {
			t.Errorf("https://%s challenge: %d %q", host, r.code, r.body)
		}
		if code, _, _ := s.get(t, host, "/.well-known/acme-challenge/missing"); code != 404 {
			t.Errorf("%s: missing token: %d, want 404", host, code)
		}
	}
	// Everything else on the forced site goes to HTTPS, on nginx's port.
	_, port, _ := net.SplitHostPort(s.tlsAddr)
	code, h, _ := s.get(t, "npt-force.example.com", "/a/b?c=d")
	if want := "https://npt-force.example.com:" + port + "/a/b?c=d"; code != 301 || h.Get("Location") != want {
		t.Errorf("forced site over HTTP: %d %q, want 301 %s", code, h.Get("Location"), want)
	}
	if h.Get("Strict-Transport-Security") != "" {
		t.Errorf("HSTS over plain HTTP: %q", h.Get("Strict-Transport-Security"))
	}
	r := s.mustTLSGet(t, "npt-force.example.com", "/", nil)
	if r.code != 200 || r.hdr.Get("Strict-Transport-Security") != "max-age=31536000" {
		t.Errorf("forced site over HTTPS: %d, HSTS %q", r.code, r.hdr.Get("Strict-Transport-Security"))
	}
	if code, _, _ := s.get(t, "npt-redir.example.com", "/p"); code != 301 {
		t.Errorf("redirect site: %d", code)
	}
	if code, _, _ := s.get(t, "npt-susp.example.com", "/"); code != 503 {
		t.Errorf("suspended site: %d", code)
	}
	// HSTS alone: HTTP keeps serving the site, without the header.
	forced.HttpsRedirect = false
	s.ensure(t, active, spec(forced), false)
	if code, h, body := s.get(t, "npt-force.example.com", "/"); code != 200 || body != "ok" || h.Get("Strict-Transport-Security") != "" {
		t.Errorf("HSTS without redirect over HTTP: %d %q HSTS %q", code, body, h.Get("Strict-Transport-Security"))
	}
}

// TestTLSInstallBurst: 100 certificates installed at once cost a handful
// of reloads, not 100.
func TestTLSInstallBurst(t *testing.T) {
	const n = 100
	s := startStack(t)
	ca := newTestCA(t)
	names := make([]string, n)
	owners := make([]web.Owner, n)
	for i := range names {
		names[i] = fmt.Sprintf("npt-burst%d.example.com", i)
		owners[i] = s.fakeOwner(t)
	}
	var setup sync.WaitGroup
	for i := range names {
		setup.Add(1)
		go func() {
			defer setup.Done()
			if _, err := s.web.Ensure(context.Background(), s.env, owners[i], spec(site(names[i], "public_html", "")), false); err != nil {
				t.Errorf("ensure %s: %v", names[i], err)
			}
		}()
	}
	setup.Wait()
	pairs := make([][2][]byte, n)
	for i, d := range names {
		c, k, _ := ca.issue(t, d)
		pairs[i] = [2][]byte{c, k}
	}
	before := s.m.Reloads("nginx")
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.web.InstallCertificate(context.Background(), s.env, names[i], pairs[i][0], pairs[i][1])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("install %s: %v", names[i], err)
		}
	}
	reloads := s.m.Reloads("nginx") - before
	t.Logf("%d installs: %d reloads", n, reloads)
	if reloads > 10 {
		t.Errorf("%d reloads for %d installs", reloads, n)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		if r := s.mustTLSGet(t, names[i], "/", ca.pool); r.code != 200 {
			t.Errorf("%s: %d", names[i], r.code)
		}
	}
}
