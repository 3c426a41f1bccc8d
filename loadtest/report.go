package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/npanel/npanel/internal/diskprobe"
)

// Report is everything one run measured. It is printed as a table and
// written as JSON; durations are in milliseconds, sizes in bytes.
type Report struct {
	Started  time.Time    `json:"started"`
	Finished time.Time    `json:"finished"`
	Seconds  float64      `json:"seconds"`
	OK       bool         `json:"ok"`
	Error    string       `json:"error,omitempty"`
	Config   ReportConfig `json:"config"`
	Machine  Machine      `json:"machine"`

	Agents   AgentFigures   `json:"agents"`
	Accounts AccountFigures `json:"accounts"`

	// CreateLatencyMs is createAccount as the API client sees it.
	CreateLatencyMs Dist `json:"createAccountLatencyMs"`
	// SlowCreates are the creates over the p99 bar, and how many of them
	// the disk probe saw the disk stall under.
	SlowCreates SlowCreates `json:"createAccountOver50ms"`
	// CreateToActiveMs is per account, ACTIVE event time minus PENDING
	// event time: both server timestamps, so no clock skew is involved.
	CreateToActiveMs Dist `json:"createToActiveMs"`
	// ListLatencyMs is accounts(first: 50) with every account stored.
	ListLatencyMs ListFigures `json:"accountsFirst50LatencyMs"`
	// PageLatencyMs is accounts(first: 500) while paging through all.
	PageLatencyMs Dist `json:"accountsFirst500LatencyMs"`

	Server    ProcFigures `json:"server"`
	Generator ProcFigures `json:"generator"`
	// EtcdProcess is the etcd the run started with --etcd external;
	// embedded, etcd's work is part of the server's figures.
	EtcdProcess ProcFigures `json:"etcdProcess"`
	Etcd        EtcdFigures `json:"etcd"`
	// Keyspace is the census of etcd's live keys after the run, when the
	// run started the etcd.
	Keyspace KeyspaceFigures `json:"keyspace"`
	// Disk is the disk probe's, over the load phase.
	Disk    DiskFigures `json:"disk"`
	Targets []Target    `json:"targets"`
	// Notes are problems met and worked around, e.g. a query that failed.
	Notes    []string         `json:"notes,omitempty"`
	Progress []ProgressSample `json:"progress"`
}

// ReportConfig is the configuration the run used (without secrets).
type ReportConfig struct {
	Agents        int     `json:"agents"`
	Accounts      int     `json:"accounts"`
	Rate          float64 `json:"rate"`
	Concurrency   int     `json:"concurrency"`
	LatencyMs     float64 `json:"latencyMs"`
	Server        string  `json:"server"`
	Gateway       string  `json:"gateway"`
	StartedServer bool    `json:"startedServer"`
	Etcd          string  `json:"etcd"` // embedded or external (see --etcd)
	TimeoutS      float64 `json:"timeoutSeconds"`
	ListSamples   int     `json:"listSamples"`
	EnrolParallel int     `json:"enrolParallel"`
	UserPrefix    string  `json:"usernamePrefix"`
}

// Machine describes where the run happened.
type Machine struct {
	Cores     int    `json:"cores"`
	GoVersion string `json:"goVersion"`
	Hostname  string `json:"hostname"`
	// Load averages (1 min) at start and end: other work on the machine
	// competes with the server for its cores.
	LoadAvgStart float64 `json:"loadAvgStart"`
	LoadAvgEnd   float64 `json:"loadAvgEnd"`
}

// AgentFigures are the simulated agents' counters.
type AgentFigures struct {
	Requested    int     `json:"requested"`
	Ready        int     `json:"ready"`
	EnrolSeconds float64 `json:"enrolSeconds"`
	Tasks        int64   `json:"tasksReceived"`
	Duplicates   int64   `json:"duplicateTasks"`
	Results      int64   `json:"resultsSent"`
	Failed       int64   `json:"resultsFailed"`
	Reconnects   int64   `json:"reconnects"`
	// StreamErrors are the first few errors that ended a stream.
	StreamErrors []string `json:"streamErrors,omitempty"`
}

