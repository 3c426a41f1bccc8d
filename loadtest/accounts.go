package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/diskprobe"
)

// creator calls createAccount at a bounded rate from a fixed number of
// workers and records every call's latency and every error's code.
type creator struct {
	c      *client.Client
	plan   string
	prefix string
	total  int
	conc   int
	lim    *rate.Limiter

	next    atomic.Int64 // index of the next account to create
	created atomic.Int64
	errored atomic.Int64

	mu       sync.Mutex
	lat      []time.Duration  // successful calls
	slow     []diskprobe.Span // successful calls that took over probeBar
	errs     map[string]int
	samples  []string
	first    time.Time // first call sent
	last     time.Time // last answer received
	abortErr error
	cancel   context.CancelFunc
}

func newCreator(c *client.Client, plan, prefix string, total, conc int, perSecond float64) *creator {
	lim := rate.NewLimiter(rate.Inf, 1)
	if perSecond > 0 {
		// A small burst absorbs timer jitter without letting the arrival
		// pattern turn lumpy.
		lim = rate.NewLimiter(rate.Limit(perSecond), max(1, int(perSecond/100)))
	}
	return &creator{c: c, plan: plan, prefix: prefix, total: total, conc: conc, lim: lim,
		lat: make([]time.Duration, 0, total), errs: map[string]int{}}
}

// run creates the accounts; it returns when all were attempted, ctx is
// done, or the error ratio went above maxErrorRatio.
func (cr *creator) run(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cr.mu.Lock()
	cr.cancel = cancel
	cr.mu.Unlock()
	var wg sync.WaitGroup
	for range cr.conc {
		wg.Go(func() { cr.worker(ctx) })
	}
	wg.Wait()
}

func (cr *creator) worker(ctx context.Context) {
	for {
		if err := cr.lim.Wait(ctx); err != nil {
			return
		}
		i := int(cr.next.Add(1) - 1)
		if i >= cr.total {
			return
		}
		u := username(cr.prefix, i)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		begin := time.Now()
		cr.mu.Lock()
		if cr.first.IsZero() {
			cr.first = begin
		}
		cr.mu.Unlock()
		_, err := cr.c.CreateAccount(cctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: cr.plan})
		took := time.Since(begin)
		cancel()
		if err != nil && ctx.Err() != nil {
			return // cut short by the end of the run, not the server's doing
		}
		cr.record(begin, took, err)
	}
}

func (cr *creator) record(begin time.Time, took time.Duration, err error) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cr.last = time.Now()
	if err == nil {
		cr.created.Add(1)
		cr.lat = append(cr.lat, took)
		if took > probeBar {
			cr.slow = append(cr.slow, diskprobe.Span{Start: begin, End: begin.Add(took)})
		}
		return
	}
	n := cr.errored.Add(1)
	code := client.CodeOf(err)
	if code == "" {
		code = "TRANSPORT"
	}
	cr.errs[code]++
	if len(cr.samples) < 10 {
		cr.samples = append(cr.samples, err.Error())
	}
	attempted := cr.created.Load() + n
	if attempted >= 100 && float64(n) > maxErrorRatio*float64(attempted) && cr.abortErr == nil {
		cr.abortErr = fmt.Errorf("createAccount failed %d times in %d calls (more than %.0f%%): %s; first: %s",
			n, attempted, maxErrorRatio*100, errorsString(cr.errs), cr.samples[0])
		cr.cancel()
	}
}

func (cr *creator) aborted() error {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return cr.abortErr
}

