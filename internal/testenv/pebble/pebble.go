// Package pebble starts Pebble, Let's Encrypt's ACME test server (Debian's
// pebble package), for a test: its own HTTPS certificate, directory and
// management listeners on free loopback ports, and the validation authority
// pointed at the ports and the DNS server the test chooses.
//
// Like internal/testenv/pdns it does not import internal/testenv, which
// imports the agent and through it the TLS actions whose tests use this
// package; testenv.StartPebble is the same function for other tests.
package pebble

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv/daemon"
)

// Binary is where Debian's pebble package puts the server.
const Binary = "/usr/bin/pebble"

// Options tune a Pebble.
type Options struct {
	// HTTPPort is the port the validation authority connects to for
	// HTTP-01 (default 5002); TLSPort the one for TLS-ALPN-01 (5001).
	HTTPPort, TLSPort int
	// DNSServer (host:port) is where the validation authority resolves
	// names, over TCP only; empty: the system resolver.
	DNSServer string
	// CertificateValidity is the lifetime of issued certificates; zero:
	// Pebble's default (about 5 years in 2.4).
	CertificateValidity time.Duration
	// AlwaysValid skips validation entirely (PEBBLE_VA_ALWAYS_VALID): only
	// for tests that do not test the challenges.
	AlwaysValid bool
	// AuthzReuse is the percentage of orders in which Pebble reuses an
	// account's valid authorizations (PEBBLE_AUTHZREUSE). Pebble's own
	// default is 50; here it is 0, so that every order is validated and
	// timings do not depend on chance.
	AuthzReuse int
	// EABKeys requires External Account Binding with these key ids and
	// base64url HMAC keys.
	EABKeys map[string]string
}

// Server is one running Pebble.
type Server struct {
	// DirectoryURL is the ACME directory (https://127.0.0.1:PORT/dir).
	DirectoryURL string
	// ManagementURL is the management interface (roots, cert status).
	ManagementURL string
	// CAPEM is the certificate that signs Pebble's own HTTPS: what an
	// ACME client must trust to talk to it (AcmeServer.root_cas_pem).
	CAPEM []byte
	// HTTPClient trusts CAPEM.
	HTTPClient *http.Client
	Dir        string
	PID        int

	cmd  *exec.Cmd
	done chan struct{}
}

// Require fails under CI=true and skips elsewhere when pebble is missing.
func Require(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		if strings.EqualFold(os.Getenv("CI"), "true") {
			t.Fatalf("%s is not installed; make test installs it (see Makefile deps)", Binary)
		}
		t.Skipf("%s is not installed (run make deps)", Binary)
	}
}

// Start runs Pebble and registers its stop with t.Cleanup; it returns once
// the directory answers.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	Require(t)
	if opts.HTTPPort == 0 {
		opts.HTTPPort = 5002
	}
	if opts.TLSPort == 0 {
		opts.TLSPort = 5001
	}
	s := &Server{Dir: t.TempDir(), done: make(chan struct{})}
	certPEM, keyPEM, err := selfSigned()
	if err != nil {
		t.Fatalf("pebble: %v", err)
	}
	s.CAPEM = certPEM
	certFile, keyFile := filepath.Join(s.Dir, "cert.pem"), filepath.Join(s.Dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	listen, mgmt := freeAddr(t), freeAddr(t)
	cfg := map[string]any{
		"listenAddress":           listen,
		"managementListenAddress": mgmt,
		"certificate":             certFile,
		"privateKey":              keyFile,
		"httpPort":                opts.HTTPPort,
		"tlsPort":                 opts.TLSPort,
		"ocspResponderURL":        "",
	}
	if opts.CertificateValidity > 0 {
		cfg["certificateValidityPeriod"] = int64(opts.CertificateValidity / time.Second)
	}
	if len(opts.EABKeys) > 0 {
		cfg["externalAccountBindingRequired"] = true
		cfg["externalAccountMACKeys"] = opts.EABKeys
	}
	b, err := json.Marshal(map[string]any{"pebble": cfg})
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(s.Dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-config", cfgFile}
	if opts.DNSServer != "" {
		args = append(args, "-dnsserver", opts.DNSServer)
	}
	logf, err := os.Create(filepath.Join(s.Dir, "pebble.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(Binary, args...)
	s.cmd.Dir = s.Dir
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Env = []string{"PATH=/usr/bin:/bin", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0",
		fmt.Sprintf("PEBBLE_AUTHZREUSE=%d", opts.AuthzReuse)}
	if opts.AlwaysValid {
		s.cmd.Env = append(s.cmd.Env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("pebble: start: %v", err)
	}
	s.PID = s.cmd.Process.Pid
	go func() {
		_ = s.cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	t.Cleanup(s.Stop)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	s.HTTPClient = &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	s.DirectoryURL = "https://" + listen + "/dir"
	s.ManagementURL = "https://" + mgmt
	if err := s.waitReady(15 * time.Second); err != nil {
		t.Fatalf("pebble: %v\n%s", err, s.LogTail())
	}
	return s
}

// Stop ends Pebble (SIGTERM, then SIGKILL after 5 s) and waits for it.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	daemon.Stop(s.PID, s.done)
}

// LogTail returns the end of Pebble's log, for failure messages.
func (s *Server) LogTail() string {
	return daemon.LogTail(filepath.Join(s.Dir, "pebble.log"), 6000)
}

// Root returns the PEM of the root that issues this run's certificates
// (it changes every start).
func (s *Server) Root(ctx context.Context) ([]byte, error) {
	return s.management(ctx, "/roots/0")
}

// Intermediate returns the PEM of the intermediate that signs leaves.
func (s *Server) Intermediate(ctx context.Context) ([]byte, error) {
	return s.management(ctx, "/intermediates/0")
}

// CertStatus is Pebble's answer for one serial.
type CertStatus struct {
	Serial    string
	Status    string // "Valid" or "Revoked"
	Reason    int
	RevokedAt string
}

// CertStatus asks Pebble whether the certificate with the hex serial is
// revoked.
func (s *Server) CertStatus(ctx context.Context, serial string) (*CertStatus, error) {
	b, err := s.management(ctx, "/cert-status-by-serial/"+serial)
	if err != nil {
		return nil, err
	}
	var st CertStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("cert status: %w", err)
	}
	return &st, nil
}

func (s *Server) management(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.ManagementURL+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return b, nil
}

func (s *Server) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("pebble exited during start")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.DirectoryURL, nil)
		resp, err := s.HTTPClient.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("directory answered %s", resp.Status)
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("directory not ready after %s: %v", limit, last)
}

// selfSigned makes Pebble's HTTPS certificate: P-256, for 127.0.0.1 and
// localhost.
func selfSigned() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "pebble test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// FreePort returns a loopback port for a listener of the test's own
// (daemon.FreePort).
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := daemon.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func freeAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}
