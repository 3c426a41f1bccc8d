package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/npanel/npanel/client"
)

// Bounds of the phases that wait for the server.
const (
	readyWait = 3 * time.Minute // all agents READY in `nodes`
	// stallWait ends the wait for ACTIVE when creation is over and no
	// account has turned ACTIVE (or FAILED) for this long.
	stallWait = 2 * time.Minute
	// maxErrorRatio of createAccount calls may fail before the run stops.
	maxErrorRatio = 0.01
)

// runner holds one run's state.
type runner struct {
	cfg      Config
	rep      *Report
	begin    time.Time
	existing bool // --server: a cluster this run did not start

	api     string      // base URL
	gateway string      // host:port
	pid     int         // server process, 0 if unknown
	srv     *serverProc // nil for an existing server
	etcd    *etcdProc   // with --etcd external
	// metrics is the base URL whose /metrics has etcd's figures: the
	// server's, which include its embedded member's, or the external
	// etcd's own.
	metrics string
	// metricsToken is the bearer the server's /metrics wants (the admin's
	// token); empty when metrics is an etcd's, which must not see it.
	metricsToken string
	admin        *client.Client

	runID  string // distinguishes this run's names on a shared cluster
	prefix string // username prefix
	plan   string
	nodes  []string

	stats    agentStats
	agentsWG sync.WaitGroup

	base map[string]int // accountCounts before the run
}

// run performs one load test. It returns the report as far as the run got,
// also when it returns an error.
func run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, begin: time.Now(), existing: cfg.Server != "", runID: runID()}
	r.prefix = "lt" + r.runID
	r.plan = "loadtest-" + r.runID
	host, _ := os.Hostname()
	r.rep = &Report{
		Started: r.begin,
		Machine: Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), Hostname: host, LoadAvgStart: loadAvg()},
		Accounts: AccountFigures{
			Requested: cfg.Accounts,
			Errors:    map[string]int{},
		},
		Agents: AgentFigures{Requested: cfg.Agents},
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	err := r.do(ctx)

	rep := r.rep
	rep.Finished = time.Now()
	rep.Machine.LoadAvgEnd = loadAvg()
	rep.Seconds = rep.Finished.Sub(rep.Started).Seconds()
	rep.Config = ReportConfig{
		Agents: cfg.Agents, Accounts: cfg.Accounts, Rate: cfg.Rate, Concurrency: cfg.Concurrency,
		LatencyMs: float64(cfg.Latency) / float64(time.Millisecond), Server: r.api, Gateway: r.gateway,
		StartedServer: !r.existing, Etcd: cfg.Etcd, TimeoutS: cfg.Timeout.Seconds(), ListSamples: cfg.ListSamples,
		EnrolParallel: cfg.EnrolParallel, UserPrefix: r.prefix,
	}
	rep.OK = err == nil
	if err != nil {
		rep.Error = err.Error()
	}
	return rep, err
}

// etcdPID is the external etcd's process id; 0 when there is none.
func (r *runner) etcdPID() int {
	if r.etcd == nil {
		return 0
	}
	return r.etcd.pid()
}

// diskProbeDir is where the disk probe writes ("" for no probe): the
// directory holding the started etcd's data unless --disk-probe names one.
func (r *runner) diskProbeDir() string {
	switch r.cfg.DiskProbe {
	case "off":
		return ""
	case "", "auto":
		switch {
		case r.etcd != nil:
			return r.etcd.dir
		case r.srv != nil:
			return r.srv.dir
		}
		return ""
	}
	return r.cfg.DiskProbe
}

// note records something the reader of the report must know (a query that
// failed and was worked around) and logs it.
func (r *runner) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.rep.Notes = append(r.rep.Notes, msg)
	r.logf("NOTE: %s", msg)
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.cfg.Log, "[%6.1fs] %s\n", time.Since(r.begin).Seconds(), fmt.Sprintf(format, args...))
}

