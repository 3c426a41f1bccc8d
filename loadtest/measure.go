package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/npanel/npanel/client"
)

// accountTimes is what the end-of-run paging keeps of one account.
type accountTimes struct {
	id      string
	owner   string
	status  string
	pending time.Time // first PENDING event (createdAt if none)
	active  time.Time // first ACTIVE event, zero if never
}

// measure takes the end-of-run figures: create-to-ACTIVE from the accounts'
// own events, accounts(first:50) latency, then the cheap ones.
func (r *runner) measure(ctx context.Context) error {
	var errs []error
	accts, err := r.pageAccounts(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("page accounts: %w", err))
	}
	r.summariseAccounts(accts)
	if err := r.listLatency(ctx, accts); err != nil {
		errs = append(errs, fmt.Errorf("accounts(first:50): %w", err))
	}
	// Peak memory and total CPU are read after the queries above.
	r.measureCheap(ctx)
	if err := r.census(ctx); err != nil {
		errs = append(errs, fmt.Errorf("keyspace census: %w", err))
	}
	return errors.Join(errs...)
}

// measureCheap reads etcd's size and the processes' memory and CPU: a
// scrape and two files, quick enough to take even on an interrupted run.
func (r *runner) measureCheap(ctx context.Context) {
	if m, err := fetchMetrics(ctx, r.metrics, r.metricsToken); err != nil {
		r.logf("metrics: %v", err)
		for i := len(r.rep.Progress) - 1; i >= 0; i-- {
			if p := r.rep.Progress[i]; p.EtcdDBSize > 0 {
				r.rep.Etcd.Measured, r.rep.Etcd.DBSize = true, p.EtcdDBSize
				r.note("etcd DB size is from the progress sample at %.0fs: the final scrape failed (%v)", p.Seconds, err)
				break
			}
		}
	} else if v, ok := m.value("etcd_mvcc_db_total_size_in_bytes"); ok {
		inUse, _ := m.value("etcd_mvcc_db_total_size_in_use_in_bytes")
		r.rep.Etcd.Measured, r.rep.Etcd.DBSize, r.rep.Etcd.DBSizeInUse = true, int64(v), int64(inUse)
	}
	for _, f := range []*ProcFigures{&r.rep.Server, &r.rep.EtcdProcess, &r.rep.Generator} {
		if !f.Measured {
			continue
		}
		if p := readProc(f.PID); p.hasStats {
			f.PeakRSS, f.EndRSS, f.TotalCPUSecs = p.peakRSS, p.rss, round3(p.cpu.Seconds())
			f.EndRSSAnon, f.EndRSSFile = p.rssAnon, p.rssFile
		}
	}
	if r.pid == 0 {
		r.logf("server CPU and memory not measured: pass --server-pid for an existing server")
	}
	a := r.rep.Accounts
	create := r.rep.CreateLatencyMs
	createMet := create.Count > 0 && create.P99 < 50
	r.rep.Targets = []Target{
		{Name: "accounts/s to ACTIVE", Value: a.ActivePerSecond, Bar: ">= 500", Met: a.ActivePerSecond >= 500},
		{Name: "createAccount p99 ms", Value: create.P99, Bar: "< 50", Met: createMet},
	}
	if d := r.rep.Disk; d.Measured && d.StalledShare >= 1 && !createMet {
		r.note("the disk alone held a synced write over 50 ms for %.2f%% of the load phase (disk probe); creates arrive evenly, so about as many met a disk that slow: over 1%% puts createAccount p99 < 50 ms out of reach of any store that syncs its writes, in this run", d.StalledShare)
	}
}

// pageAccounts reads every account of this run with accounts(first:500),
// timing each page.
func (r *runner) pageAccounts(ctx context.Context) ([]accountTimes, error) {
	var f client.AccountFilter
	if r.existing {
		f.Search = r.prefix // other tenants' accounts are not ours to time
	}
	begin := time.Now()
	out := make([]accountTimes, 0, r.rep.Accounts.Created)
	var lat []time.Duration
	defer func() { r.rep.PageLatencyMs = distOf(lat) }()
	after := ""
	size, pages := 500, 0
	for {
		qctx, cancel := context.WithTimeout(ctx, time.Minute)
		t := time.Now()
		page, next, err := r.admin.Accounts(qctx, f, size, after)
		cancel()
		if err != nil && size == 500 && ctx.Err() == nil {
			// Say so, and get the other figures with smaller pages.
			r.note("accounts(first:500) failed (%v); paging with first:100 instead", err)
			size = 100
			continue
		}
		if err != nil {
			return out, err
		}
		pages++
		if size == 500 {
			lat = append(lat, time.Since(t))
		}
		for _, a := range page {
			if !strings.HasPrefix(a.Username, r.prefix) {
				continue
			}
			at := accountTimes{id: a.ID, owner: a.Owner.Name, status: a.Status, pending: a.CreatedAt}
			sawPending := false
			for _, e := range a.Events {
				switch {
				case e.Status == "PENDING" && !sawPending:
					at.pending, sawPending = e.At, true
				case e.Status == "ACTIVE" && at.active.IsZero():
					at.active = e.At
				}
			}
			out = append(out, at)
		}
		if next == "" {
			break
		}
		if next == after {
			return out, fmt.Errorf("server repeated cursor %q", next)
		}
		after = next
	}
	r.logf("paged %d accounts in %d pages of %d in %.1fs", len(out), pages, size, time.Since(begin).Seconds())
	return out, nil
}

