package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

const adminPassword = "chaos-admin-password-0123"

// repoRoot is the module's top directory (the test runs in chaos/).
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

// goBin is the Go toolchain the suite builds the binaries with.
const goBin = "/usr/local/go/bin/go"

// build compiles pkg into out.
func build(root, out, pkg string, args ...string) error {
	argv := append([]string{"build"}, args...)
	argv = append(argv, "-o", out, pkg)
	cmd := exec.Command(goBin, argv...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// buildAll compiles the binaries side by side and returns a channel that
// yields the result of each as it ends.
func buildAll(t testing.TB, jobs map[string][]string) <-chan error {
	t.Helper()
	root := repoRoot(t)
	done := make(chan error, len(jobs))
	for out, args := range jobs {
		go func() {
			start := time.Now()
			err := build(root, out, args[0], args[1:]...)
			if err == nil {
				t.Logf("built %s in %s", filepath.Base(out), time.Since(start).Round(time.Millisecond))
			}
			done <- err
		}()
	}
	return done
}

type etcdMember struct {
	*proc
	client string // http://127.0.0.1:P
}

type replica struct {
	*proc
	api, agentAddr string
}

func (r *replica) url() string { return "http://" + r.api }

type node struct {
	*proc
	name    string
	prefix  string
	modules []string
	dnsAddr string // where its PowerDNS answers (dns nodes)
	// proxies stand between a partitionable node and every replica.
	proxies []*blackhole
}

// cluster is 3 etcd members, 3 server replicas and the nodes, all real
// processes on loopback.
type cluster struct {
	t        testing.TB
	dir      string // 0755: the nodes' prefixes are below it
	logDir   string
	npanel   string // current server binary
	etcd     []*etcdMember
	replicas []*replica
	nodes    []*node
	api      *api
	// probes are the accounts the failover measurements created.
	probes []string
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "npanel-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, logDir: filepath.Join(dir, "logs")}
	if err := os.Mkdir(c.logDir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stopAll()
		if t.Failed() && os.Getenv("NPANEL_CHAOS_KEEP") != "" {
			t.Logf("kept %s", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	return c
}

// stopAll kills every process by its PID and waits for it: agents first
// (with the daemons they supervise), then replicas, then etcd.
func (c *cluster) stopAll() {
	for _, n := range c.nodes {
		for _, p := range n.proxies {
			p.Heal()
		}
		if n.running() {
			n.stop(syscall.SIGTERM, 20*time.Second)
		}
		killStrays(c.t, n.prefix)
		for _, p := range n.proxies {
			p.Close()
		}
	}
	for _, r := range c.replicas {
		r.stop(syscall.SIGTERM, 10*time.Second)
	}
	for _, e := range c.etcd {
		e.kill9()
	}
}

func (c *cluster) startEtcd(etcdBin string) {
	t := c.t
	t.Helper()
	type ports struct{ client, peer string }
	var ps []ports
	var initial []string
	for i := range 3 {
		p := ports{testenv.FreeAddr(c.t), testenv.FreeAddr(c.t)}
		ps = append(ps, p)
		initial = append(initial, fmt.Sprintf("e%d=http://%s", i+1, p.peer))
	}
	for i, p := range ps {
		name := fmt.Sprintf("e%d", i+1)
		// Plain http on loopback: the replicas take it with
		// --etcd-insecure. Production runs etcd with TLS.
		m := &etcdMember{client: "http://" + p.client, proc: &proc{name: "etcd-" + name, logDir: c.logDir, argv: []string{etcdBin,
			"--name", name, "--data-dir", filepath.Join(c.dir, "etcd-"+name),
			"--listen-client-urls", "http://" + p.client, "--advertise-client-urls", "http://" + p.client,
			"--listen-peer-urls", "http://" + p.peer, "--initial-advertise-peer-urls", "http://" + p.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "npanel-chaos", "--log-level", "warn"}}}
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		c.etcd = append(c.etcd, m)
	}
	for _, m := range c.etcd {
		c.waitHTTP(m.proc, m.client+"/health", 60*time.Second)
	}
}

// etcdLeader asks the members which of them leads the etcd cluster.
func (c *cluster) etcdLeader() *etcdMember {
	hc := &http.Client{Timeout: 2 * time.Second}
	for _, m := range c.etcd {
		if !m.running() {
			continue
		}
		// etcd's JSON gateway; uint64 ids come as strings.
		resp, err := hc.Post(m.client+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
		if err != nil {
			continue
		}
		var st struct {
			Header struct {
				MemberID string `json:"member_id"`
			}
			Leader string
		}
		err = json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
		if err != nil || st.Leader == "" {
			continue
		}
		if st.Leader == st.Header.MemberID {
			return m
		}
		for _, o := range c.etcd {
			if o != m && o.id(hc) == st.Leader {
				return o
			}
		}
	}
	return nil
}

func (m *etcdMember) id(hc *http.Client) string {
	resp, err := hc.Post(m.client+"/v3/maintenance/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var st struct {
		Header struct {
			MemberID string `json:"member_id"`
		}
	}
	_ = json.NewDecoder(resp.Body).Decode(&st)
	return st.Header.MemberID
}

func (c *cluster) endpoints() string {
	var eps []string
	for _, m := range c.etcd {
		eps = append(eps, m.client)
	}
	return strings.Join(eps, ",")
}

// waitHTTP waits until url answers 200, failing with p's log if p exits.
func (c *cluster) waitHTTP(p *proc, url string, timeout time.Duration) {
	c.t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !p.running() {
			c.t.Fatalf("%s exited:\n%s", p.name, p.tail())
		}
		if resp, err := hc.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("%s not ready at %s after %s:\n%s", p.name, url, timeout, p.tail())
}

func (c *cluster) addReplica(i int) *replica {
	r := &replica{api: testenv.FreeAddr(c.t), agentAddr: testenv.FreeAddr(c.t)}
	r.proc = &proc{name: fmt.Sprintf("server-%d", i), logDir: c.logDir,
		env: []string{"NPANEL_ADMIN_PASSWORD=" + adminPassword}}
	c.replicas = append(c.replicas, r)
	c.setReplicaArgv(r, filepath.Join(c.dir, fmt.Sprintf("server-%d", i)), testenv.FreeAddr(c.t))
	return r
}

func (c *cluster) setReplicaArgv(r *replica, dataDir, gossip string) {
	r.argv = []string{c.npanel, "server", "--data-dir", dataDir,
		"--api-listen", r.api, "--api-insecure-http",
		"--agent-listen", r.agentAddr, "--gossip-listen", gossip,
		"--etcd-endpoints", c.endpoints(), "--etcd-insecure",
		"--kek-file", filepath.Join(c.dir, "kek"), "--log-format", "json",
		// Sites keep self-signed certificates: no ACME traffic leaves
		// the machine.
		"--acme-directory", "off"}
}

func (c *cluster) startReplica(r *replica) {
	c.t.Helper()
	if err := r.start(); err != nil {
		c.t.Fatal(err)
	}
	c.waitHTTP(r.proc, r.url()+"/readyz", 90*time.Second)
}

func (c *cluster) addNode(i int, modules []string, partitionable bool) *node {
	t := c.t
	n := &node{name: fmt.Sprintf("node-%d", i), prefix: filepath.Join(c.dir, fmt.Sprintf("node-%d", i)), modules: modules}
	if err := os.Mkdir(n.prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	var servers []string
	for _, r := range c.replicas {
		if partitionable {
			b, err := newBlackhole("127.0.0.1:0", r.agentAddr)
			if err != nil {
				t.Fatal(err)
			}
			n.proxies = append(n.proxies, b)
			servers = append(servers, b.Addr())
		} else {
			servers = append(servers, r.agentAddr)
		}
	}
	gossip := testenv.FreeAddr(c.t)
	if partitionable {
		// Gossip would bypass the proxies and tell the servers the node
		// lives: the partition cuts the node off whole.
		gossip = ""
	}
	n.dnsAddr = testenv.FreeAddr(c.t)
	n.proc = &proc{name: n.name, logDir: c.logDir, argv: []string{c.npanel, "agent",
		"--server", strings.Join(servers, ","), "--data-dir", filepath.Join(c.dir, n.name+"-data"),
		"--prefix", n.prefix, "--modules", strings.Join(modules, ","), "--gossip-listen", gossip,
		"--http-listen", testenv.FreeAddr(c.t), "--https-listen", testenv.FreeAddr(c.t),
		"--dns-listen", n.dnsAddr, "--dns-api-listen", testenv.FreeAddr(c.t),
		"--log-level", "debug", "--log-format", "json"}}
	c.nodes = append(c.nodes, n)
	return n
}

// enrol declares the node, starts its agent with a join token and drops
// the token for later starts.
func (c *cluster) enrol(ctx context.Context, n *node) {
	c.t.Helper()
	roles := []string{"WEB"}
	if slices.Contains(n.modules, "dns") {
		roles = append(roles, "DNS")
	}
	if slices.Contains(n.modules, "db") {
		roles = append(roles, "DB")
	}
	var tok *client.JoinToken
	err := c.api.do(ctx, "join token", func(ctx context.Context, cl *client.Client) error {
		var err error
		tok, err = cl.CreateJoinToken(ctx, n.name, "127.0.0.1", roles, map[string]string{"chaos": "true"})
		return err
	})
	if err != nil {
		c.t.Fatalf("join token for %s: %v", n.name, err)
	}
	n.env = []string{"NPANEL_JOIN_TOKEN=" + tok.Token}
	if err := n.start(); err != nil {
		c.t.Fatal(err)
	}
	n.env = nil
}

// restartNode starts a killed node's agent again, after killing what it
// left behind.
func (c *cluster) restartNode(n *node) {
	c.t.Helper()
	killStrays(c.t, n.prefix)
	if err := n.start(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) nodeByName(name string) *node {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// leader asks the replicas which of them leads; nil while none does.
func (c *cluster) leader(ctx context.Context) *replica {
	for _, r := range c.replicas {
		if !r.running() {
			continue
		}
		var out struct {
			Replicas []struct {
				ID           string
				AgentAddress string
				Leader       bool
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := c.api.clientFor(r).Do(cctx, `{replicas{id agentAddress leader}}`, nil, &out)
		cancel()
		if err != nil {
			continue
		}
		for _, x := range out.Replicas {
			if !x.Leader {
				continue
			}
			for _, r2 := range c.replicas {
				if r2.agentAddr == x.AgentAddress && r2.running() {
					return r2
				}
			}
		}
	}
	return nil
}

func (c *cluster) waitLeader(ctx context.Context, timeout time.Duration) *replica {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if l := c.leader(ctx); l != nil {
			return l
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("no leader after %s", timeout)
	return nil
}

// nodesReady reports whether every node is READY, and the first that is not.
func (c *cluster) nodesReady(ctx context.Context) (bool, string) {
	var nodes []client.Node
	if err := c.api.do(ctx, "nodes", func(ctx context.Context, cl *client.Client) error {
		var err error
		nodes, err = cl.Nodes(ctx)
		return err
	}); err != nil {
		return false, err.Error()
	}
	ready := 0
	for _, n := range nodes {
		if c.nodeByName(n.Name) == nil {
			continue
		}
		if n.Status != "READY" {
			return false, n.Name + " " + n.Status
		}
		ready++
	}
	if ready != len(c.nodes) {
		return false, fmt.Sprintf("%d of %d nodes listed", ready, len(c.nodes))
	}
	return true, ""
}

// servicesRunning reports whether node's named services all run.
func (c *cluster) servicesRunning(ctx context.Context, node string, names ...string) bool {
	var svcs []client.Service
	if err := c.api.do(ctx, "services", func(ctx context.Context, cl *client.Client) error {
		var err error
		svcs, _, err = cl.Services(ctx, node)
		return err
	}); err != nil {
		return false
	}
	for _, want := range names {
		ok := false
		for _, s := range svcs {
			ok = ok || (s.Name == want && s.State == "RUNNING")
		}
		if !ok {
			return false
		}
	}
	return true
}

func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s (last: %s)", timeout, what, last)
}

// memory sums the resident memory of the cluster's processes by kind: what
// the machine bears.
func (c *cluster) memory() string {
	var etcd, servers, agents, daemons int64
	for _, m := range c.etcd {
		etcd += rss(m.pid())
	}
	for _, r := range c.replicas {
		servers += rss(r.pid())
	}
	for _, n := range c.nodes {
		if pid := n.pid(); pid != 0 {
			agents += rss(pid)
			for _, k := range descendants(pid) {
				daemons += rss(k)
			}
		}
	}
	mb := func(b int64) string { return fmt.Sprintf("%d MB", b>>20) }
	return fmt.Sprintf("RSS: etcd x3 %s, servers x3 %s, agents x5 %s, their daemons (nginx, PHP-FPM, PowerDNS, MariaDB) %s",
		mb(etcd), mb(servers), mb(agents), mb(daemons))
}