// do runs the phases. Measurements are taken before the deferred teardown
// (agents first, then the server) runs.
func (r *runner) do(ctx context.Context) (err error) {
	cfg := r.cfg
	// The GraphQL client uses http.DefaultTransport, which keeps only two
	// idle connections per host: with dozens of calls in flight every other
	// call would open a new connection, and at hundreds per second the
	// closed ones pile up in TIME_WAIT until loopback runs out of ports.
	if t, ok := http.DefaultTransport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, cfg.Concurrency+cfg.EnrolParallel+8)
	}

	password := cfg.AdminPassword
	if r.existing {
		r.api, r.gateway, r.pid = strings.TrimRight(cfg.Server, "/"), cfg.Gateway, cfg.ServerPID
	} else {
		if cfg.Etcd == etcdExternal {
			if r.etcd, err = startEtcd(ctx, cfg.EtcdBinary, r.logf); err != nil {
				return err
			}
			defer func() {
				if err != nil {
					r.logf("etcd log ends:\n%s", r.etcd.logTail(30))
				}
				r.etcd.stop()
			}()
		}
		var srv *serverProc
		if srv, err = startServer(ctx, cfg.ServerBinary, r.etcd, cfg.ServerLog, cfg.ServerDebugListen, r.logf); err != nil {
			return err
		}
		r.srv = srv
		defer func() {
			// err is do's result: a failed run shows what the server said.
			if err != nil {
				r.logf("server log ends:\n%s", srv.logTail(30))
			}
			srv.stop()
		}()
		r.api, r.gateway, r.pid, password = "http://"+srv.api, srv.gateway, srv.pid(), srv.password
	}
	r.metrics = r.api
	if r.etcd != nil {
		r.metrics = "http://" + r.etcd.metrics
	}

	if r.admin, err = r.login(ctx, password); err != nil {
		return err
	}
	if r.base, err = accountCounts(ctx, r.admin); err != nil {
		return fmt.Errorf("accountCounts: %w", err)
	}
	if _, err := r.admin.CreatePlan(ctx, client.Plan{Name: r.plan, DiskMB: 100, BandwidthMB: 1000, Domains: 1,
		Mailboxes: 5, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		return fmt.Errorf("create plan: %w", err)
	}

	// The load phase leaves time for the measurements within --timeout.
	reserve := min(max(cfg.Timeout/6, 10*time.Second), 5*time.Minute)
	deadline, _ := ctx.Deadline()
	loadCtx, cancelLoad := context.WithDeadline(ctx, deadline.Add(-reserve))
	defer cancelLoad()

	agentCtx, stopAgents := context.WithCancel(context.Background())
	defer func() {
		stopAgents()
		r.agentsWG.Wait()
	}()
	if err := r.startAgents(loadCtx, agentCtx); err != nil {
		r.collectAgentStats()
		return err
	}

	loadErr := r.load(loadCtx)
	if ctx.Err() != nil {
		// Interrupted or out of time altogether: no queries, only the
		// figures a scrape and /proc give at once.
		mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		r.measureCheap(mctx)
		cancel()
		r.collectAgentStats()
		return errors.Join(loadErr, ctx.Err())
	}
	measureErr := r.measure(ctx)
	r.collectAgentStats()
	return errors.Join(loadErr, measureErr)
}

