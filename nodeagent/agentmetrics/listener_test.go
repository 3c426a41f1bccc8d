package agentmetrics

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert, key}
}

// leaf issues a certificate usable both ways, as the cluster's node
// certificates are.
func (ca testCA) leaf(t *testing.T, name string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, KeyUsage: x509.KeyUsageDigitalSignature,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func startListener(t *testing.T, tokens *TokenSet, root testCA, serverCert *tls.Certificate) string {
	t.Helper()
	s, err := Listen(ServerConfig{
		Addr:           "127.0.0.1:0",
		Handler:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "npanel_x 1\n") }),
		Tokens:         tokens,
		Root:           root.cert,
		GetCertificate: func() (*tls.Certificate, error) { return serverCert, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s.Addr().String()
}

// TestListenerAuth is the auth matrix, over plain HTTP and TLS on the one
// port.
func TestListenerAuth(t *testing.T) {
	cluster, other := newTestCA(t, "cluster"), newTestCA(t, "other")
	tokens, err := LoadTokenSet(filepath.Join(t.TempDir(), ScrapeAuthFile))
	if err != nil {
		t.Fatal(err)
	}
	good := sha256.Sum256([]byte("nps_good"))
	if err := tokens.Replace([][]byte{good[:]}); err != nil {
		t.Fatal(err)
	}
	addr := startListener(t, tokens, cluster, cluster.leaf(t, "node1"))

	roots := x509.NewCertPool()
	roots.AddCert(cluster.cert)
	client := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: roots}
		if cert != nil {
			// Sent whatever CAs the server names: Go's client would
			// otherwise keep a certificate of another CA to itself.
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	tests := []struct {
		name, scheme, token string
		cert                *tls.Certificate
		want                int // 0: the request must fail (handshake refused)
	}{
		{"plain no token", "http", "", nil, 401},
		{"plain wrong token", "http", "nps_bad", nil, 401},
		{"plain right token", "http", "nps_good", nil, 200},
		{"tls no token", "https", "", nil, 401},
		{"tls wrong token", "https", "nps_bad", nil, 401},
		{"tls right token", "https", "nps_good", nil, 200},
		{"tls cluster cert", "https", "", cluster.leaf(t, "prometheus"), 200},
		{"tls other CA cert", "https", "", other.leaf(t, "intruder"), 0},
		{"tls other CA cert and right token", "https", "nps_good", other.leaf(t, "intruder"), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", tt.scheme+"://"+addr+"/metrics", nil)
			if tt.token != "" {
				req.Header.Set("Authorization", "Bearer "+tt.token)
			}
			resp, err := client(tt.cert).Do(req)
			if tt.want == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("status %d, want the handshake refused", resp.StatusCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.want, body)
			}
			if tt.want == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", resp.Header.Get("WWW-Authenticate"))
			}
			if tt.want == 200 && string(body) != "npanel_x 1\n" {
				t.Errorf("body %q", body)
			}
		})
	}
}

// TestListenerSilentClient: a client that connects and sends nothing must
// not keep others from being served.
func TestListenerSilentClient(t *testing.T) {
	ca := newTestCA(t, "cluster")
	tokens, _ := LoadTokenSet("")
	addr := startListener(t, tokens, ca, ca.leaf(t, "node1"))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestTokenSetPersisted(t *testing.T) {
	path := filepath.Join(t.TempDir(), ScrapeAuthFile)
	s, err := LoadTokenSet(path)
	if err != nil || s.Len() != 0 {
		t.Fatalf("empty set: %v, %d", err, s.Len())
	}
	a, b := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	if err := s.Replace([][]byte{a[:], b[:]}); err != nil {
		t.Fatal(err)
	}
	if err := s.Replace([][]byte{[]byte("short")}); err == nil || s.Len() != 2 {
		t.Fatalf("a short digest was taken: %v, %d", err, s.Len())
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v %v", fi, err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "a\n") || len(strings.Fields(string(raw))) != 2 {
		t.Fatalf("file holds %q", raw)
	}
	r, err := LoadTokenSet(path)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Admit("a") || !r.Admit("b") || r.Admit("c") || r.Admit("") {
		t.Fatal("reloaded set admits the wrong tokens")
	}
	if err := r.Replace(nil); err != nil || r.Admit("a") {
		t.Fatalf("emptied set: %v", err)
	}
}