// AccountFigures count the account phase.
type AccountFigures struct {
	Requested int `json:"requested"`
	Attempted int `json:"attempted"`
	Created   int `json:"created"`
	// Errors counts failed createAccount calls by GraphQL code
	// (TRANSPORT: no GraphQL answer).
	Errors       map[string]int `json:"errors"`
	ErrorSamples []string       `json:"errorSamples,omitempty"`
	// Active, Failed and NotActive count this run's accounts as the
	// server holds them at the end (a createAccount call that timed out
	// may still have created one).
	Stored    int `json:"stored"`
	Active    int `json:"active"`
	Failed    int `json:"failed"`
	NotActive int `json:"notActive"`
	// CreateSeconds is the client's wall time from the first createAccount
	// call to the last answer; CreateRate = Created / CreateSeconds.
	CreateSeconds float64 `json:"createSeconds"`
	CreateRate    float64 `json:"createPerSecond"`
	// ActivePerSecond = accounts ACTIVE / (last ACTIVE − first PENDING),
	// server timestamps.
	ActivePerSecond float64 `json:"activePerSecond"`
	// AcceptedPerSecond = accounts / (last PENDING − first PENDING).
	AcceptedPerSecond float64 `json:"acceptedPerSecond"`
	// LoadSeconds is the generator's wall time from the first create until
	// every created account was ACTIVE (or the wait ended).
	LoadSeconds float64 `json:"loadSeconds"`
}

// ListFigures split accounts(first:50) latency by the kind of query.
type ListFigures struct {
	All       Dist `json:"all"`
	FirstPage Dist `json:"firstPage"`
	Cursor    Dist `json:"randomCursor"`
	ByStatus  Dist `json:"statusActive"`
	ByOwner   Dist `json:"owner"`
	// Paged is how many of this run's accounts the paging read back;
	// TotalCount is how many accounts the server says it stores (the sum of
	// accountCounts).
	Paged      int `json:"accountsPaged"`
	TotalCount int `json:"totalCount"`
}

// ProcFigures describe one process. CPU figures cover the load phase
// (first create to all ACTIVE); CPUPercent is of the whole machine
// (100 = every core busy), CoresBusy the same as a number of cores.
type ProcFigures struct {
	PID            int     `json:"pid,omitempty"`
	Measured       bool    `json:"measured"`
	LoadCPUSeconds float64 `json:"loadCpuSeconds"`
	CPUPercent     float64 `json:"cpuPercent"`
	CoresBusy      float64 `json:"coresBusy"`
	TotalCPUSecs   float64 `json:"totalCpuSeconds"`
	PeakRSS        int64   `json:"peakRssBytes"`
	EndRSS         int64   `json:"endRssBytes"`
	// EndRSSAnon and EndRSSFile split EndRSS: anonymous memory (heap,
	// stacks) and resident pages of mapped files (etcd's database).
	EndRSSAnon int64 `json:"endRssAnonBytes"`
	EndRSSFile int64 `json:"endRssFileBytes"`
	// WrittenBytes is what the process sent to storage over the load
	// phase; -1 if not known.
	WrittenBytes int64 `json:"loadWrittenBytes"`
}

// EtcdFigures come from etcd's /metrics: the server's, which include its
// embedded member's, or the external etcd's.
type EtcdFigures struct {
	Measured    bool  `json:"measured"`
	DBSize      int64 `json:"dbTotalSizeBytes"`
	DBSizeInUse int64 `json:"dbTotalSizeInUseBytes"`

	// Over the load phase: Raft proposals committed (every write request
	// is one, however many operations its Txn holds), per created account
	// and per second; and how long the disk made them wait.
	Proposals           float64   `json:"proposalsCommitted"`
	ProposalsPerAccount float64   `json:"proposalsPerAccount"`
	ProposalsPerSecond  float64   `json:"proposalsPerSecond"`
	WALFsync            histStats `json:"walFsync"`
	BackendCommit       histStats `json:"backendCommit"`
}

// Target is one figure the issue sets a bar for.
type Target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Bar   string  `json:"bar"`
	Met   bool    `json:"met"`
}

// ProgressSample is one progress line.
type ProgressSample struct {
	Seconds    float64 `json:"t"`
	Created    int     `json:"created"`
	Errors     int     `json:"errors"`
	Active     int     `json:"active"`
	InFlight   int     `json:"inFlight"` // PENDING, SCHEDULED, PROVISIONING
	Failed     int     `json:"failed"`
	CreateRate float64 `json:"createPerSecond"`
	ActiveRate float64 `json:"activePerSecond"`
	ServerCPU  float64 `json:"serverCpuPercent,omitempty"`
	ServerRSS  int64   `json:"serverRssBytes,omitempty"`
	EtcdCPU    float64 `json:"etcdCpuPercent,omitempty"` // --etcd external
	EtcdRSS    int64   `json:"etcdRssBytes,omitempty"`
	// EtcdDBSize is scraped every fifth sample (about every 10 s), so that
	// an interrupted run still knows roughly how large etcd grew.
	EtcdDBSize int64 `json:"etcdDbSizeBytes,omitempty"`
}