// login retries briefly: a server that just answered /readyz may still be
// creating its admin user.
func (r *runner) login(ctx context.Context, password string) (*client.Client, error) {
	c := client.New(r.api, "")
	var lastErr error
	for range 8 {
		admin, tok, err := c.Login(ctx, r.cfg.AdminUser, password)
		if err == nil {
			if r.metrics == r.api {
				r.metricsToken = tok
			}
			return admin, nil
		}
		lastErr = err
		if client.CodeOf(err) == "RATE_LIMITED" || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil, fmt.Errorf("log in as %s: %w", r.cfg.AdminUser, lastErr)
}

// startAgents declares, enrols and connects every simulated agent with
// bounded parallelism, then waits until `nodes` shows them all READY.
// The agents keep running under agentCtx.
func (r *runner) startAgents(ctx, agentCtx context.Context) error {
	n := r.cfg.Agents
	r.nodes = make([]string, n)
	for i := range r.nodes {
		if r.existing {
			r.nodes[i] = fmt.Sprintf("sim-%s-%04d", r.runID, i+1)
		} else {
			r.nodes[i] = fmt.Sprintf("sim-%04d", i+1)
		}
	}
	r.logf("enrolling %d simulated agents (%d at a time)", n, r.cfg.EnrolParallel)
	begin := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.EnrolParallel)
	stopTicker := r.ticker(2*time.Second, func() {
		r.logf("agents connected: %d / %d", r.stats.connected.Load(), n)
	})
	for _, name := range r.nodes {
		g.Go(func() error {
			a, err := enrolSimAgent(gctx, r.admin, r.gateway, name, r.cfg.Latency, &r.stats)
			if err != nil {
				return err
			}
			up := make(chan struct{})
			r.agentsWG.Go(func() { a.run(agentCtx, func() { close(up) }) })
			select {
			case <-up:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		})
	}
	err := g.Wait()
	stopTicker()
	if err != nil {
		return fmt.Errorf("start agents: %w", err)
	}
	r.logf("%d agents enrolled and streaming in %.1fs; waiting for READY", n, time.Since(begin).Seconds())

	ours := make(map[string]bool, n)
	for _, name := range r.nodes {
		ours[name] = true
	}
	wctx, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	last := time.Time{}
	for {
		ready := 0
		nodes, err := r.admin.Nodes(wctx)
		if err == nil {
			for _, nd := range nodes {
				if ours[nd.Name] && nd.Status == "READY" {
					ready++
				}
			}
			r.rep.Agents.Ready = ready
			if ready == n {
				r.rep.Agents.EnrolSeconds = round3(time.Since(begin).Seconds())
				r.logf("all %d nodes READY after %.1fs", n, r.rep.Agents.EnrolSeconds)
				return nil
			}
		}
		if time.Since(last) >= 2*time.Second {
			r.logf("nodes READY: %d / %d (err %v)", ready, n, err)
			last = time.Now()
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("only %d of %d nodes READY: %w", ready, n, wctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// ticker calls f every d until the returned stop is called.
func (r *runner) ticker(d time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (r *runner) collectAgentStats() {
	a := &r.rep.Agents
	a.Tasks, a.Duplicates = r.stats.tasks.Load(), r.stats.duplicates.Load()
	a.Results, a.Failed, a.Reconnects = r.stats.results.Load(), r.stats.failed.Load(), r.stats.reconnects.Load()
	r.stats.mu.Lock()
	a.StreamErrors = append([]string(nil), r.stats.errSamples...)
	r.stats.mu.Unlock()
}

// accountCounts returns the accountCounts query as a map.
func accountCounts(ctx context.Context, c *client.Client) (map[string]int, error) {
	var out struct {
		AccountCounts []struct {
			Status string `json:"status"`
			Count  int    `json:"count"`
		} `json:"accountCounts"`
	}
	if err := c.Do(ctx, `{accountCounts{status count}}`, nil, &out); err != nil {
		return nil, err
	}
	m := make(map[string]int, len(out.AccountCounts))
	for _, sc := range out.AccountCounts {
		m[sc.Status] = sc.Count
	}
	return m, nil
}

// loadAvg is the 1-minute load average: other work on the machine skews
// every figure, and the report should show it.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// runID is four random base-36 characters.
func runID() string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 4)
	for i := range b {
		b[i] = digits[rand.IntN(len(digits))]
	}
	return string(b)
}

// username is the i-th account's user name: prefix plus i in base 36,
// zero-padded to 5 digits, so names sort in creation order.
func username(prefix string, i int) string {
	s := strconv.FormatInt(int64(i), 36)
	if len(s) < 5 {
		s = strings.Repeat("0", 5-len(s)) + s
	}
	return prefix + s
}