// summariseAccounts computes create-to-ACTIVE and the ACTIVE rate from the
// accounts' server-side event times.
func (r *runner) summariseAccounts(accts []accountTimes) {
	a := &r.rep.Accounts
	var toActive []time.Duration
	var firstPending, lastPending, lastActive time.Time
	for _, x := range accts {
		if firstPending.IsZero() || x.pending.Before(firstPending) {
			firstPending = x.pending
		}
		if x.pending.After(lastPending) {
			lastPending = x.pending
		}
		if x.status == "FAILED" {
			a.Failed++
		}
		if x.active.IsZero() {
			continue
		}
		if x.status == "ACTIVE" {
			a.Active++
		}
		toActive = append(toActive, x.active.Sub(x.pending))
		if x.active.After(lastActive) {
			lastActive = x.active
		}
	}
	// Counted from what the server holds: a call that timed out on the
	// client may still have created its account.
	a.Stored = len(accts)
	a.NotActive = a.Stored - a.Active
	r.rep.CreateToActiveMs = distOf(toActive)
	if span := lastActive.Sub(firstPending).Seconds(); span > 0 {
		a.ActivePerSecond = round3(float64(len(toActive)) / span)
	}
	if span := lastPending.Sub(firstPending).Seconds(); span > 0 {
		a.AcceptedPerSecond = round3(float64(len(accts)) / span)
	}
}

// listLatency times cfg.ListSamples accounts(first:50) queries one after
// another: most start at a random cursor among the stored accounts, some at
// the first page, some filtered by status ACTIVE or by owner.
func (r *runner) listLatency(ctx context.Context, accts []accountTimes) error {
	var counts struct {
		AccountCounts []struct {
			Count int `json:"count"`
		} `json:"accountCounts"`
	}
	if err := r.admin.Do(ctx, `{accountCounts{count}}`, nil, &counts); err != nil {
		return err
	}
	var stored int
	for _, c := range counts.AccountCounts {
		stored += c.Count
	}
	r.rep.ListLatencyMs.TotalCount = stored
	r.rep.ListLatencyMs.Paged = len(accts)
	owner := r.cfg.AdminUser
	if len(accts) > 0 && accts[0].owner != "" {
		owner = accts[0].owner
	}
	cursor := func() string {
		if len(accts) == 0 {
			return ""
		}
		return accts[rand.IntN(len(accts))].id
	}
	var all, first, cur, byStatus, byOwner []time.Duration
	for i := range r.cfg.ListSamples {
		var f client.AccountFilter
		after := ""
		kind := &cur
		switch i % 10 {
		case 0:
			f.Status, after, kind = "ACTIVE", cursor(), &byStatus
		case 1:
			f.Owner, after, kind = owner, cursor(), &byOwner
		case 2:
			kind = &first
		default:
			after = cursor()
		}
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t := time.Now()
		_, _, err := r.admin.Accounts(qctx, f, 50, after)
		d := time.Since(t)
		cancel()
		if err != nil {
			return err
		}
		all = append(all, d)
		*kind = append(*kind, d)
	}
	r.rep.ListLatencyMs.All = distOf(all)
	r.rep.ListLatencyMs.FirstPage = distOf(first)
	r.rep.ListLatencyMs.Cursor = distOf(cur)
	r.rep.ListLatencyMs.ByStatus = distOf(byStatus)
	r.rep.ListLatencyMs.ByOwner = distOf(byOwner)
	if r.cfg.ListSamples > 0 {
		r.logf("timed %d accounts(first:50) queries with %d accounts paged (%d stored): p50 %.1f ms, p99 %.1f ms",
			len(all), len(accts), stored, r.rep.ListLatencyMs.All.P50, r.rep.ListLatencyMs.All.P99)
	}
	return nil
}
