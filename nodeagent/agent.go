// Package nodeagent is the agent that runs on every node.
//
// The agent enrols once with a join token, then keeps one mTLS stream open to
// a gateway of the control plane (it always dials out, so nodes behind NAT
// work). Over that stream it receives tasks, applies the allow-listed action
// each one carries, and reports results. A journal of finished task ids in
// the data directory makes re-sent tasks harmless across reconnects and
// restarts. Optionally it joins the cluster's memberlist gossip pool, the
// fast liveness hint.
//
// The shape follows the rest of nPanel: New(cfg) validates and loads, Run(ctx)
// does the work until ctx is done, Ready reports the first Welcome.
package nodeagent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	legolog "github.com/go-acme/lego/v5/log"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/allowlist"
	"github.com/npanel/npanel/nodeagent/agentmetrics"
	"github.com/npanel/npanel/nodeagent/logtail"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// Config configures an Agent.
type Config struct {
	// Servers are gateway addresses (host:port), tried in order, failing over.
	Servers []string
	// JoinToken is needed only on first start, while DataDir holds no
	// identity yet (or when the stored certificate has expired). Otherwise
	// it is ignored.
	JoinToken string
	// DataDir holds the identity and the task journal. Created 0700 if
	// missing.
	DataDir string
	// GossipListen is the ip:port memberlist binds to and announces; port 0
	// picks a free port. Empty disables gossip.
	GossipListen string
	// Version is reported in Hello.
	Version string
	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger
	// Registry receives the agent's own metrics; New creates one if nil.
	// Every agent needs its own.
	Registry *prometheus.Registry
	// Concurrency is the maximum number of tasks applied at once; default 8.
	Concurrency int
	// Facts describes the node for Hello; default platform.Detect(DataDir).
	Facts func() (*agentpb.NodeFacts, error)
	// Platform names the distro profile (platform.NameAlma9 or
	// platform.NameDebian12); empty detects it from /etc/os-release.
	Platform string
	// Prefix moves every directory of the profile (homes, backups, service
	// configuration) under it; "" in production. The user database is the
	// host's regardless; see platform.Profile.
	Prefix string
	// AllowTestUsernames lets account actions accept names under the
	// reserved test prefix. Only integration tests set it.
	AllowTestUsernames bool

	// Modules are the service areas this node runs (web, DNS, databases):
	// their daemons are started and reported, their actions enabled. Nil
	// runs none, and the agent then manages Unix accounts only, which is
	// what the in-process test clusters and the load test's agents do.
	// The agent works with its own instances of the modules named here
	// (allowlist.OwnModules): their state is the node's.
	Modules []actions.Module
	// Services runs the modules' daemons. Nil picks systemd on a production
	// node (no Prefix, systemd running) and the agent's own supervisor
	// otherwise, which then stops the daemons when Run returns.
	Services services.Manager
	// HTTPListen, HTTPSListen, DNSListen and DNSAPIListen move the node's
	// public services off the profile's defaults (":80", ":443",
	// "0.0.0.0:53", "127.0.0.1:8081"); `npanel dev` and tests give every
	// agent its own loopback ports.
	HTTPListen   string
	HTTPSListen  string
	DNSListen    string
	DNSAPIListen string
	// Mail listeners (defaults ":25", ":587", ":465", ":143", ":993",
	// ":110", ":995") and the optional smarthost (host:port) Exim hands
	// mail for remote domains to instead of looking up MX records.
	SMTPListen       string
	SubmissionListen string
	SMTPSListen      string
	IMAPListen       string
	IMAPSListen      string
	POP3Listen       string
	POP3SListen      string
	MailRelay        string
	// NoMailAntivirus turns ClamAV off on this node (--mail-antivirus=false).
	NoMailAntivirus bool
	// SFTPListen moves the backup module's own sshd (default ":2222", off
	// the system sshd's 22); BackupUser is the Linux user source nodes log
	// in as (default "npanel-backup").
	SFTPListen string
	BackupUser string
	// MigrationListen is where the migration endpoint (an SSH server
	// inside the agent that receives accounts moved here) listens; ""
	// runs none. The command's flag defaults to ":2223"
	// (platform.DefaultMigrationListen); `npanel dev` and tests give each
	// agent its own loopback port.
	MigrationListen string
	// MetricsListen is where /metrics listens (host:port, plain HTTP and
	// TLS on one port); "" serves none. The command's flag defaults to
	// ":9469"; tests and `npanel dev` use a loopback port 0.
	MetricsListen string

	// Log shipping (nodeagent/logs.go): LokiURL is Loki's push endpoint,
	// "" ships nothing (the tail engine runs regardless). LokiTenant is
	// sent as X-Scope-OrgID; LokiUsername/LokiPassword are basic auth,
	// LokiBearerToken a bearer token (the command reads secrets from
	// files). LokiBufferBytes bounds the on-disk buffer (default 256 MiB).
	LokiURL         string
	LokiTenant      string
	LokiUsername    string
	LokiPassword    string
	LokiBearerToken string
	LokiBufferBytes int64
	// AgentLog, when set, is the handler under Logger: its records are
	// shipped as service "agent" and serviceLogs reads its ring.
	AgentLog *logtail.AgentLog
}

