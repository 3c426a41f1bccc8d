package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/etcdtls"
	"github.com/npanel/npanel/pki"
)

// AdminPassword is the admin password of every test server.
const AdminPassword = "test-admin-password-0123"

// Server is a control plane replica running in the test process.
type Server struct {
	*controlplane.Server
	Config controlplane.Config
	// Admin is an API client logged in as admin.
	Admin *client.Client
	// ClientTLS is how clients verify the API when it serves HTTPS
	// (WithAPITLS): the cluster CA's root pinned by its fingerprint, or
	// the roots given to WithAPICertFiles. Nil for plain HTTP.
	ClientTLS *tls.Config

	apiRoots *x509.CertPool

	t       testing.TB
	cancel  context.CancelFunc
	done    chan error
	retries int
}

// ServerOption adjusts a test server's config before it starts.
type ServerOption func(*controlplane.Config)

// WithEtcd points the server at an external etcd, with its client
// certificate and the key-encryption key file every replica on it shares.
func WithEtcd(e *Etcd) ServerOption {
	return func(c *controlplane.Config) {
		c.EtcdEndpoints = e.Endpoints
		c.EtcdCACert, c.EtcdCert, c.EtcdKey = e.TLS.CA, e.TLS.ClientCert, e.TLS.ClientKey
		c.KEKFile = e.KEKFile
	}
}

// WithAPITLS serves the API over HTTPS with a certificate from the cluster
// CA, as a production server does by default; test servers serve plain
// HTTP otherwise. Clients trust it through ClientTLS (and Client).
func WithAPITLS() ServerOption {
	return func(c *controlplane.Config) { c.APIInsecureHTTP = false }
}

// WithAPICertFiles serves the API over HTTPS with the certificate and key in
// these PEM files; roots (set on the server by StartServer) is what clients
// verify it with.
func WithAPICertFiles(certFile, keyFile string) ServerOption {
	return func(c *controlplane.Config) {
		c.APIInsecureHTTP = false
		c.APICertFile, c.APIKeyFile = certFile, keyFile
	}
}

// WithCertLifetime shortens node certificates, to exercise renewal.
func WithCertLifetime(d time.Duration) ServerOption {
	return func(c *controlplane.Config) { c.CertLifetime = d }
}

// WithDataDir runs the server on dir, e.g. one restored from a snapshot.
func WithDataDir(dir string) ServerOption {
	return func(c *controlplane.Config) { c.DataDir = dir }
}

// WithAgentListen serves agents on addr: a replacement server on the
// address the agents already know.
func WithAgentListen(addr string) ServerOption {
	return func(c *controlplane.Config) { c.AgentListen = addr }
}

// StartServer starts a replica with its own data dir and fixed loopback
// ports, waits until it is ready and logs in as admin.
func StartServer(t testing.TB, opts ...ServerOption) *Server {
	t.Helper()
	return startServer(t, nil, opts...)
}

func startServer(t testing.TB, roots *x509.CertPool, opts ...ServerOption) *Server {
	t.Helper()
	cfg := controlplane.Config{
		DataDir:           dataDir(t),
		APIListen:         FreeAddr(t),
		AgentListen:       FreeAddr(t),
		GossipListen:      "127.0.0.1:0",
		AdminPassword:     AdminPassword,
		HeartbeatInterval: 500 * time.Millisecond,
		LeaseTTL:          3 * time.Second,
		// Database sizes follow within seconds in tests.
		DatabaseStatusInterval: 5 * time.Second,
		ElectionTTL:            2 * time.Second,
		AllowTestUsernames:     true,
		PasswordCost:           bcrypt.MinCost,
		// A wiped DNS secondary heals within seconds, not a minute.
		ZoneSecondaryResync: 2 * time.Second,
		Version:             "test",
		Logger:              Logger(),
		// Tests talk plain HTTP to the API unless they ask for HTTPS
		// (WithAPITLS, WithAPICertFiles).
		APIInsecureHTTP: true,
		Notice:          io.Discard,
	}
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{Config: cfg, t: t, apiRoots: roots}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// DataDir is a fresh directory usable as a server's data dir, removed at
// cleanup.
func DataDir(t testing.TB) string {
	t.Helper()
	return dataDir(t)
}

// dataDir is a fresh data dir short enough for the embedded etcd's unix
// sockets (107 bytes): a t.TempDir under a long $TMPDIR may not be.
func dataDir(t testing.TB) string {
	t.Helper()
	if d := t.TempDir(); len(d) <= 80 {
		return d
	}
	d, err := os.MkdirTemp("/tmp", "npanel-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (s *Server) start() {
	s.t.Helper()
	srv, err := controlplane.New(s.Config)
	if err != nil {
		s.t.Fatalf("new server: %v", err)
	}
	s.Server = srv
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan error, 1)
	go func() { s.done <- srv.Run(ctx) }()
	select {
	case <-srv.Ready():
	case err := <-s.done:
		// FreeAddr's ports are free when picked, not reserved: another
		// process (a daemon of a parallel test) may bind one first.
		msg := err.Error()
		taken := strings.Contains(msg, s.Config.APIListen) || strings.Contains(msg, s.Config.AgentListen)
		if strings.Contains(msg, "address already in use") && taken && s.retries < 3 {
			s.retries++
			cancel()
			s.Config.APIListen, s.Config.AgentListen = FreeAddr(s.t), FreeAddr(s.t)
			s.start()
			return
		}
		s.done <- err
		s.t.Fatalf("server did not start: %v", err)
	case <-time.After(60 * time.Second):
		s.t.Fatalf("server not ready after 60s")
	}
	lctx, lcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer lcancel()
	s.ClientTLS = nil
	if !s.Config.APIInsecureHTTP {
		if s.Config.APICertFile != "" {
			s.ClientTLS = &tls.Config{RootCAs: s.apiRoots, MinVersion: tls.VersionTLS12}
		} else {
			host, _, _ := net.SplitHostPort(srv.APIAddr())
			s.ClientTLS = pki.PinnedTLSConfig(host, srv.CA().RootFingerprint())
		}
	}
	admin, _, err := s.Client("").Login(lctx, "admin", AdminPassword)
	if err != nil {
		s.t.Fatalf("admin login: %v", err)
	}
	s.Admin = admin
}

// URL is the API base URL.
func (s *Server) URL() string { return s.APIURL() }

// Client is an API client with token that verifies the API with ClientTLS.
func (s *Server) Client(token string) *client.Client {
	if s.ClientTLS == nil {
		return client.New(s.URL(), token)
	}
	return client.New(s.URL(), token, client.WithTLS(s.ClientTLS))
}

// StartServerWithRoots is StartServer for a server that serves the API with
// a certificate of another CA (WithAPICertFiles): roots are what its
// clients verify it with.
func StartServerWithRoots(t testing.TB, roots *x509.CertPool, opts ...ServerOption) *Server {
	t.Helper()
	return startServer(t, roots, opts...)
}

// Stop stops the replica and waits for it to release everything. It is safe
// to call more than once.
func (s *Server) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			s.t.Errorf("server exited: %v", err)
		}
	case <-time.After(30 * time.Second):
		s.t.Errorf("server did not stop within 30s")
	}
}

// Restart stops the replica and starts it again on the same data dir and ports.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Running reports whether the replica has not been stopped.
func (s *Server) Running() bool { return s.cancel != nil }

// Etcd is a standalone etcd started by StartEtcd.
type Etcd struct {
	Endpoints []string
	// TLS holds the CA and the client certificate it requires.
	TLS etcdtls.Files
	// KEKFile is where the first server started on this etcd creates the
	// key-encryption key and where the others find it, as replicas of one
	// cluster each hold a copy of the same file.
	KEKFile string
}

// StartEtcd runs a standalone single-member etcd for tests that need an
// external cluster shared by several replicas. It serves TLS and requires
// client certificates, as a production cluster must.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	dir := t.TempDir()
	files, err := etcdtls.Write(dir)
	if err != nil {
		t.Fatalf("etcd certificates: %v", err)
	}
	// FreeAddr's port may be taken (by another test's outgoing connection)
	// before etcd binds it: try again on fresh ports.
	var e *embed.Etcd
	var cu url.URL
	for attempt := 1; ; attempt++ {
		cfg := embed.NewConfig()
		cfg.Name = "test-etcd"
		cfg.Dir = t.TempDir()
		cu = url.URL{Scheme: "https", Host: FreeAddr(t)}
		pu := url.URL{Scheme: "http", Host: FreeAddr(t)}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile:       files.ServerCert,
			KeyFile:        files.ServerKey,
			TrustedCAFile:  files.CA,
			ClientCertAuth: true,
		}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		var err error
		e, err = embed.StartEtcd(cfg)
		if err == nil {
			break
		}
		inUse := errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
		if !inUse || attempt == 5 {
			t.Fatalf("start etcd: %v", err)
		}
	}
	t.Cleanup(func() { e.Close(); <-e.Server.StopNotify() })
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		t.Fatalf("etcd not ready")
	}
	return &Etcd{Endpoints: []string{cu.String()}, TLS: files, KEKFile: filepath.Join(t.TempDir(), "kek")}
}

// EtcdClient returns a client of e with its client certificate, closed at
// cleanup.
func EtcdClient(t testing.TB, e *Etcd) *clientv3.Client {
	t.Helper()
	tlsCfg, err := (&transport.TLSInfo{CertFile: e.TLS.ClientCert, KeyFile: e.TLS.ClientKey, TrustedCAFile: e.TLS.CA}).ClientConfig()
	if err != nil {
		t.Fatalf("etcd client TLS: %v", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.Endpoints, TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// RawEtcd returns a client of the server's embedded etcd over its socket,
// closed at cleanup, for tests that read or write what the store never
// would (every key, an entry that does not decode).
func (s *Server) RawEtcd(t testing.TB) *clientv3.Client {
	t.Helper()
	if len(s.Config.EtcdEndpoints) > 0 {
		t.Fatal("RawEtcd: the server runs on an external etcd; use EtcdClient")
	}
	sock := filepath.Join(s.Config.DataDir, controlplane.EtcdClientSocket)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + sock}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
