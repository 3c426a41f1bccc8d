package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/scheduler"
	"github.com/npanel/npanel/validate"
)

// Config configures one server replica.
type Config struct {
	// DataDir (made 0700) holds the embedded etcd and its sockets, the
	// key-encryption key, the replica id and the initial admin password
	// file. With external etcd it holds no etcd.
	DataDir string
	// APIListen serves GraphQL, /healthz, /readyz and /metrics, over HTTPS
	// unless APIInsecureHTTP. Its certificate comes from APICertFile and
	// APIKeyFile, or from ACME for APIDomain, or by default from the
	// cluster's own CA (see apitls.go).
	APIListen string
	// APICertFile and APIKeyFile are PEM files of the API's certificate
	// (with its chain) and key, read again when they change.
	APICertFile, APIKeyFile string
	// APIDomain has the API's certificate ordered from the ACME server of
	// ACME for this name, answering TLS-ALPN-01 on the API listener.
	APIDomain string
	// APIInsecureHTTP serves the API in plain HTTP: for a loopback
	// development cluster or behind a TLS-terminating proxy only.
	APIInsecureHTTP bool
	// Notice receives the first start's message to the operator (the
	// cluster CA's fingerprint and how to log in pinned); nil is standard
	// error.
	Notice io.Writer
	// AgentListen serves the agent gateway (gRPC over mTLS).
	AgentListen string
	// Advertise is the host:port agents dial to reach AgentListen; it is also
	// what the gateway's certificate is issued for. Defaults to AgentListen.
	Advertise string
	// GossipListen is the memberlist address; port 0 picks a free port.
	// Defaults to the AgentListen host on port 7946.
	GossipListen string
	// EtcdEndpoints selects an external etcd cluster. Empty runs an
	// embedded single-member etcd in DataDir/etcd, listening only on unix
	// sockets in DataDir (EtcdClientSocket, EtcdPeerSocket).
	EtcdEndpoints []string
	// EtcdCACert, EtcdCert and EtcdKey are PEM files: the CA that signed the
	// external etcd's serving certificate (empty: the system roots) and the
	// client certificate and key this replica authenticates with.
	EtcdCACert, EtcdCert, EtcdKey string
	// EtcdInsecure admits endpoints without TLS (http://, unix://). Without
	// it they are refused: whoever reaches such an etcd reads the cluster.
	EtcdInsecure bool
	// EtcdMaxTxnOps is the external etcd's --max-txn-ops (0: etcd's
	// default, 128). It bounds the changes made in one transaction, such
	// as an updatePlan rebuilding every account on the plan.
	EtcdMaxTxnOps int
	// KEKFile holds the key-encryption key (32 bytes, mode 0600) that seals
	// the CA's private keys and the cluster secrets in etcd. Every replica
	// of a cluster needs a copy of the same file. Default DataDir/kek,
	// created on the first start of a new cluster.
	KEKFile string
	// AdminPassword is the first admin's password; empty generates one.
	AdminPassword string
	// CertLifetime of node and gateway certificates (24h).
	CertLifetime time.Duration
	// HeartbeatInterval the agents are asked to keep (1s); a node's liveness
	// lease lives LeaseTTL (5s) past its last heartbeat.
	HeartbeatInterval time.Duration
	LeaseTTL          time.Duration
	// ElectionTTL is the leader's session lease (5s): how long a crashed
	// leader holds the controllers before another replica takes over.
	ElectionTTL time.Duration
	// PasswordCost is the bcrypt cost of new password hashes (0: the
	// production default). Tests lower it: under the race detector one
	// hash at the default costs about a second.
	PasswordCost int
	// DebugListen serves net/http/pprof for profiling; empty (the default)
	// disables it. Bind it to loopback: profiles reveal internals.
	DebugListen string
	// AllowTestUsernames admits account names under the reserved test
	// prefix. Only integration tests set it.
	AllowTestUsernames bool
	// AccountBatch is how many accounts the controller handles in one
	// transaction. Against an external etcd it must fit that cluster's
	// --max-txn-ops (about 6 operations per account); the default does for
	// etcd's default of 128. The embedded etcd raises its limit and the
	// batch with it: fewer, larger transactions are what lets one etcd
	// place hundreds of accounts a second.
	AccountBatch int
	// SchedulerStrategy: spread (least allocated, the default) or bin-pack.
	SchedulerStrategy scheduler.Strategy
	// ZoneRotateInterval is the least time between the steps of a DNSSEC
	// key rollover (default one hour); tests shorten it.
	ZoneRotateInterval time.Duration
	// ZoneSecondaryResync is how often every DNS secondary is sent its full
	// zone set even when nothing changed, which heals a wiped or drifted
	// secondary (default one minute); tests shorten it.
	ZoneSecondaryResync time.Duration
	// ZonePrimaryCheck is how often every DNS primary is asked for the
	// serials of its zones, which heals a wiped or restored primary
	// (default one minute); tests shorten it.
	ZonePrimaryCheck time.Duration
	// AuditRetention and TaskRetention are how long audit events and
	// finished tasks are kept (defaults 90 and 7 days; negative: forever).
	// Pending tasks and tasks a controller or a database still waits on
	// are kept whatever their age.
	AuditRetention time.Duration
	TaskRetention  time.Duration
	// PruneInterval is how often the leader deletes what outlived its
	// retention (default ten minutes); tests shorten it.
	PruneInterval time.Duration
	// DatabaseStatusInterval is how often the leader refreshes every
	// account's database sizes from its node (5m); a change to an
	// account's databases refreshes its status at once.
	DatabaseStatusInterval time.Duration
	// TaskStallAfter is how long a queued task may stay unsent on a live
	// stream before its node turns SUSPECT (30s).
	TaskStallAfter time.Duration
	// TrustedProxies are the peers whose X-Forwarded-For is believed for
	// the client's address (login throttle, audit); from any other peer
	// the header is ignored.
	TrustedProxies []netip.Prefix
	// PublicIntrospection lets anonymous callers introspect the schema;
	// by default only signed-in callers may.
	PublicIntrospection bool
	// MetricsToken, when set, is a bearer token that may scrape /metrics
	// besides admins' tokens.
	MetricsToken string
	// MaxAPIConnections bounds the API listener's open connections
	// (default 4096), so a flood of API connections cannot take the
	// descriptors etcd and the agent gateway need; MaxConnectionsPerIP
	// (default 256) and MaxWebsocketsPerIP (default 64) bound one client.
	MaxAPIConnections   int
	MaxConnectionsPerIP int
	MaxWebsocketsPerIP  int
	Version             string
	Logger              *slog.Logger
	// ACME is where site and mail certificates are ordered.
	ACME ACMEConfig
	// Backup tunes the backup schedule and controller.
	Backup BackupConfig
	// Migration tunes the migration controller.
	Migration MigrationConfig
}