// load creates the accounts and waits until every created one is ACTIVE
// (or FAILED), printing progress every 2 s from the accountCounts query.
func (r *runner) load(ctx context.Context) error {
	cfg := r.cfg
	if max(cfg.Agents, 1)*1000 < cfg.Accounts {
		// Nodes take 1,000 accounts each unless the operator says otherwise.
		r.logf("warning: %d accounts exceed the default capacity of %d nodes (1,000 each); some will stay PENDING", cfg.Accounts, cfg.Agents)
	}
	r.logf("creating %d accounts at %.0f/s with %d in flight (usernames %s...)", cfg.Accounts, cfg.Rate, cfg.Concurrency, username(r.prefix, 0))
	cr := newCreator(r.admin, r.plan, r.prefix, cfg.Accounts, cfg.Concurrency, cfg.Rate)

	self := os.Getpid()
	srvStart, genStart, etcdStart := readProc(r.pid), readProc(self), readProc(r.etcdPID())
	metricsStart, _ := fetchMetrics(ctx, r.metrics, r.metricsToken)
	var probe *diskprobe.Probe
	if dir := r.diskProbeDir(); dir != "" {
		probe = diskprobe.Start(dir)
	}
	begin := time.Now()
	createDone := make(chan struct{})
	go func() {
		cr.run(ctx)
		close(createDone)
	}()
	waitErr := r.watch(ctx, cr, createDone, begin)
	<-createDone
	end := time.Now()
	if probe != nil {
		res, err := probe.Stop()
		r.rep.Disk = diskFiguresOf(res)
		if err != nil {
			r.note("%v", err)
		}
	}
	srvEnd, genEnd, etcdEnd := readProc(r.pid), readProc(self), readProc(r.etcdPID())
	if metricsStart != nil {
		// The load context may be over; the scrape gets its own bound.
		if metricsEnd, err := fetchMetrics(context.WithoutCancel(ctx), r.metrics, r.metricsToken); err == nil {
			r.etcdLoadFigures(metricsStart, metricsEnd, end.Sub(begin), int(cr.created.Load()))
		}
	}

	a := &r.rep.Accounts
	cr.mu.Lock()
	a.Created = int(cr.created.Load())
	a.Attempted = a.Created + int(cr.errored.Load())
	for k, v := range cr.errs {
		a.Errors[k] = v
	}
	a.ErrorSamples = append([]string(nil), cr.samples...)
	if !cr.first.IsZero() && cr.last.After(cr.first) {
		a.CreateSeconds = round3(cr.last.Sub(cr.first).Seconds())
		a.CreateRate = round3(float64(a.Created) / cr.last.Sub(cr.first).Seconds())
	}
	r.rep.CreateLatencyMs = distOf(cr.lat)
	r.rep.SlowCreates = slowCreatesOf(cr.slow, len(cr.lat), r.rep.Disk, begin)
	if r.srv != nil {
		r.rep.SlowCreates.ServerUptime = round3(begin.Sub(r.srv.started).Seconds())
	}
	cr.mu.Unlock()
	a.LoadSeconds = round3(end.Sub(begin).Seconds())

	wall := end.Sub(begin)
	r.rep.Server = loadFigures(r.pid, srvStart, srvEnd, wall)
	r.rep.Generator = loadFigures(self, genStart, genEnd, wall)
	r.rep.EtcdProcess = loadFigures(r.etcdPID(), etcdStart, etcdEnd, wall)

	if err := cr.aborted(); err != nil {
		return err
	}
	if a.Attempted > 0 && float64(a.Attempted-a.Created) > maxErrorRatio*float64(a.Attempted) {
		return fmt.Errorf("createAccount failed %d times in %d calls: %s", a.Attempted-a.Created, a.Attempted, errorsString(a.Errors))
	}
	return waitErr
}