// Dist summarises a sample of durations, in milliseconds.
type Dist struct {
	Count int     `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// distOf summarises ds with nearest-rank percentiles.
func distOf(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Millisecond)*1000) / 1000 }
	rank := func(p float64) time.Duration {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Dist{
		Count: len(s),
		Mean:  ms(sum / time.Duration(len(s))),
		P50:   ms(rank(50)),
		P95:   ms(rank(95)),
		P99:   ms(rank(99)),
		Max:   ms(s[len(s)-1]),
	}
}

// writeJSON writes r to path, creating its directory.
func (r *Report) writeJSON(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// print writes the human summary.
func (r *Report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(format, args...)) }
	d := func(x Dist) string {
		if x.Count == 0 {
			return "-"
		}
		return fmt.Sprintf("p50 %.1f  p95 %.1f  p99 %.1f  max %.1f ms  (n=%d)", x.P50, x.P95, x.P99, x.Max, x.Count)
	}
	c := r.Config
	fmt.Fprintf(tw, "\nnPanel load test: %d simulated agents, %d accounts at %.0f/s (concurrency %d, action latency %.0f ms), %s etcd, %d cores, load average %.1f -> %.1f\n",
		c.Agents, c.Accounts, c.Rate, c.Concurrency, c.LatencyMs, c.Etcd, r.Machine.Cores, r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd)
	a := r.Accounts
	row("agents ready", "%d / %d (enrolled+connected in %.1fs; %d tasks, %d duplicates, %d reconnects)",
		r.Agents.Ready, r.Agents.Requested, r.Agents.EnrolSeconds, r.Agents.Tasks, r.Agents.Duplicates, r.Agents.Reconnects)
	row("accounts created", "%d of %d attempted in %.1fs (%.0f/s); errors %s", a.Created, a.Attempted, a.CreateSeconds, a.CreateRate, errorsString(a.Errors))
	row("accounts ACTIVE", "%d of %d stored (FAILED %d, not ACTIVE %d)", a.Active, a.Stored, a.Failed, a.NotActive)
	row("accounts/s to ACTIVE", "%.1f  (server timestamps: first PENDING to last ACTIVE)", a.ActivePerSecond)
	row("accounts/s accepted", "%.1f  (first to last PENDING)", a.AcceptedPerSecond)
	row("createAccount latency", "%s", d(r.CreateLatencyMs))
	if sc := r.SlowCreates; r.CreateLatencyMs.Count > 0 {
		during := ""
		if r.Disk.Measured {
			during = fmt.Sprintf(", %d of them while a probe write took over 50 ms", sc.DuringDiskStall)
		}
		row("  over 50 ms", "%d (%.2f%%; a p99 under 50 ms allows 1%%)%s", sc.Count, sc.Percent, during)
		if len(sc.Episodes) > 0 {
			row("  slow episodes", "%s", episodesString(sc.Episodes, r.Disk.Measured))
		}
	}
	row("create to ACTIVE", "%s", d(r.CreateToActiveMs))
	row("accounts(first:50)", "%s  [%d accounts paged; %d stored]", d(r.ListLatencyMs.All), r.ListLatencyMs.Paged, r.ListLatencyMs.TotalCount)
	row("  first page", "%s", d(r.ListLatencyMs.FirstPage))
	row("  random cursor", "%s", d(r.ListLatencyMs.Cursor))
	row("  status ACTIVE", "%s", d(r.ListLatencyMs.ByStatus))
	row("  owner", "%s", d(r.ListLatencyMs.ByOwner))
	row("accounts(first:500)", "%s", d(r.PageLatencyMs))
	p := func(name string, f ProcFigures) {
		if !f.Measured {
			row(name, "not measured")
			return
		}
		written := ""
		if f.WrittenBytes >= 0 {
			written = fmt.Sprintf(", wrote %s to storage during the load", mib(f.WrittenBytes))
		}
		row(name, "CPU %.1f%% of %d cores (%.2f cores, %.1f CPU-s over the load phase; %.1f CPU-s total), peak RSS %s, end RSS %s (anonymous %s, mapped files %s)%s",
			f.CPUPercent, r.Machine.Cores, f.CoresBusy, f.LoadCPUSeconds, f.TotalCPUSecs, mib(f.PeakRSS), mib(f.EndRSS), mib(f.EndRSSAnon), mib(f.EndRSSFile), written)
	}
	p("server", r.Server)
	if c.Etcd == etcdExternal {
		p("etcd process", r.EtcdProcess)
	}
	p("generator", r.Generator)
	if e := r.Etcd; e.Measured {
		row("etcd DB size", "%s (in use %s)", mib(e.DBSize), mib(e.DBSizeInUse))
		row("etcd during load", "%.0f proposals (%.2f per account, %.0f/s); WAL fsync mean %.2f ms, p99 <= %.0f ms; backend commit mean %.2f ms, p99 <= %.0f ms",
			e.Proposals, e.ProposalsPerAccount, e.ProposalsPerSecond, e.WALFsync.MeanMs, e.WALFsync.P99Ms, e.BackendCommit.MeanMs, e.BackendCommit.P99Ms)
	} else {
		row("etcd DB size", "not measured")
	}
	keyspaceRows(r.Keyspace, r.Accounts.Stored, row)
	if f := r.Disk; f.Measured {
		row("disk (probe)", "4 KiB write+fdatasync every %.0f ms: %s; over 50 ms %d times, %.1f s in all: %.2f%% of %.0f s",
			f.IntervalMs, d(f.Latency), f.SlowWrites, f.StalledSeconds, f.StalledShare, f.Seconds)
	}
	for _, t := range r.Targets {
		mark := "MISSED"
		if t.Met {
			mark = "met"
		}
		row("target "+t.Name, "%.1f (bar %s): %s", t.Value, t.Bar, mark)
	}
	for _, n := range r.Notes {
		row("NOTE", "%s", n)
	}
	if r.Error != "" {
		row("ERROR", "%s", r.Error)
	}
	tw.Flush()
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func errorsString(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// SlowCreates counts the creates that took longer than the p99 bar. Those
// that overlapped a disk stall (a probe write over the bar) had the disk
// against them; the others were held up by something else, usually the
// server's collector or its cores.
type SlowCreates struct {
	Count   int     `json:"count"`
	Percent float64 `json:"percent"`
	// DuringDiskStall overlapped a probe write that took over the bar.
	DuringDiskStall int `json:"duringDiskStall"`
	// Episodes are the slow creates merged where they overlap in time: one
	// hold-up of the server shows as one episode however many creates it
	// caught, so their times can be laid beside the server's own events
	// (its collections, etcd's snapshots) to find what held it up.
	Episodes []SlowEpisode `json:"episodes,omitempty"`
	// ServerUptime is how long the started server had been running when
	// the load began: an episode's At plus this is its time in the
	// server's own clock, the one GODEBUG=gctrace=1 prints.
	ServerUptime float64 `json:"serverUptimeAtLoad,omitempty"`
}

// SlowEpisode is a stretch of time in which every moment had a create in
// flight that ended up over the bar.
type SlowEpisode struct {
	// At is its start, in seconds since the load began.
	At      float64 `json:"at"`
	Seconds float64 `json:"seconds"`
	Creates int     `json:"creates"`
	// DiskStall says a probe write over the bar overlapped it.
	DiskStall bool `json:"diskStall"`
}

// slowCreatesOf sums up the slow creates of a load that began at begin.
func slowCreatesOf(slow []diskprobe.Span, total int, disk DiskFigures, begin time.Time) SlowCreates {
	sc := SlowCreates{Count: len(slow), DuringDiskStall: diskprobe.Overlapping(slow, disk.stalls)}
	if total > 0 {
		sc.Percent = round3(100 * float64(len(slow)) / float64(total))
	}
	for _, e := range episodes(slow) {
		sc.Episodes = append(sc.Episodes, SlowEpisode{
			At:        round3(e.Start.Sub(begin).Seconds()),
			Seconds:   round3(e.Took().Seconds()),
			Creates:   e.creates,
			DiskStall: diskprobe.Overlapping([]diskprobe.Span{e.Span}, disk.stalls) > 0,
		})
	}
	return sc
}

type episode struct {
	diskprobe.Span
	creates int
}

// episodes merges the spans that overlap, in time order.
func episodes(spans []diskprobe.Span) []episode {
	sorted := slices.Clone(spans)
	slices.SortFunc(sorted, func(a, b diskprobe.Span) int { return a.Start.Compare(b.Start) })
	var out []episode
	for _, s := range sorted {
		if n := len(out); n > 0 && !s.Start.After(out[n-1].End) {
			last := &out[n-1]
			if s.End.After(last.End) {
				last.End = s.End
			}
			last.creates++
			continue
		}
		out = append(out, episode{s, 1})
	}
	return out
}

// episodesString sums up the slow episodes on one line: how many there
// were, how many had no disk stall to blame, and the largest of those.
func episodesString(eps []SlowEpisode, probed bool) string {
	var unexplained []SlowEpisode
	for _, e := range eps {
		if !probed || !e.DiskStall {
			unexplained = append(unexplained, e)
		}
	}
	s := fmt.Sprintf("%d", len(eps))
	if probed {
		s += fmt.Sprintf(", %d with no disk stall (%d creates)", len(unexplained), sumCreates(unexplained))
	}
	slices.SortFunc(unexplained, func(a, b SlowEpisode) int { return b.Creates - a.Creates })
	var big []string
	for _, e := range unexplained[:min(len(unexplained), 5)] {
		big = append(big, fmt.Sprintf("%d at %.1fs for %.0f ms", e.Creates, e.At, e.Seconds*1000))
	}
	if len(big) > 0 {
		s += "; largest: " + strings.Join(big, ", ")
	}
	return s
}

func sumCreates(eps []SlowEpisode) int {
	n := 0
	for _, e := range eps {
		n += e.Creates
	}
	return n
}