const defaultConcurrency = 8

// timing holds the agent's delays. They are fields rather than constants so
// that tests can run the same code on a faster clock.
type timing struct {
	backoffMin       time.Duration // first reconnect delay
	backoffMax       time.Duration // cap for ordinary failures
	deniedBackoffMax time.Duration // cap while the gateway refuses this node
	renewBackoffMax  time.Duration
	welcomeTimeout   time.Duration // from Hello sent to Welcome received
	rpcTimeout       time.Duration // Enroll and Renew
	defaultHeartbeat time.Duration // when the Welcome names no interval
	minHeartbeat     time.Duration
}

var defaultTiming = timing{
	backoffMin:       200 * time.Millisecond,
	backoffMax:       5 * time.Second,
	deniedBackoffMax: 30 * time.Second,
	renewBackoffMax:  30 * time.Second,
	welcomeTimeout:   30 * time.Second,
	rpcTimeout:       30 * time.Second,
	defaultHeartbeat: 5 * time.Second,
	minHeartbeat:     100 * time.Millisecond,
}

// Agent is the node agent. Create it with New and start it with Run.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	profile *platform.Profile
	reg     *prometheus.Registry
	metrics *metrics
	timing  timing

	node   string
	token  string // set only when Run must enrol
	claims pki.JoinClaims
	id     *identity // nil until enrolled; set before any stream starts

	running   atomic.Bool
	connected atomic.Bool
	ready     chan struct{}
	readyOnce sync.Once

	// allow builds the actions of tasks from this agent's modules, which
	// own the per-node state the actions share.
	allow *allowlist.List

	// services runs the modules' daemons (nil without modules); modules
	// lists the names of the modules whose Setup succeeded.
	services services.Manager
	modules  []string

	// tokens are the scrape tokens /metrics admits (ScrapeAuth, persisted);
	// metricsAddr is where it listens, nil while it does not.
	tokens       *agentmetrics.TokenSet
	metricsAddr  atomic.Pointer[string]
	closeSources func() // ends the metrics sources' refreshes; nil without /metrics
	// mailDeliveries counts Exim's log lines for /metrics; the tail engine
	// must feed it (metricsLogConsumers). Nil without the mail module.
	mailDeliveries *agentmetrics.MailDeliveries

	mu  sync.Mutex
	cur *session // the welcomed stream results go to; nil while disconnected
	gsp *gossip  // nil without gossip; kept for inspection in tests
	run *runner  // set by Run; kept for inspection in tests
}