// watch polls accountCounts every 500 ms and prints a line every 2 s. It
// returns nil once creation is over and every created account is ACTIVE or
// FAILED, and an error on timeout or when ACTIVE stops moving.
func (r *runner) watch(ctx context.Context, cr *creator, createDone <-chan struct{}, begin time.Time) error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var (
		lastPrint                = begin
		lastCreated, lastActive  int
		lastProc                 = readProc(r.pid)
		lastEtcd                 = readProc(r.etcdPID())
		lastChange               = time.Now()
		prevSettled              = -1
		active, failed, inFlight int
	)
	sample := func(now time.Time, final bool) {
		created := int(cr.created.Load())
		dt := now.Sub(lastPrint).Seconds()
		p := ProgressSample{
			Seconds: round3(now.Sub(begin).Seconds()), Created: created, Errors: int(cr.errored.Load()),
			Active: active, InFlight: inFlight, Failed: failed,
		}
		if dt > 0 {
			p.CreateRate = round3(float64(created-lastCreated) / dt)
			p.ActiveRate = round3(float64(active-lastActive) / dt)
		}
		proc, etcd := readProc(r.pid), readProc(r.etcdPID())
		p.ServerCPU, p.ServerRSS = cpuPercent(lastProc, proc, r.rep.Machine.Cores), proc.rss
		p.EtcdCPU, p.EtcdRSS = cpuPercent(lastEtcd, etcd, r.rep.Machine.Cores), etcd.rss
		if len(r.rep.Progress)%5 == 0 {
			mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if m, err := fetchMetrics(mctx, r.metrics, r.metricsToken); err == nil {
				v, _ := m.value("etcd_mvcc_db_total_size_in_bytes")
				p.EtcdDBSize = int64(v)
			}
			cancel()
		}
		r.rep.Progress = append(r.rep.Progress, p)
		line := fmt.Sprintf("created %d (%.0f/s, errors %d)  ACTIVE %d (%.0f/s)  in flight %d  FAILED %d",
			p.Created, p.CreateRate, p.Errors, p.Active, p.ActiveRate, p.InFlight, p.Failed)
		if p.ServerRSS > 0 {
			line += fmt.Sprintf("  server CPU %.0f%% of %d cores, RSS %s", p.ServerCPU, r.rep.Machine.Cores, mib(p.ServerRSS))
		}
		if p.EtcdRSS > 0 {
			line += fmt.Sprintf("; etcd CPU %.0f%%, RSS %s", p.EtcdCPU, mib(p.EtcdRSS))
		}
		if final {
			line += "  [done]"
		}
		r.logf("%s", line)
		lastPrint, lastCreated, lastActive, lastProc, lastEtcd = now, created, active, proc, etcd
	}
	for {
		select {
		case <-ctx.Done():
			sample(time.Now(), false)
			why := "out of time"
			if errors.Is(ctx.Err(), context.Canceled) {
				why = "interrupted"
			}
			return fmt.Errorf("%s: %d of %d created accounts ACTIVE: %w", why, active, cr.created.Load(), ctx.Err())
		case <-tick.C:
		}
		if r.srv != nil && !r.srv.alive() {
			return fmt.Errorf("the server exited during the run: %v", r.srv.waitErr)
		}
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		counts, err := accountCounts(qctx, r.admin)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				r.logf("accountCounts: %v", err)
			}
			continue
		}
		d := func(s string) int { return counts[s] - r.base[s] }
		active, failed = d("ACTIVE"), d("FAILED")
		inFlight = d("PENDING") + d("SCHEDULED") + d("PROVISIONING")
		now := time.Now()
		if settled := active + failed; settled != prevSettled {
			prevSettled, lastChange = settled, now
		}
		finished := false
		select {
		case <-createDone:
			finished = true
		default:
		}
		created := int(cr.created.Load())
		switch {
		case finished && cr.aborted() != nil:
			sample(now, true)
			return nil // load reports the abort
		case finished && active+failed >= created:
			sample(now, true)
			if failed > 0 {
				return fmt.Errorf("%d of %d accounts FAILED", failed, created)
			}
			return nil
		case finished && now.Sub(lastChange) > stallWait:
			sample(now, false)
			return fmt.Errorf("stalled: %d of %d accounts ACTIVE and none settled for %v", active, created, stallWait)
		}
		if now.Sub(lastPrint) >= 2*time.Second {
			sample(now, false)
		}
	}
}

// etcdLoadFigures fills the etcd figures of the load phase from two
// scrapes of the server's /metrics.
func (r *runner) etcdLoadFigures(before, after metricSet, wall time.Duration, created int) {
	const committed = "etcd_server_proposals_committed_total"
	e := &r.rep.Etcd
	if v, ok := after.value(committed); ok {
		e.Proposals = v - before[committed]
		if created > 0 {
			e.ProposalsPerAccount = round3(e.Proposals / float64(created))
		}
		e.ProposalsPerSecond = round3(e.Proposals / wall.Seconds())
	}
	e.WALFsync = histDelta(before, after, "etcd_disk_wal_fsync_duration_seconds")
	e.BackendCommit = histDelta(before, after, "etcd_disk_backend_commit_duration_seconds")
}

// cpuPercent is a process's CPU between two samples, in percent of the
// machine; 0 without both samples.
func cpuPercent(from, to procSample, cores int) float64 {
	secs := to.at.Sub(from.at).Seconds()
	if !from.hasStats || !to.hasStats || secs <= 0 {
		return 0
	}
	return round3(100 * (to.cpu - from.cpu).Seconds() / secs / float64(cores))
}

// loadFigures computes a process's CPU over the load phase and reads its
// memory now.
func loadFigures(pid int, start, end procSample, wall time.Duration) ProcFigures {
	f := ProcFigures{PID: pid}
	if pid == 0 || !start.hasStats || !end.hasStats || wall <= 0 {
		return f
	}
	cores := float64(runtime.NumCPU())
	cpu := end.cpu - start.cpu
	f.Measured = true
	f.LoadCPUSeconds = round3(cpu.Seconds())
	f.CoresBusy = round3(cpu.Seconds() / wall.Seconds())
	f.CPUPercent = round3(100 * f.CoresBusy / cores)
	f.TotalCPUSecs = round3(end.cpu.Seconds())
	f.PeakRSS, f.EndRSS, f.EndRSSAnon, f.EndRSSFile = end.peakRSS, end.rss, end.rssAnon, end.rssFile
	f.WrittenBytes = -1
	if start.written >= 0 && end.written >= 0 {
		f.WrittenBytes = end.written - start.written
	}
	return f
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }
