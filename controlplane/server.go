// Package controlplane assembles an nPanel server replica: the cluster store
// in etcd, the embedded CA, the agent gateway, the GraphQL API, liveness and
// the controllers that run on the elected leader.
package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/atomicfile"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/pki/ca"
	"github.com/npanel/npanel/validate"
)

// Server is one control plane replica. Every replica serves the API and
// agents; the one elected leader also runs the controllers.
type Server struct {
	cfg Config
	log *slog.Logger

	etcd  *embed.Etcd // nil with external etcd
	store *store.Store
	ca    *ca.CA
	auth  *auth.Authenticator
	sec   *store.Secrets
	// kek seals what the control plane keeps of secrets it must read
	// again (backup repository passwords, S3 keys).
	kek *pki.KEK
	id  string

	metrics *metrics
	gateway *gateway
	gossip  *gossip

	accounts *accountIndex
	// controllers run on the controller runtime while this replica leads.
	controllers *controller.Manager
	dnsViews    dnsViewCache
	// zoneCtl is the running zone controller (leader only), told of the
	// tasks the API queues (zoneWriter).
	zoneCtl atomic.Pointer[zoneController]

	gatewayCert atomic.Pointer[tls.Certificate]
	apiTLS      apiTLS
	leader      atomic.Bool
	election    *election

	apiLn, agentLn net.Listener
	ready          chan struct{}
	readyOnce      sync.Once

	// scrape is the replica's view of the scrape tokens.
	scrape *scrapeTokens
	// nodeUpNames are the nodes npanel_node_up has a series for (the
	// liveness controller's).
	nodeUpNames map[string]bool
}

// New validates cfg. Nothing is started until Run.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: cfg.Logger, ready: make(chan struct{})}, nil
}

// Ready is closed once the replica serves the API and agents.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// ID is this replica's id, stable across restarts of the same data dir.
func (s *Server) ID() string { return s.id }

// ReplicaID implements graph.Cluster.
func (s *Server) ReplicaID() string { return s.id }

// IsLeader reports whether this replica currently runs the controllers.
func (s *Server) IsLeader() bool { return s.leader.Load() }

// Store gives tests and embedders the typed store.
func (s *Server) Store() *store.Store { return s.store }

// APIAddr and AgentAddr are the bound listener addresses (useful with port 0).
func (s *Server) APIAddr() string   { return s.apiLn.Addr().String() }
func (s *Server) AgentAddr() string { return s.agentLn.Addr().String() }

// CA returns the cluster CA.
func (s *Server) CA() *ca.CA { return s.ca }

// NewJoinToken implements graph.Cluster.
func (s *Server) NewJoinToken(node string, hosts []string, ttl time.Duration) (string, time.Time, error) {
	tok, claims, err := s.ca.NewJoinToken(node, hosts, ttl)
	if err != nil {
		return "", time.Time{}, err
	}
	return tok, claims.ExpiresAt, nil
}

// Run starts the replica and blocks until ctx is cancelled or a component
// fails; it shuts everything down before returning.
func (s *Server) Run(ctx context.Context) (err error) {
	var cleanups []func()
	defer func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	// Private whatever it was created with: it holds the embedded etcd's
	// sockets and data, the key-encryption key and the admin password.
	if err := os.Chmod(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	idPath := filepath.Join(s.cfg.DataDir, "replica-id")
	_, statErr := os.Stat(idPath)
	firstStart := errors.Is(statErr, os.ErrNotExist)
	if s.id, err = loadOrCreateID(idPath); err != nil {
		return err
	}
	s.log = s.log.With("replica", s.id)

	var etcdTLS *tls.Config
	if len(s.cfg.EtcdEndpoints) == 0 {
		s.etcd, err = startEmbeddedEtcd(s.cfg.DataDir, s.log)
		if err != nil {
			return err
		}
		cleanups = append(cleanups, func() {
			s.etcd.Close()
			<-s.etcd.Server.StopNotify()
		})
	} else if etcdTLS, err = s.cfg.etcdTLS(); err != nil {
		return err
	}
	connect := func() (*clientv3.Client, error) {
		if s.etcd != nil {
			// The embedded member is in this process: calls go to it
			// directly instead of through gRPC over loopback, which cost
			// about a sixth of the server's CPU under load. Its client
			// socket stays open for etcdctl run as the server's user.
			return v3client.New(s.etcd.Server), nil
		}
		return newEtcdClient(s.cfg.EtcdEndpoints, etcdTLS)
	}
	cli, err := connect()
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { cli.Close() })
	indexCli, err := connect()
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { indexCli.Close() })
	// The agent gateway has a client of its own (see gateway): API load
	// on cli cannot hold up task delivery.
	gatewayCli, err := connect()
	if err != nil {
		return err
	}
	cleanups = append(cleanups, func() { gatewayCli.Close() })
	s.store = store.New(cli)
	switch {
	case len(s.cfg.EtcdEndpoints) == 0:
		s.store.SetTxnLimits(embeddedMaxTxnOps, embeddedMaxRequestBytes)
	case s.cfg.EtcdMaxTxnOps > 0:
		s.store.SetTxnLimits(s.cfg.EtcdMaxTxnOps, externalMaxRequestBytes)
	}

	if err := s.bootstrap(ctx); err != nil {
		return err
	}
	s.metrics = newMetrics()

	// Listeners first, so that the gateway certificate can name the bound
	// address and tests can use port 0.
	if s.agentLn, err = net.Listen("tcp", s.cfg.AgentListen); err != nil {
		return fmt.Errorf("agent listener: %w", err)
	}
	if s.apiLn, err = net.Listen("tcp", s.cfg.APIListen); err != nil {
		s.agentLn.Close()
		return fmt.Errorf("api listener: %w", err)
	}
	s.apiLn = newAPIListener(s.apiLn, s.cfg.MaxAPIConnections, s.cfg.MaxConnectionsPerIP, s.cfg.TrustedProxies, s.metrics)
	// Closed by the servers that serve them, or here when Run fails
	// before they do (closing twice is harmless).
	cleanups = append(cleanups, func() { s.apiLn.Close(); s.agentLn.Close() })
	if err := s.issueGatewayCert(); err != nil {
		return err
	}
	apiTLSConfig, err := s.setupAPITLS()
	if err != nil {
		return err
	}

	if s.gossip, err = startGossip(s.cfg.GossipListen, "server:"+s.id, s.sec.GossipKey, s.log); err != nil {
		return err
	}
	cleanups = append(cleanups, s.gossip.shutdown)

	sess, err := s.newSession(ctx)
	if err != nil {
		return err
	}
	s.election = newElection(s, sess)
	cleanups = append(cleanups, s.election.close)
	s.joinReplicas(ctx)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)

	s.accounts = newAccountIndex(s, store.New(indexCli))
	go s.accounts.run(runCtx)
	certs, err := newCertController(s)
	if err != nil {
		return err
	}
	s.controllers = controller.NewManager()
	s.controllers.Add(
		newAccountController(s).ctl,
		controller.RunFunc(s.runZoneControllers),
		newDatabaseController(s),
		newDBStatusController(s).ctl,
		newMailController(s),
		certs,
		controller.RunFunc(s.runLiveness),
		controller.RunFunc(s.runPruner),
	)
	if !s.cfg.Backup.Paused {
		s.controllers.Add(newBackupController(s))
	}
	s.controllers.Add(newCpanelImportController(s))
	s.controllers.Add(newCpanelFetchController(s))
	if !s.cfg.Migration.Paused {
		s.controllers.Add(newMigrationController(s))
	}
	s.store.RunMirrors(runCtx, s.log)
	// Before the API serves: until every hosted name is in the tree, a
	// name inside or above one of them would pass the overlap check.
	if n, err := s.store.BackfillNameTree(ctx); err != nil {
		return fmt.Errorf("backfill the name tree: %w", err)
	} else if n > 0 {
		s.log.Info("name tree backfilled", "names", n)
	}

	s.scrape = newScrapeTokens(s.metrics.scrapeTokens.Set)
	scrapeRev, err := s.scrape.load(ctx, s.store)
	if err != nil {
		return fmt.Errorf("load the scrape tokens: %w", err)
	}
	go s.scrape.follow(runCtx, s.store, scrapeRev)

	s.gateway = newGateway(s, store.New(gatewayCli))
	go s.gateway.checkDelivery(runCtx)
	grpcSrv := s.gateway.grpcServer()
	go func() { errc <- grpcSrv.Serve(s.agentLn) }()
	cleanups = append(cleanups, func() { stopGRPC(grpcSrv, 5*time.Second) })

	httpSrv := &http.Server{
		Handler:           s.httpHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if apiTLSConfig != nil {
		httpSrv.TLSConfig = apiTLSConfig
		go func() { errc <- httpSrv.ServeTLS(s.apiLn, "", "") }()
	} else {
		go func() { errc <- httpSrv.Serve(s.apiLn) }()
	}
	cleanups = append(cleanups, func() {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = httpSrv.Shutdown(sctx)
	})

	if s.cfg.DebugListen != "" {
		dbg := &http.Server{Addr: s.cfg.DebugListen, Handler: debugHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := dbg.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("debug listener", "err", err)
			}
		}()
		cleanups = append(cleanups, func() { _ = dbg.Close() })
	}
	go s.rotateCert(runCtx, "gateway", &s.gatewayCert, s.issueGatewayCert)
	go s.runAPICertRenewal(runCtx)
	go func() { errc <- s.election.run(runCtx) }()

	s.readyOnce.Do(func() { close(s.ready) })
	s.announceAPI(firstStart)
	s.log.Info("npanel server ready", "api", s.APIURL()+"/graphql", "agents", s.AgentAddr(),
		"advertise", s.cfg.Advertise, "gossip", s.gossip.addr(), "ca_fingerprint", s.ca.RootFingerprint())

	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
			return nil
		}
		return err
	}
}

// bootstrap creates (first start) or loads the CA, secrets and admin user.
func (s *Server) bootstrap(ctx context.Context) error {
	bctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	kek, err := s.loadKEK(bctx)
	if err != nil {
		return err
	}
	m, sec, migrated, err := s.store.Bootstrap(bctx, kek,
		func() (*ca.Material, error) { return ca.GenerateMaterial("npanel") },
		newSecrets)
	if errors.Is(err, pki.ErrKEKMismatch) {
		return fmt.Errorf("bootstrap cluster: %w: copy the key-encryption key file from a replica of this cluster to %s", err, s.cfg.KEKFile)
	}
	if err != nil {
		return fmt.Errorf("bootstrap cluster: %w", err)
	}
	if migrated {
		s.log.Info("sealed the cluster CA and secrets in etcd under the key-encryption key", "kek", kek.ID(), "path", s.cfg.KEKFile)
	}
	s.sec, s.kek = sec, kek
	if s.ca, err = ca.New(m, ca.Options{CertLifetime: s.cfg.CertLifetime, Logger: s.log}); err != nil {
		return fmt.Errorf("start CA: %w", err)
	}
	s.auth = auth.New(s.store, sec.TokenKey, s.cfg.PasswordCost)
	if err := s.ensureAdmin(bctx); err != nil {
		return err
	}
	if migrated {
		// Not on bctx: on a large database this may take a while, and
		// failing it costs only a warning.
		s.scrubClearHistory(ctx)
	}
	return nil
}

// loadKEK reads the key-encryption key file, creating it when the cluster
// is new or still holds its material in the clear. A replica without the
// file joining a cluster whose material is sealed stops: it needs a copy of
// the key the other replicas hold, not a key of its own.
func (s *Server) loadKEK(ctx context.Context) (*pki.KEK, error) {
	kek, err := pki.LoadKEK(s.cfg.KEKFile)
	if err == nil {
		return kek, nil
	}
	if !pki.KEKMissing(err) {
		return nil, err
	}
	exists, sealedWith, err := s.store.ClusterKEK(ctx)
	if err != nil {
		return nil, fmt.Errorf("bootstrap cluster: %w", err)
	}
	if exists && sealedWith != "" {
		return nil, fmt.Errorf("bootstrap cluster: the cluster's CA and secrets in etcd are sealed with key-encryption key %s and %s does not exist: copy that file from a replica of this cluster (mode 0600)", sealedWith, s.cfg.KEKFile)
	}
	if kek, err = pki.CreateKEK(s.cfg.KEKFile); err != nil {
		return nil, err
	}
	s.log.Info("created the key-encryption key; back it up and copy it to every replica", "kek", kek.ID(), "path", s.cfg.KEKFile)
	return kek, nil
}

// scrubClearHistory drops the clear records a migration replaced from the
// embedded etcd's database: a compaction at the current revision removes the
// old revisions, a defragmentation rewrites the file without the pages that
// held them. (The WAL keeps them until etcd rotates it.) An external etcd is
// left to its operator: compacting a shared cluster under other replicas'
// watches is not this replica's call.
func (s *Server) scrubClearHistory(ctx context.Context) {
	if s.etcd == nil {
		s.log.Warn("the clear CA and secrets stay in the external etcd's history until it is compacted and defragmented (etcdctl compact, etcdctl defrag)")
		return
	}
	err := s.store.CompactAll(ctx)
	if err == nil {
		// Directly on the backend: the in-process client's Defragment
		// has no health notifier to call and panics.
		err = s.etcd.Server.Backend().Defrag()
	}
	if err != nil {
		s.log.Warn("could not compact and defragment the embedded etcd after sealing; its files keep the clear CA and secrets until it compacts", "err", err)
	}
}

func newSecrets() (*store.Secrets, error) {
	sec := &store.Secrets{TokenKey: make([]byte, 32), GossipKey: make([]byte, 32)}
	id := make([]byte, 8)
	for _, b := range [][]byte{sec.TokenKey, sec.GossipKey, id} {
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
	}
	sec.ClusterID = hex.EncodeToString(id)
	return sec, nil
}

// ensureAdmin creates the admin user on the cluster's first start. The
// password comes from the config or is generated and written, mode 0600, to
// DataDir/initial-admin-password; it is never logged.
func (s *Server) ensureAdmin(ctx context.Context) error {
	if _, err := s.store.GetUser(ctx, "admin"); err == nil {
		return nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	pw := s.cfg.AdminPassword
	generated := pw == ""
	if generated {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		pw = base64.RawURLEncoding.EncodeToString(b)
	}
	if !generated {
		// The first admin's password meets the rules every other one does.
		if err := validate.Password(pw); err != nil {
			return fmt.Errorf("admin password ($NPANEL_ADMIN_PASSWORD): %w", err)
		}
	}
	hash, err := s.auth.HashPassword(pw)
	if err != nil {
		return err
	}
	u := store.User{Name: "admin", Role: store.RoleAdmin, PasswordHash: hash, CreatedAt: time.Now().UTC()}
	err = s.store.CreateUser(ctx, u, store.NewAuditEvent("system", s.id, "createUser", "admin", "ok"))
	if errors.Is(err, store.ErrConflict) {
		return nil // another replica won the race
	}
	if err != nil {
		return err
	}
	if generated {
		path := filepath.Join(s.cfg.DataDir, "initial-admin-password")
		if err := atomicfile.WriteFile(path, []byte(pw+"\n"), 0o600, nil); err != nil {
			return fmt.Errorf("write initial admin password: %w", err)
		}
		s.log.Info("created admin user; its password is in the file", "path", path)
	} else {
		s.log.Info("created admin user with the password from NPANEL_ADMIN_PASSWORD")
	}
	return nil
}

// issueGatewayCert issues this replica's serving certificate for the
// advertised and listening hosts.
func (s *Server) issueGatewayCert() error {
	hosts := map[string]bool{"localhost": true}
	for _, a := range []string{s.cfg.Advertise, s.agentLn.Addr().String()} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" && h != "0.0.0.0" && h != "::" {
			hosts[h] = true
		}
	}
	list := make([]string, 0, len(hosts))
	for h := range hosts {
		list = append(list, h)
	}
	cert, err := s.ca.IssueServerCertificate(s.id, list)
	if err != nil {
		return fmt.Errorf("issue gateway certificate: %w", err)
	}
	s.gatewayCert.Store(&cert)
	return nil
}

// rotateCert re-issues a certificate of the cluster CA (the gateway's, the
// API's) at two-thirds of its life, retrying every second while issuing
// fails; new handshakes pick it up through GetCertificate.
func (s *Server) rotateCert(ctx context.Context, what string, cert *atomic.Pointer[tls.Certificate], issue func() error) {
	for {
		leaf := cert.Load().Leaf
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3))
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, time.Second)):
		}
		if err := issue(); err != nil {
			s.log.Error("rotate certificate", "of", what, "err", err)
		}
	}
}

// joinReplicas joins the other replicas' gossip so that every replica sees
// every agent, whichever replica the agent joined through.
func (s *Server) joinReplicas(ctx context.Context) {
	reps, err := s.store.Replicas(ctx)
	if err != nil {
		s.log.Warn("list replicas for gossip", "err", err)
		return
	}
	var seeds []string
	for _, r := range reps {
		if r.ID != s.id && r.GossipAddr != "" {
			seeds = append(seeds, r.GossipAddr)
		}
	}
	s.gossip.join(seeds)
}

func loadOrCreateID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read replica id: %w", err)
	}
	raw := make([]byte, 4)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw)
	if err := atomicfile.WriteFile(path, []byte(id+"\n"), 0o600, nil); err != nil {
		return "", fmt.Errorf("write replica id: %w", err)
	}
	return id, nil
}

func newEtcdClient(endpoints []string, tlsCfg *tls.Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		TLS:         tlsCfg,
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		// Without keepalives a client whose etcd went away notices only
		// when its next request times out.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

func stopGRPC(srv *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		srv.Stop()
	}
}
