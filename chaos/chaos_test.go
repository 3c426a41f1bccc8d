package chaos

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// The agents create a Linux user per account; every name the stream used is
// a test name, removed after the run whatever happened.
func TestMain(m *testing.M) { testenv.MainRemovingTestUsers(m) }

// full reports whether the long run was asked for (make chaos).
func full() bool { return os.Getenv("NPANEL_CHAOS") == "full" }

// fault is one injected failure and what it cost.
type fault struct {
	kind   string
	target string
	at     time.Time
	// readGap: kill to the first answered read; writeGap: kill to the
	// first successful write started after it.
	readGap, writeGap time.Duration
	// Leader kills: kill to a new leader named, and kill to a new
	// account ACTIVE.
	newLeader, failover time.Duration
	// Where a failover's time went: the account created, placed on a
	// node (SCHEDULED), its task sent (PROVISIONING).
	created, scheduled, provisioning time.Duration
	// Upgrades: SIGTERM to the new version's /readyz, and the tasks the
	// nodes finished meanwhile.
	restart time.Duration
	tasks   int
}

// maxUnavailable bounds the API's unavailability after any one fault.
const maxUnavailable = 30 * time.Second

// TestChaos runs the control plane as production does — 3 replicas of the
// real binary on a 3-member etcd cluster of real etcd processes, 5 real
// agents with their daemons — under a steady stream of account creations,
// DNS changes and database creations through the API, while it kills -9
// the leader, a non-leader, an etcd member and an agent, partitions an
// agent from the servers, and upgrades the replicas one at a time. Then:
// every request answered with success is in the final state exactly once,
// no task ran twice on a node, no account is on two nodes, the cluster
// converged. Failover and unavailability figures are logged per fault.
//
// In make test it injects each fault once; NPANEL_CHAOS=full (make chaos)
// kills the leader 10 times.
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("minutes of real processes: not a unit test")
	}
	if os.Geteuid() != 0 {
		t.Skip("the agents create Linux users and run nginx, PowerDNS and MariaDB: needs root")
	}
	for _, d := range []string{"/usr/sbin/nginx", "/usr/sbin/php-fpm8.2", "/usr/sbin/pdns_server", "/usr/sbin/mariadbd"} {
		testenv.RequireDaemon(t, d)
	}
	began := time.Now()
	ctx := testenv.Context(t)
	c := newCluster(t)

	// The binaries: etcd at the version go.mod pins, and npanel twice, the
	// second as the version the rolling upgrade moves to.
	bin := filepath.Join(c.dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	etcdBin, v1, v2 := filepath.Join(bin, "etcd"), filepath.Join(bin, "npanel-1"), filepath.Join(bin, "npanel-2")
	first := buildAll(t, map[string][]string{
		etcdBin: {"./chaos/internal/etcdbin"},
		v1:      {"./cmd/npanel", "-tags", "npanel_testnames", "-ldflags", "-X main.version=chaos-1"},
	})
	for range 2 {
		if err := <-first; err != nil {
			t.Fatal(err)
		}
	}
	// The upgrade's version builds while the cluster starts.
	second := buildAll(t, map[string][]string{
		v2: {"./cmd/npanel", "-tags", "npanel_testnames", "-ldflags", "-X main.version=chaos-2"},
	})
	defer func() {
		if second != nil {
			<-second
		}
	}()
	c.npanel = v1

	c.startEtcd(etcdBin)
	for i := range 3 {
		c.addReplica(i + 1)
	}
	// The first start creates the CA and the key-encryption key the
	// others then share.
	c.startReplica(c.replicas[0])
	c.startReplica(c.replicas[1])
	c.startReplica(c.replicas[2])
	_, token, err := client.New(c.replicas[0].url(), "").Login(ctx, "admin", adminPassword)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	c.api = &api{c: c, token: token}
	c.waitLeader(ctx, 30*time.Second)
	t.Logf("control plane up after %s", time.Since(began).Round(time.Millisecond))

	if err := c.api.do(ctx, "plan", func(ctx context.Context, cl *client.Client) error {
		_, err := cl.CreatePlan(ctx, client.Plan{Name: "chaos", DiskMB: 50, BandwidthMB: 1000, Domains: 2, Databases: 200, PHPVersions: []string{"8.2"}})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// Every node serves sites; two serve DNS (a primary and a secondary
	// for each zone), one databases. node-4 is the one killed, node-5
	// the one partitioned (through proxies).
	mods := [][]string{{"web", "dns"}, {"web", "dns"}, {"web", "db"}, {"web"}, {"web"}}
	for i, m := range mods {
		c.addNode(i+1, m, i == 4)
	}
	for _, n := range c.nodes {
		c.enrol(ctx, n)
	}
	waitUntil(t, 3*time.Minute, "nodes READY", func() (bool, string) { return c.nodesReady(ctx) })
	waitUntil(t, 3*time.Minute, "pdns and mariadb running", func() (bool, string) {
		ok := c.servicesRunning(ctx, "node-1", "pdns") && c.servicesRunning(ctx, "node-2", "pdns") &&
			c.servicesRunning(ctx, "node-3", "mariadb")
		return ok, "services"
	})
	t.Logf("cluster up (3 etcd, 3 replicas, 5 nodes) after %s; %s", time.Since(began).Round(time.Millisecond), c.memory())

	l := &ledger{}
	st := &stream{api: c.api, l: l, dbNode: "node-3"}
	pauseBetween := 500 * time.Millisecond
	st.start(ctx, pauseBetween)
	probe := startProber(ctx, c.api)
	streaming := true
	defer func() {
		if streaming {
			probe.halt()
			st.halt()
		}
	}()
	time.Sleep(5 * time.Second)

	var faults []*fault
	measure := func(f *fault) {
		// Unavailability: from the kill to the first answer.
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			r, rok := probe.firstOKAfter(f.at)
			w, wok := l.firstWriteAfter(f.at)
			if rok && wok {
				f.readGap, f.writeGap = r.Sub(f.at), w.Sub(f.at)
				// The bound on unavailability per failover, with
				// room for a loaded CI machine (goal: under 10 s).
				if gap := max(f.readGap, f.writeGap); gap > maxUnavailable {
					t.Errorf("%s %s: the API was unavailable for %s (bound %s)", f.kind, f.target, gap.Round(10*time.Millisecond), maxUnavailable)
				}
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("%s %s: the API did not answer within 2 minutes", f.kind, f.target)
	}

	leaderKills := 1
	if full() {
		leaderKills = 10
	}
	for i := range leaderKills {
		f := c.killLeader(ctx, t, i)
		measure(f)
		faults = append(faults, f)
	}

	// A non-leader replica.
	{
		var victim *replica
		lead := c.waitLeader(ctx, time.Minute)
		for _, r := range c.replicas {
			if r != lead {
				victim = r
				break
			}
		}
		f := &fault{kind: "kill -9 follower", target: victim.name, at: time.Now()}
		victim.kill9()
		measure(f)
		time.Sleep(2 * time.Second)
		c.startReplica(victim)
		faults = append(faults, f)
	}

	// The etcd member that leads etcd's raft.
	{
		var m *etcdMember
		waitUntil(t, time.Minute, "etcd's leader", func() (bool, string) {
			m = c.etcdLeader()
			return m != nil, "none"
		})
		f := &fault{kind: "kill -9 etcd leader", target: m.name, at: time.Now()}
		m.kill9()
		measure(f)
		time.Sleep(3 * time.Second)
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		c.waitHTTP(m.proc, m.client+"/health", time.Minute)
		faults = append(faults, f)
	}

	// An agent, with the daemons it supervises (as its unit's cgroup).
	{
		n := c.nodeByName("node-4")
		f := &fault{kind: "kill -9 agent", target: n.name, at: time.Now()}
		n.killTree()
		measure(f)
		time.Sleep(6 * time.Second) // past its lease: DOWN, its tasks wait
		c.restartNode(n)
		faults = append(faults, f)
	}

	// A partition between an agent and every replica, longer than its
	// lease.
	{
		n := c.nodeByName("node-5")
		f := &fault{kind: "partition agent", target: n.name, at: time.Now()}
		for _, p := range n.proxies {
			p.Cut()
		}
		measure(f)
		waitUntil(t, time.Minute, "node-5 not READY while cut off", func() (bool, string) {
			var nd *client.Node
			err := c.api.do(ctx, "node", func(ctx context.Context, cl *client.Client) error {
				var err error
				nd, err = cl.Node(ctx, "node-5")
				return err
			})
			return err == nil && nd != nil && nd.Status != "READY", "still READY"
		})
		time.Sleep(3 * time.Second)
		for _, p := range n.proxies {
			p.Heal()
		}
		faults = append(faults, f)
	}

	// Rolling upgrade: each replica stopped with SIGTERM and started on
	// the next version, one at a time, the stream running.
	var upgrades []*fault
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	second = nil
	c.npanel = v2
	for _, r := range c.replicas {
		waitUntil(t, 2*time.Minute, "nodes READY before the next replica", func() (bool, string) { return c.nodesReady(ctx) })
		f := &fault{kind: "upgrade (SIGTERM, restart)", target: r.name, at: time.Now()}
		r.stop(syscall.SIGTERM, 30*time.Second)
		r.argv[0] = v2
		c.startReplica(r)
		f.restart = time.Since(f.at)
		f.tasks = c.tasksFinished(t, f.at, f.at.Add(f.restart))
		measure(f)
		upgrades = append(upgrades, f)
	}
	upgradeEnd := time.Now()

	time.Sleep(5 * time.Second)
	underLoad := c.memory()
	probe.halt()
	st.halt()
	streaming = false
	stopped := time.Now()

	// Converged: every node READY on the new version, every account ACTIVE.
	waitUntil(t, 3*time.Minute, "nodes READY", func() (bool, string) { return c.nodesReady(ctx) })
	accts := c.waitAccountsActive(ctx, t, 3*time.Minute)
	converged := time.Since(stopped)

	c.checkLedger(ctx, t, l, accts)
	c.checkDatabasesServed(t, l)
	c.checkRecordsServed(t, l)
	c.checkPlacement(t, accts)
	c.checkTasks(t)

	// Figures.
	var failovers, newLeaders, placed []time.Duration
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-26s %-9s %9s %9s %10s %11s %9s %8s\n", "fault", "target", "read gap", "write gap", "new leader", "acct ACTIVE", "restart", "tasks")
	for _, f := range append(faults, upgrades...) {
		if f.failover > 0 {
			failovers = append(failovers, f.failover)
			newLeaders = append(newLeaders, f.newLeader)
			placed = append(placed, f.scheduled)
		}
		tasks := ""
		if f.restart > 0 {
			tasks = fmt.Sprint(f.tasks)
		}
		fmt.Fprintf(&b, "%-26s %-9s %9s %9s %10s %11s %9s %8s\n", f.kind, f.target, fmtDur(f.readGap), fmtDur(f.writeGap),
			fmtDur(f.newLeader), fmtDur(f.failover), fmtDur(f.restart), tasks)
	}
	for _, f := range faults {
		if f.failover > 0 {
			fmt.Fprintf(&b, "%s: account created +%s, SCHEDULED +%s, PROVISIONING +%s, ACTIVE +%s after the kill\n",
				f.kind, fmtDur(f.created), fmtDur(f.scheduled), fmtDur(f.provisioning), fmtDur(f.failover))
		}
	}
	fmt.Fprintf(&b, "read gap / write gap: fault to the first answered read / successful write started after it (API unavailability)\n")
	fmt.Fprintf(&b, "acct ACTIVE: leader kill to an account created after it ACTIVE (failover); restart: SIGTERM to the new version ready; tasks: tasks the nodes finished meanwhile\n")
	p50, pmax := summarize(failovers)
	l50, lmax := summarize(newLeaders)
	over := 0
	for _, fo := range failovers {
		over += b2i(fo >= 10*time.Second)
	}
	s50, smax := summarize(placed)
	fmt.Fprintf(&b, "failover over %d leader kills: kill to new leader p50 %s, max %s; to the new account placed by the new leader's controllers p50 %s, max %s; to the account ACTIVE p50 %s, max %s (%d at or over the 10 s goal)\n",
		len(failovers), fmtDur(l50), fmtDur(lmax), fmtDur(s50), fmtDur(smax), fmtDur(p50), fmtDur(pmax), over)
	var maxRead, maxWrite time.Duration
	for _, f := range append(faults, upgrades...) {
		maxRead, maxWrite = max(maxRead, f.readGap), max(maxWrite, f.writeGap)
	}
	fmt.Fprintf(&b, "API unavailability, worst over all faults: reads %s, writes %s\n", fmtDur(maxRead), fmtDur(maxWrite))
	fmt.Fprintf(&b, "rolling upgrade: longest gap between answered reads %s; slowest write (start to answer, retries included) %s\n",
		fmtDur(probe.longestGap(upgrades[0].at, upgradeEnd)), fmtDur(l.slowestWrite(upgrades[0].at, upgradeEnd)))
	l.mu.Lock()
	var okA, okR, okD, unk int
	for _, a := range l.accounts {
		okA += b2i(a.out == ok)
		unk += b2i(a.out == unknown)
	}
	for _, r := range l.records {
		okR += b2i(r.out == ok)
		unk += b2i(r.out == unknown)
	}
	for _, d := range l.dbs {
		okD += b2i(d.out == ok)
		unk += b2i(d.out == unknown)
	}
	fmt.Fprintf(&b, "stream: %d accounts, %d DNS records, %d databases answered ok; %d writes of unknown outcome; %d retried on another replica\n",
		okA, okR, okD, unk, l.retried)
	for _, e := range l.errs {
		fmt.Fprintf(&b, "  stream: %s\n", e)
	}
	l.mu.Unlock()
	var applies []time.Duration
	for _, n := range c.nodes {
		for _, lf := range n.logs() {
			ds, err := applyTimes(lf, "ensure_account")
			if err != nil {
				t.Error(err)
			}
			applies = append(applies, ds...)
		}
	}
	a50, amax := summarize(applies)
	fmt.Fprintf(&b, "ensure_account apply on the nodes (user, quota, PHP-FPM pool, vhost, reloads): p50 %s, max %s over %d applies\n",
		fmtDur(a50), fmtDur(amax), len(applies))
	fmt.Fprintf(&b, "at the end of the stream, %s\n", underLoad)
	fmt.Fprintf(&b, "converged (all nodes READY, %d accounts ACTIVE) %s after the stream stopped; whole run %s\n",
		len(accts), fmtDur(converged), fmtDur(time.Since(began)))
	t.Log(b.String())
	upgradeTasks := 0
	for _, f := range upgrades {
		upgradeTasks += f.tasks
	}
	if upgradeTasks == 0 {
		t.Error("no task finished on any node while the replicas restarted")
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// killLeader kills the leader with SIGKILL and measures the failover: a new
// leader named, and an account created after the kill ACTIVE (which needs
// the new leader's controllers to place it and its node to apply it). The
// killed replica is started again after.
func (c *cluster) killLeader(ctx context.Context, t *testing.T, i int) *fault {
	t.Helper()
	waitUntil(t, 2*time.Minute, "nodes READY before a leader kill", func() (bool, string) { return c.nodesReady(ctx) })
	lead := c.waitLeader(ctx, time.Minute)
	f := &fault{kind: fmt.Sprintf("kill -9 leader #%d", i+1), target: lead.name, at: time.Now()}
	lead.kill9()
	u := testenv.TestUsername()
	c.probes = append(c.probes, u)
	created := make(chan string, 1)
	go func() {
		var id string
		_ = c.api.do(ctx, "failover account", func(ctx context.Context, cl *client.Client) error {
			a, err := cl.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: "chaos"})
			if client.CodeOf(err) == "CONFLICT" {
				a, err = cl.Account(ctx, u)
			}
			if err == nil && a != nil {
				id = a.ID
			}
			return err
		})
		created <- id
	}()
	waitUntil(t, time.Minute, "a new leader", func() (bool, string) {
		l := c.leader(ctx)
		if l != nil && l != lead {
			f.newLeader = time.Since(f.at)
			return true, ""
		}
		return false, "none"
	})
	id := <-created
	if id == "" {
		t.Fatalf("account %s not created after the leader kill", u)
	}
	waitUntil(t, time.Minute, "the failover account ACTIVE", func() (bool, string) {
		var a *client.Account
		err := c.api.do(ctx, "account", func(ctx context.Context, cl *client.Client) error {
			var err error
			a, err = cl.Account(ctx, id)
			return err
		})
		if err == nil && a != nil && a.Status == "ACTIVE" {
			f.failover = time.Since(f.at)
			f.created = a.CreatedAt.Sub(f.at)
			for _, ev := range a.Events {
				switch ev.Status {
				case "SCHEDULED":
					f.scheduled = ev.At.Sub(f.at)
				case "PROVISIONING":
					f.provisioning = ev.At.Sub(f.at)
				}
			}
			return true, ""
		}
		if a != nil {
			return false, a.Status
		}
		return false, fmt.Sprint(err)
	})
	c.startReplica(lead)
	return f
}

// waitAccountsActive waits until every account is ACTIVE on a node and
// returns them.
func (c *cluster) waitAccountsActive(ctx context.Context, t *testing.T, timeout time.Duration) []client.Account {
	t.Helper()
	var accts []client.Account
	waitUntil(t, timeout, "every account ACTIVE", func() (bool, string) {
		var err error
		accts, err = c.allAccounts(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, a := range accts {
			if a.Status != "ACTIVE" || a.NodeName() == "" {
				return false, a.Username + " " + a.Status
			}
		}
		return true, ""
	})
	return accts
}

func (c *cluster) allAccounts(ctx context.Context) ([]client.Account, error) {
	var all []client.Account
	after := ""
	for {
		var page []client.Account
		var next string
		err := c.api.do(ctx, "accounts", func(ctx context.Context, cl *client.Client) error {
			var err error
			page, next, err = cl.Accounts(ctx, client.AccountFilter{}, 200, after)
			return err
		})
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		if next == "" {
			return all, nil
		}
		after = next
	}
}

// checkLedger: what was answered with success is there exactly once; what
// was refused is not there; what went unanswered is there at most once.
func (c *cluster) checkLedger(ctx context.Context, t *testing.T, l *ledger, accts []client.Account) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	byName := map[string]int{}
	byID := map[string]client.Account{}
	for _, a := range accts {
		byName[a.Username]++
		byID[a.ID] = a
	}
	want := func(what string, out outcome, n int) {
		switch {
		case out == ok && n != 1:
			t.Errorf("%s: answered ok, found %d times", what, n)
		case out == refused && n != 0:
			t.Errorf("%s: refused, found %d times", what, n)
		case out == unknown && n > 1:
			t.Errorf("%s: unanswered, found %d times", what, n)
		}
	}
	asked := map[string]bool{}
	for _, a := range l.accounts {
		want("account "+a.username, a.out, byName[a.username])
		asked[a.username] = true
	}
	for _, u := range c.probes {
		want("failover account "+u, ok, byName[u])
		asked[u] = true
	}
	for u := range byName {
		if !asked[u] {
			t.Errorf("account %s exists, but no request asked for it", u)
		}
	}
	zones := map[string]*client.Zone{}
	for _, r := range l.records {
		z, seen := zones[r.zone]
		if !seen {
			if err := c.api.do(ctx, "zone", func(ctx context.Context, cl *client.Client) error {
				var err error
				z, err = cl.Zone(ctx, r.zone)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			zones[r.zone] = z
		}
		n := 0
		if z != nil {
			n = countRecords(z, r.content)
		}
		want("record "+r.name+" "+r.content, r.out, n)
	}
	dbsOf := map[string][]client.Database{}
	for _, d := range l.dbs {
		dbs, seen := dbsOf[d.account]
		if !seen {
			if err := c.api.do(ctx, "databases", func(ctx context.Context, cl *client.Client) error {
				var err error
				dbs, err = cl.Databases(ctx, d.account)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			dbsOf[d.account] = dbs
		}
		n := 0
		for _, x := range dbs {
			if x.Name == d.name {
				n++
				if x.State != "ACTIVE" {
					t.Errorf("database %s: %s", d.name, x.State)
				}
			}
		}
		want("database "+d.name, d.out, n)
	}
}

// checkPlacement: each account's home and vhosts are on its node and on no
// other (the user database is the machine's, shared by the nodes; homes and
// nginx configs are per node, under its prefix).
func (c *cluster) checkPlacement(t *testing.T, accts []client.Account) {
	t.Helper()
	where := map[string][]string{}
	for _, n := range c.nodes {
		ents, err := os.ReadDir(filepath.Join(n.prefix, "home"))
		if err != nil {
			t.Errorf("%s homes: %v", n.name, err)
			continue
		}
		for _, e := range ents {
			where[e.Name()] = append(where[e.Name()], n.name)
		}
		// nginx: conf.d/npanel-USER_DOMAIN.conf; PHP-FPM:
		// pool.d/npanel-USER.conf.
		vhosts, pools := map[string]bool{}, map[string]bool{}
		_ = filepath.WalkDir(filepath.Join(n.prefix, "etc"), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			name, isOurs := strings.CutPrefix(d.Name(), "npanel-")
			if d.IsDir() || !isOurs || !strings.HasSuffix(name, ".conf") {
				return nil
			}
			switch filepath.Base(filepath.Dir(p)) {
			case "conf.d":
				if u, _, ok := strings.Cut(name, "_"); ok {
					vhosts[u] = true
				}
			case "pool.d":
				pools[strings.TrimSuffix(name, ".conf")] = true
			}
			return nil
		})
		for u := range vhosts {
			where["vhost:"+u] = append(where["vhost:"+u], n.name)
		}
		for u := range pools {
			where["pool:"+u] = append(where["pool:"+u], n.name)
		}
	}
	for _, a := range accts {
		if got := where[a.Username]; len(got) != 1 || got[0] != a.NodeName() {
			t.Errorf("account %s placed on %s: home on %v", a.Username, a.NodeName(), got)
		}
		for _, kind := range []string{"vhost", "pool"} {
			if got := where[kind+":"+a.Username]; len(got) != 1 || got[0] != a.NodeName() {
				t.Errorf("account %s placed on %s: %s on %v", a.Username, a.NodeName(), kind, got)
			}
		}
	}
}

// tasksFinished counts the tasks the nodes journaled as finished in
// [from, to].
func (c *cluster) tasksFinished(t *testing.T, from, to time.Time) int {
	n := 0
	for _, nd := range c.nodes {
		ents, err := journalEntries(filepath.Join(c.dir, nd.name+"-data", "journal"))
		if err != nil {
			t.Errorf("%s: %v", nd.name, err)
			continue
		}
		for _, e := range ents {
			if e.Finished >= from.UnixNano() && e.Finished <= to.UnixNano() {
				n++
			}
		}
	}
	return n
}

// checkTasks: no task ran twice on a node. The journal (one line per task
// applied and recorded) holds each id once; within one agent lifetime the
// log shows each task applied once. (A task applied by an agent killed
// before it journaled the result is applied again after the restart, by
// design: tasks are ensures of a whole object, and the result was never
// sent.)
func (c *cluster) checkTasks(t *testing.T) {
	t.Helper()
	total := 0
	for _, n := range c.nodes {
		ents, err := journalEntries(filepath.Join(c.dir, n.name+"-data", "journal"))
		if err != nil {
			t.Errorf("%s: %v", n.name, err)
			continue
		}
		seen := map[string]bool{}
		for _, e := range ents {
			if seen[e.ID] {
				t.Errorf("%s journaled task %s twice", n.name, e.ID)
			}
			seen[e.ID] = true
		}
		total += len(ents)
		applies := 0
		for _, lf := range n.logs() {
			applied, err := appliedTasks(lf)
			if err != nil {
				t.Errorf("%s: %v", lf, err)
				continue
			}
			applies += len(applied)
			for id, k := range applied {
				if k > 1 {
					t.Errorf("%s applied task %s %d times (%s)", n.name, id, k, lf)
				}
			}
		}
		if len(ents) > 0 && applies == 0 {
			t.Errorf("%s journaled %d tasks but its logs show none applied: the twice-applied check saw nothing", n.name, len(ents))
		}
	}
	t.Logf("%d tasks journaled over %d nodes, none twice", total, len(c.nodes))
}