func (c *Config) setDefaults() error {
	if c.DataDir == "" {
		return errors.New("data dir is required")
	}
	if c.APIListen == "" {
		c.APIListen = "127.0.0.1:8080"
	}
	if c.AgentListen == "" {
		c.AgentListen = "127.0.0.1:7443"
	}
	if c.Advertise == "" {
		c.Advertise = c.AgentListen
	}
	host, _, err := net.SplitHostPort(c.AgentListen)
	if err != nil {
		return fmt.Errorf("agent listen address %q: %w", c.AgentListen, err)
	}
	if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
		return fmt.Errorf("advertise address %q: %w", c.Advertise, err)
	}
	if c.GossipListen == "" {
		c.GossipListen = net.JoinHostPort(host, "7946")
	}
	if err := c.checkEtcd(); err != nil {
		return err
	}
	if err := c.checkAPITLS(); err != nil {
		return err
	}
	if c.KEKFile == "" {
		c.KEKFile = filepath.Join(c.DataDir, "kek")
	}
	if c.CertLifetime == 0 {
		c.CertLifetime = 24 * time.Hour
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 5 * time.Second
	}
	if c.ElectionTTL == 0 {
		c.ElectionTTL = 5 * time.Second
	}
	if c.AccountBatch == 0 {
		switch {
		case len(c.EtcdEndpoints) == 0:
			c.AccountBatch = embeddedAccountBatch
		case c.EtcdMaxTxnOps > store.MaxTxnOps:
			// As many accounts as the raised limit has room for.
			c.AccountBatch = min(embeddedAccountBatch, c.EtcdMaxTxnOps*defaultAccountBatch/store.MaxTxnOps)
		default:
			c.AccountBatch = defaultAccountBatch
		}
	}
	if c.AuditRetention == 0 {
		c.AuditRetention = DefaultAuditRetention
	}
	if c.TaskRetention == 0 {
		c.TaskRetention = DefaultTaskRetention
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = 10 * time.Minute
	}
	if c.DatabaseStatusInterval == 0 {
		c.DatabaseStatusInterval = 5 * time.Minute
	}
	if c.TaskStallAfter == 0 {
		c.TaskStallAfter = 30 * time.Second
	}
	if c.MaxAPIConnections == 0 {
		c.MaxAPIConnections = 4096
	}
	if c.MaxConnectionsPerIP == 0 {
		c.MaxConnectionsPerIP = 256
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// checkEtcd refuses an external etcd reached without TLS unless the operator
// said so, and TLS files given where they do not apply.
func (c *Config) checkEtcd() error {
	if len(c.EtcdEndpoints) == 0 {
		if c.EtcdCACert != "" || c.EtcdCert != "" || c.EtcdKey != "" || c.EtcdInsecure || c.EtcdMaxTxnOps != 0 {
			return errors.New("--etcd-cacert, --etcd-cert, --etcd-key, --etcd-insecure and --etcd-max-txn-ops apply to an external etcd (--etcd-endpoints) only")
		}
		return nil
	}
	if c.EtcdMaxTxnOps != 0 && (c.EtcdMaxTxnOps < store.MaxTxnOps || c.EtcdMaxTxnOps > 1<<16) {
		return fmt.Errorf("--etcd-max-txn-ops %d: give the external etcd's --max-txn-ops, %d (its default) or more", c.EtcdMaxTxnOps, store.MaxTxnOps)
	}
	if (c.EtcdCert == "") != (c.EtcdKey == "") {
		return errors.New("--etcd-cert and --etcd-key go together")
	}
	var tlsCount int
	for _, ep := range c.EtcdEndpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme == "" || (u.Host == "" && u.Path == "") {
			return fmt.Errorf("etcd endpoint %q: want a URL such as https://host:2379", ep)
		}
		switch u.Scheme {
		case "https", "unixs":
			tlsCount++
		case "http", "unix":
			if !c.EtcdInsecure {
				return fmt.Errorf("etcd endpoint %q has no TLS: anyone who reaches it reads the cluster's keys; use https:// with --etcd-cacert, --etcd-cert and --etcd-key, or pass --etcd-insecure to accept it", ep)
			}
		default:
			return fmt.Errorf("etcd endpoint %q: scheme %q is not one of https, unixs, http, unix", ep, u.Scheme)
		}
	}
	if tlsCount != 0 && tlsCount != len(c.EtcdEndpoints) {
		return errors.New("etcd endpoints mix TLS and plain URLs; use one kind")
	}
	if tlsCount > 0 && c.EtcdCert == "" && !c.EtcdInsecure {
		return errors.New("an external etcd is reached with a client certificate: give --etcd-cert and --etcd-key (or --etcd-insecure for an etcd without client authentication)")
	}
	if tlsCount == 0 && (c.EtcdCACert != "" || c.EtcdCert != "") {
		return errors.New("--etcd-cacert, --etcd-cert and --etcd-key need https:// etcd endpoints")
	}
	return nil
}