// New validates cfg and loads the node identity from cfg.DataDir. Without an
// identity, cfg.JoinToken is required; Run then enrols first.
func New(cfg Config) (*Agent, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("nodeagent: no servers configured")
	}
	for _, s := range cfg.Servers {
		if host, port, err := net.SplitHostPort(s); err != nil || host == "" || port == "" {
			return nil, fmt.Errorf("nodeagent: server address %q is not host:port", s)
		}
	}
	if cfg.DataDir == "" {
		return nil, errors.New("nodeagent: no data directory configured")
	}
	switch {
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("nodeagent: concurrency %d is negative", cfg.Concurrency)
	case cfg.Concurrency == 0:
		cfg.Concurrency = defaultConcurrency
	}
	if cfg.GossipListen != "" {
		if _, _, err := splitGossipListen(cfg.GossipListen); err != nil {
			return nil, fmt.Errorf("nodeagent: %w", err)
		}
	}
	// The profile is fixed for the agent's life: an action must not see one
	// distro's paths in one task and another's in the next.
	var profile *platform.Profile
	var err error
	if cfg.Platform == "" {
		profile, err = platform.DetectProfile(cfg.Prefix)
	} else {
		profile, err = platform.ProfileFor(cfg.Platform, cfg.Prefix)
	}
	if err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	for _, l := range []struct{ flag, addr string }{{"http listen", cfg.HTTPListen}, {"https listen", cfg.HTTPSListen}, {"dns listen", cfg.DNSListen}, {"dns api listen", cfg.DNSAPIListen},
		{"smtp listen", cfg.SMTPListen}, {"submission listen", cfg.SubmissionListen}, {"smtps listen", cfg.SMTPSListen},
		{"imap listen", cfg.IMAPListen}, {"imaps listen", cfg.IMAPSListen}, {"pop3 listen", cfg.POP3Listen},
		{"pop3s listen", cfg.POP3SListen}, {"mail relay", cfg.MailRelay},
		{"sftp listen", cfg.SFTPListen}, {"migration listen", cfg.MigrationListen}, {"metrics listen", cfg.MetricsListen}} {
		if l.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(l.addr); err != nil || port == "" {
			return nil, fmt.Errorf("nodeagent: %s address %q is not host:port", l.flag, l.addr)
		}
	}
	profile.HTTPListen = cmp.Or(cfg.HTTPListen, profile.HTTPListen)
	profile.HTTPSListen = cmp.Or(cfg.HTTPSListen, profile.HTTPSListen)
	profile.DNSListen = cmp.Or(cfg.DNSListen, profile.DNSListen)
	profile.DNSAPIListen = cmp.Or(cfg.DNSAPIListen, profile.DNSAPIListen)
	profile.SMTPListen = cmp.Or(cfg.SMTPListen, profile.SMTPListen)
	profile.SubmissionListen = cmp.Or(cfg.SubmissionListen, profile.SubmissionListen)
	profile.SMTPSListen = cmp.Or(cfg.SMTPSListen, profile.SMTPSListen)
	profile.IMAPListen = cmp.Or(cfg.IMAPListen, profile.IMAPListen)
	profile.IMAPSListen = cmp.Or(cfg.IMAPSListen, profile.IMAPSListen)
	profile.POP3Listen = cmp.Or(cfg.POP3Listen, profile.POP3Listen)
	profile.POP3SListen = cmp.Or(cfg.POP3SListen, profile.POP3SListen)
	profile.MailRelay = cfg.MailRelay
	profile.MailAntivirus = !cfg.NoMailAntivirus
	profile.SFTPListen = cmp.Or(cfg.SFTPListen, profile.SFTPListen)
	profile.BackupUser = cmp.Or(cfg.BackupUser, profile.BackupUser)
	if cfg.MigrationListen != "" && slices.ContainsFunc(cfg.Modules, func(m actions.Module) bool { return m.Name() == "backup" }) &&
		sameListener(cfg.MigrationListen, profile.SFTPListen) {
		return nil, fmt.Errorf("nodeagent: --migration-listen %q and --sftp-listen %q (the backup module's sshd) would listen on the same port; move one of them",
			cfg.MigrationListen, profile.SFTPListen)
	}
	if err := checkLoki(cfg); err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// lego logs through one process-wide logger: the agent's. Its DNS-01
	// CNAME lookup would go through the system resolver; our challenge
	// records are never behind a CNAME and our own check asks our
	// nameservers.
	legolog.SetDefault(cfg.Logger.With("component", "acme"))
	_ = os.Setenv("LEGO_DISABLE_CNAME_SUPPORT", "true")
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	// Several agents in one process may be given one module list.
	cfg.Modules = allowlist.OwnModules(cfg.Modules)
	if cfg.Facts == nil {
		dir := cfg.DataDir
		cfg.Facts = func() (*agentpb.NodeFacts, error) { return platform.Detect(dir) }
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("nodeagent: create data directory: %w", err)
	}
	// The node's key, journal and module secrets: for root alone, also
	// where an older agent or an operator's mkdir left them readable.
	if err := platform.PrivateTree(cfg.DataDir, true); err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}

	a := &Agent{
		cfg:     cfg,
		log:     cfg.Logger,
		profile: profile,
		reg:     cfg.Registry,
		timing:  defaultTiming,
		ready:   make(chan struct{}),
		allow:   allowlist.New(cfg.Modules...),
	}
	a.allow.Backup().Progress = a.sendBackupProgress
	a.allow.Cpanel().Fetch.Progress = a.sendBackupProgress

	id, err := loadIdentity(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	switch {
	case id != nil && time.Now().Before(id.leaf().NotAfter):
		if cfg.JoinToken != "" {
			a.log.Info("node already enrolled; ignoring the join token", "node", id.node)
		}
		a.id, a.node = id, id.node
	case id != nil && cfg.JoinToken == "":
		return nil, fmt.Errorf("nodeagent: node %q: %w at %s; start once with a new join token",
			id.node, ErrCertificateExpired, id.leaf().NotAfter.Format(time.RFC3339))
	default:
		if cfg.JoinToken == "" {
			return nil, fmt.Errorf("nodeagent: %s holds no node identity and no join token was given", cfg.DataDir)
		}
		claims, err := pki.ParseJoinToken(cfg.JoinToken)
		if err != nil {
			return nil, fmt.Errorf("nodeagent: join token: %w", err)
		}
		if claims.Node == "" || claims.RootFingerprint == "" {
			return nil, errors.New("nodeagent: join token lacks a node name or root fingerprint")
		}
		if id != nil {
			a.log.Warn("node certificate expired; enrolling again with the join token", "node", id.node, "expired", id.leaf().NotAfter)
		}
		if time.Now().After(claims.ExpiresAt) {
			// The CA's clock decides; this one may be wrong. Say it early
			// because the refusal that is likely to follow ends Run.
			a.log.Warn("join token looks expired; trying anyway", "node", claims.Node, "expires", claims.ExpiresAt)
		}
		a.token, a.claims, a.node = cfg.JoinToken, claims, claims.Node
	}

	if a.metrics, err = newMetrics(a.reg); err != nil {
		return nil, fmt.Errorf("nodeagent: %w", err)
	}
	if a.tokens, err = agentmetrics.LoadTokenSet(filepath.Join(cfg.DataDir, agentmetrics.ScrapeAuthFile)); err != nil {
		// The server sends the set again after the next Welcome.
		a.log.Warn("scrape tokens unreadable; none admitted until the server sends them", "err", err)
	}
	if w := a.webModule(); w != nil {
		if err := a.reg.Register(w.Traffic()); err != nil {
			return nil, fmt.Errorf("nodeagent: register traffic counters: %w", err)
		}
	}
	if cfg.MetricsListen != "" {
		if a.closeSources, err = agentmetrics.Register(a.reg, a.hostSources()); err != nil {
			return nil, fmt.Errorf("nodeagent: %w", err)
		}
	}
	if a.id != nil {
		a.metrics.certExpiry.Set(float64(a.id.leaf().NotAfter.Unix()))
	}
	a.log = a.log.With("node", a.node)
	return a, nil
}

