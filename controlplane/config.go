package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/npanel/npanel/scheduler"
)

// Config configures one server replica.
type Config struct {
	// DataDir holds the embedded etcd, the replica id and the initial admin
	// password file. With external etcd it holds nothing else.
	DataDir string
	// APIListen serves GraphQL, /healthz, /readyz and /metrics.
	APIListen string
	// AgentListen serves the agent gateway (gRPC over mTLS).
	AgentListen string
	// Advertise is the host:port agents dial to reach AgentListen; it is also
	// what the gateway's certificate is issued for. Defaults to AgentListen.
	Advertise string
	// GossipListen is the memberlist address; port 0 picks a free port.
	// Defaults to the AgentListen host on port 7946.
	GossipListen string
	// EtcdEndpoints selects an external etcd cluster. Empty runs an
	// embedded single-member etcd in DataDir/etcd.
	EtcdEndpoints []string
	// EtcdClientListen and EtcdPeerListen are the embedded etcd's listeners.
	EtcdClientListen string
	EtcdPeerListen   string
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
	if c.EtcdClientListen == "" {
		c.EtcdClientListen = "127.0.0.1:2379"
	}
	if c.EtcdPeerListen == "" {
		c.EtcdPeerListen = "127.0.0.1:2380"
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
		c.AccountBatch = defaultAccountBatch
		if len(c.EtcdEndpoints) == 0 {
			c.AccountBatch = embeddedAccountBatch
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