// etcdTLS is the client TLS configuration for an external etcd: nil for
// plain endpoints (admitted by checkEtcd only with EtcdInsecure).
func (c *Config) etcdTLS() (*tls.Config, error) {
	u, _ := url.Parse(c.EtcdEndpoints[0])
	if u.Scheme != "https" && u.Scheme != "unixs" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.EtcdCACert != "" {
		b, err := os.ReadFile(c.EtcdCACert)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cacert: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--etcd-cacert %s: no PEM certificate in it", c.EtcdCACert)
		}
	}
	if c.EtcdCert != "" {
		cert, err := tls.LoadX509KeyPair(c.EtcdCert, c.EtcdKey)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cert/--etcd-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// checkAPITLS admits one source of the API's certificate at most.
func (c *Config) checkAPITLS() error {
	if (c.APICertFile == "") != (c.APIKeyFile == "") {
		return errors.New("--api-cert and --api-key go together")
	}
	n := 0
	for _, set := range []bool{c.APICertFile != "", c.APIDomain != "", c.APIInsecureHTTP} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("--api-cert/--api-key, --api-domain and --api-insecure-http exclude each other: give one way to serve the API, or none for a certificate from the cluster's CA")
	}
	if c.APIDomain != "" {
		d, err := validate.Domain(c.APIDomain)
		if err != nil {
			return fmt.Errorf("--api-domain: %w", err)
		}
		c.APIDomain = d
	}
	return nil
}