// NodeName is the node's name: from its certificate, or from the join token
// before enrolment.
func (a *Agent) NodeName() string { return a.node }

// Registry holds the agent's metrics.
func (a *Agent) Registry() *prometheus.Registry { return a.reg }

// Ready is closed once the first Welcome was received.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Connected reports whether the agent holds a welcomed stream right now.
func (a *Agent) Connected() bool { return a.connected.Load() }

// Run enrols if needed and then keeps a task stream up, failing over across
// the configured servers, until ctx is done. It returns nil when ctx is done
// and an error only for what retrying cannot fix: a refused join token, an
// expired certificate, an unusable data directory or gossip address. Run
// may be called once.
func (a *Agent) Run(ctx context.Context) (err error) {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("nodeagent: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	// Deferred first, so it runs after cancel: the traffic counters' write
	// loop ends with ctx and makes its last write in the data dir.
	defer func() {
		if w := a.webModule(); w != nil {
			w.Traffic().Wait()
		}
	}()
	defer cancel()

	unlock, err := lockDataDir(a.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("nodeagent: %w", err)
	}
	defer unlock()
	// Only a crash mid-write leaves temporary files; with the lock held none
	// of them can belong to a live writer.
	if err := removeStaleTemps(a.cfg.DataDir); err != nil {
		return fmt.Errorf("nodeagent: %w", err)
	}

	jr, err := openJournal(a.cfg.DataDir, a.log)
	if err != nil {
		return fmt.Errorf("nodeagent: %w", err)
	}
	defer func() {
		if cerr := jr.close(); cerr != nil && err == nil {
			err = fmt.Errorf("nodeagent: close journal: %w", cerr)
		}
	}()

	var gsp *gossip
	if a.cfg.GossipListen != "" {
		if gsp, err = newGossip(a.cfg.GossipListen, a.node, a.log); err != nil {
			return fmt.Errorf("nodeagent: %w", err)
		}
		if err := gsp.bind(); err != nil {
			return fmt.Errorf("nodeagent: %w", err)
		}
		a.mu.Lock()
		a.gsp = gsp
		a.mu.Unlock()
		defer gsp.shutdown()
	}

	if a.id == nil {
		a.log.Info("enrolling", "servers", a.cfg.Servers)
		id, err := a.enrol(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nodeagent: %w", err)
		}
		a.id = id
		a.token = ""
		a.log.Info("enrolled", "expires", id.leaf().NotAfter)
	}

	if len(a.cfg.Modules) > 0 {
		stop := a.startModules(ctx)
		defer stop()
	}

	// Log tail engine and Loki shipper (logs.go); stopped before the
	// modules' daemons.
	stopLogs := a.startLogs()
	defer stopLogs()

	if a.cfg.MigrationListen != "" {
		// Not fatal, like a module's daemon: the node serves its sites
		// regardless, and the failure shows in nodes { services }.
		if addr, err := a.allow.Migrate().Listen(ctx, a.env(a.log), a.cfg.MigrationListen); err != nil {
			a.log.Error("migration endpoint did not start", "err", err)
		} else {
			a.log.Info("migration endpoint ready", "addr", addr)
			// A restarted agent binds the same address again.
			defer func() {
				cancel()
				<-a.allow.Migrate().Stopped()
			}()
		}
	}

	if a.cfg.MetricsListen != "" {
		// After the modules (its sources) and before the first Hello
		// (which reports its address).
		wait := a.listenMetrics(ctx)
		defer func() {
			cancel()
			wait()
			a.closeSources()
		}()
	}

	r := newRunner(ctx, a, jr)
	a.mu.Lock()
	a.run = r
	a.mu.Unlock()
	var (
		wg    sync.WaitGroup
		fatal error // written before wg.Done, read after wg.Wait
	)
	wg.Go(func() {
		if err := a.renewLoop(ctx); err != nil {
			fatal = err
			cancel()
		}
	})
	a.connectLoop(ctx, r, gsp)

	cancel()
	wg.Wait()
	// Tasks still applying see ctx done and stop; their results are not
	// journaled, so the gateway's re-send after restart applies them again.
	r.wait()
	a.connected.Store(false)
	a.metrics.connected.Set(0)

	if fatal != nil {
		return fmt.Errorf("nodeagent: %w", fatal)
	}
	return nil
}

// startModules sets up every configured module and starts its daemons. A
// module or daemon that fails is logged and reported, never fatal: a node
// whose PowerDNS is broken must still serve its websites, and the operator
// sees the failure in nodes { services }. The returned func stops what the
// agent's own supervisor started.
func (a *Agent) startModules(ctx context.Context) (stop func()) {
	mgr := a.cfg.Services
	owned := false
	if mgr == nil {
		mgr, owned = a.defaultServices(), true
	}
	a.services = mgr
	env := a.env(a.log)
	for _, m := range a.cfg.Modules {
		log := a.log.With("module", m.Name())
		specs, err := m.Setup(ctx, env)
		if err != nil {
			log.Error("module setup failed; its actions will fail until the agent restarts", "err", err)
			continue
		}
		a.modules = append(a.modules, m.Name())
		for _, spec := range specs {
			if spec.LogFile == "" && a.profile.Prefix != "" {
				// Supervised daemons' output, where systemd would keep it
				// in the journal.
				dir := filepath.Join(a.profile.Prefix, "var/log/npanel")
				// Chmod: a directory an older agent made 0755 is repaired.
				if err := os.MkdirAll(dir, 0o750); err == nil && os.Chmod(dir, 0o750) == nil {
					spec.LogFile = filepath.Join(dir, spec.Name+".log")
				}
			}
			if err := mgr.Ensure(ctx, spec); err != nil {
				log.Error("service did not start", "service", spec.Name, "err", err)
			}
		}
		log.Info("module ready", "services", len(specs))
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-mgr.Changes():
				a.reportServices()
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		for _, m := range a.cfg.Modules {
			if c, ok := m.(actions.Closer); ok {
				c.Close()
			}
		}
		if owned {
			if err := mgr.Close(); err != nil {
				a.log.Warn("stop services", "err", err)
			}
		}
	}
}

// defaultServices picks the service manager for this node: systemd units on
// a production node, the agent's own supervisor under a prefix.
func (a *Agent) defaultServices() services.Manager {
	if a.profile.Prefix == "" && services.SystemdAvailable() {
		return services.NewSystemd(a.log.With("services", "systemd"))
	}
	return services.NewSupervisor(a.log.With("services", "supervisor"))
}

// env is what actions and modules may know about this node.
func (a *Agent) env(log *slog.Logger) *actions.Env {
	return &actions.Env{
		Node:     a.node,
		Logger:   log,
		Profile:  a.profile,
		Services: a.services,
		DataDir:  a.cfg.DataDir,
		Modules:  slices.Clip(a.modules),
		Unseal: func(sealed []byte, context string) ([]byte, error) {
			return pki.Unseal(a.id.key, sealed, context)
		},
		PublishChallenge: a.publishChallenge,
		AgentLog:         a.agentLog(),
	}
}

// agentLog reads the agent's own recent records (serviceLogs "agent"),
// nil when the logger is not the tail engine's handler.
func (a *Agent) agentLog() func(since time.Time, lines int, grep string) ([]string, bool) {
	if a.cfg.AgentLog == nil {
		return nil
	}
	return a.cfg.AgentLog.Recent
}

// reportServices sends the daemons' state on the current stream, if any.
// A report lost to a dropped stream is repeated after the next Welcome.
func (a *Agent) reportServices() {
	sts := a.serviceStatus()
	if len(sts) == 0 {
		return
	}
	a.mu.Lock()
	s := a.cur
	a.mu.Unlock()
	if s == nil {
		return
	}
	rep := &agentpb.ServiceReport{}
	for _, st := range sts {
		rep.Services = append(rep.Services, st.Proto())
	}
	if err := s.send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Services{Services: rep}}); err != nil {
		a.log.Debug("send service report", "err", err)
	}
}

// sameListener says whether listeners a and b (host:port) would take the
// same port: same port and the same host, or either a wildcard.
func sameListener(a, b string) bool {
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	wild := func(h string) bool { ip := net.ParseIP(h); return h == "" || ip != nil && ip.IsUnspecified() }
	return wild(ha) || wild(hb) || ha == hb
}
