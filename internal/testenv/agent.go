package testenv

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/nodeagent/actions/allowlist"
)

// Agent is a node agent running in the test process.
type Agent struct {
	*nodeagent.Agent
	Name   string
	Config nodeagent.Config

	t      testing.TB
	cancel context.CancelFunc
	done   chan error
}

// AgentOption adjusts an agent's config before it starts.
type AgentOption func(*nodeagent.Config)

// StartAgent declares node name through the API, starts an agent with its
// join token and waits until its stream is up.
func (s *Server) StartAgent(t testing.TB, name string, opts ...AgentOption) *Agent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := s.Admin.CreateJoinToken(ctx, name, "127.0.0.1", []string{"WEB", "DNS", "MAIL"}, map[string]string{"test": "true"})
	if err != nil {
		t.Fatalf("join token for %s: %v", name, err)
	}
	cfg := nodeagent.Config{
		Servers:      []string{s.Config.AgentListen},
		JoinToken:    tok.Token,
		DataDir:      t.TempDir(),
		GossipListen: "127.0.0.1:0",
		// Homes, backups and service files under a temp dir: tests never
		// touch the machine's own. (User names use the reserved test prefix.)
		Prefix:             nodePrefix(t, ""),
		AllowTestUsernames: true,
		// /metrics on a free loopback port (Agent.MetricsAddr tells which).
		MetricsListen: "127.0.0.1:0",
		Version:       "test",
		Logger:        Logger().With("node", name),
	}
	for _, o := range opts {
		o(&cfg)
	}
	a := &Agent{Name: name, Config: cfg, t: t}
	a.Start()
	t.Cleanup(a.Stop)
	WaitFor(t, 20*time.Second, name+" connected", a.Connected)
	return a
}

// Start (re)starts the agent process-equivalent on its data dir. After the
// first start the join token is no longer needed and is dropped, as an
// operator would.
func (a *Agent) Start() {
	a.t.Helper()
	ag, err := nodeagent.New(a.Config)
	if err != nil {
		a.t.Fatalf("new agent %s: %v", a.Name, err)
	}
	a.Agent = ag
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan error, 1)
	go func() { a.done <- ag.Run(ctx) }()
	a.Config.JoinToken = ""
}

// Stop kills the agent: its stream and gossip end without a goodbye.
func (a *Agent) Stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	a.cancel = nil
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		a.t.Errorf("agent %s did not stop within 20s", a.Name)
	}
}

// Executed returns how many tasks this agent instance has applied (not
// answered from its journal), summed over actions and outcomes.
func (a *Agent) Executed() float64 {
	return counterSum(a.Registry(), "npanel_agent_tasks_applied_total")
}

func counterSum(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += metricValue(m)
		}
	}
	return sum
}

func metricValue(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	if g := m.GetGauge(); g != nil {
		return g.GetValue()
	}
	return 0
}

// WithModules runs the named service modules ("web", "dns", "db") in the
// agent, with their daemons supervised under the agent's prefix and every
// public listener on its own free loopback port. The prefix is made
// traversable by others, as nginx's workers and the accounts' PHP need.
// With "backup" the prefix is under /var/lib (sshd refuses a chroot below
// the world-writable /tmp) and the backup user is a test user, removed
// after the agent stopped.
func WithModules(t testing.TB, names ...string) AgentOption {
	t.Helper()
	mods, err := allowlist.Modules(names)
	if err != nil {
		t.Fatal(err)
	}
	base, backupUser := "", ""
	if slices.Contains(names, "backup") {
		// sshd refuses a chroot or authorized_keys below a directory
		// others may write, as /tmp is: the backup node's prefix goes
		// where only root writes. Its user is the test's own.
		base = "/var/lib"
		backupUser = TestUsername()
		RemoveUserAtCleanup(t, backupUser)
	}
	prefix := nodePrefix(t, base)
	return func(c *nodeagent.Config) {
		c.Modules = mods
		c.Prefix = prefix
		c.HTTPListen = FreeAddr(t)
		c.HTTPSListen = FreeAddr(t)
		c.DNSListen = FreeAddr(t)
		c.DNSAPIListen = FreeAddr(t)
		c.SMTPListen, c.SubmissionListen, c.SMTPSListen = FreeAddr(t), FreeAddr(t), FreeAddr(t)
		c.IMAPListen, c.IMAPSListen = FreeAddr(t), FreeAddr(t)
		c.POP3Listen, c.POP3SListen = FreeAddr(t), FreeAddr(t)
		c.SFTPListen = FreeAddr(t)
		c.BackupUser = backupUser
	}
}

// nodePrefix makes an agent's --prefix under base ("": the temp dir),
// removed at cleanup. It is 0755 as / is on a node: processes that run
// as an account (PHP, a migration's rsync) must reach the homes in it,
// which t.TempDir's 0700 parent would not let them.
func nodePrefix(t testing.TB, base string) string {
	t.Helper()
	prefix, err := os.MkdirTemp(base, "npanel-node-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(prefix) })
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	return prefix
}
