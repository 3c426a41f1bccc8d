package graph

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// maxGrep bounds a log filter: the node scans with it, and it is audited.
const maxGrep = 200

// grepArg validates a log filter ("" when none).
func grepArg(grep *string) (string, error) {
	if grep == nil {
		return "", nil
	}
	g := *grep
	if len(g) > maxGrep {
		return "", &validate.Error{Field: "grep", Reason: fmt.Sprintf("at most %d bytes", maxGrep)}
	}
	if !utf8.ValidString(g) {
		return "", &validate.Error{Field: "grep", Reason: "not valid UTF-8"}
	}
	for _, c := range g {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return "", &validate.Error{Field: "grep", Reason: "control characters are not allowed"}
		}
	}
	return g, nil
}

// sinceArg turns since into the agent's bound (0: none); a time in the
// future is refused, as it could match nothing.
func sinceArg(since *time.Time) (int64, error) {
	if since == nil || since.IsZero() {
		return 0, nil
	}
	if since.After(time.Now().Add(time.Minute)) {
		return 0, &validate.Error{Field: "since", Reason: "in the future"}
	}
	if since.Unix() <= 0 {
		return 0, nil
	}
	return since.UnixNano(), nil
}

// linesArg is a number of log lines: default 100, 1..maxLogLines.
func linesArg(lines *int) (int, error) {
	n := 100
	if lines != nil {
		n = *lines
	}
	if n < 1 || n > maxLogLines {
		return 0, &validate.Error{Field: "lines", Reason: fmt.Sprintf("%d: give 1 to %d", n, maxLogLines)}
	}
	return n, nil
}

// Reading traffic and host figures.
const (
	observeWait = 15 * time.Second
	observeTTL  = time.Minute
)

// observeGates holds each Resolver's gate of traffic and node reads (one
// per account or node at a time, a few per user per second): each is a
// task through etcd and the node's queue. It lives beside the Resolver,
// gqlgen's root, whose zero value must serve.
var observeGates sync.Map // *Resolver -> *logReadGate

func (r *Resolver) startObserve(user, key string) (done func(), err error) {
	g, _ := observeGates.LoadOrStore(r, &logReadGate{what: "traffic or node read"})
	return g.(*logReadGate).start(user, key)
}

// nodeQuery runs one query task on node and waits for its answer.
func (r *Resolver) nodeQuery(ctx context.Context, p auth.Principal, node string, spec *agentpb.Task, action string) (*store.Task, error) {
	t, err := r.Store.EnqueueQueryTask(ctx, node, spec, action, p.Name, observeTTL)
	if err != nil {
		return nil, err
	}
	queued := t
	defer func() { _ = r.Store.ForgetTask(context.WithoutCancel(ctx), queued) }()
	t, err = r.Store.WaitTask(ctx, t.ID, observeWait)
	if err != nil || t == nil || (t.Status != store.TaskSucceeded && t.Status != store.TaskFailed) {
		return nil, errorf(CodeUnavailable, "node "+node+" did not answer within "+observeWait.String())
	}
	return t, nil
}

// trafficWindow is a period's start and bucket width, from now.
func trafficWindow(period model.TrafficPeriod, now time.Time) (time.Time, agentpb.TrafficStep, error) {
	now = now.UTC()
	switch period {
	case model.TrafficPeriodHour:
		return now.Add(-time.Hour).Truncate(time.Hour), agentpb.TrafficStep_TRAFFIC_STEP_HOUR, nil
	case model.TrafficPeriodDay:
		return now.Add(-24 * time.Hour).Truncate(time.Hour), agentpb.TrafficStep_TRAFFIC_STEP_HOUR, nil
	case model.TrafficPeriodWeek:
		return now.Add(-7 * 24 * time.Hour).Truncate(24 * time.Hour), agentpb.TrafficStep_TRAFFIC_STEP_DAY, nil
	case model.TrafficPeriodMonth:
		return now.Add(-30 * 24 * time.Hour).Truncate(24 * time.Hour), agentpb.TrafficStep_TRAFFIC_STEP_DAY, nil
	}
	return time.Time{}, 0, &validate.Error{Field: "period", Reason: "want HOUR, DAY, WEEK or MONTH"}
}

// trafficSum adds up the buckets of the domains: totals and one point per
// bucket start, oldest first.
type trafficSum struct {
	requests, bytes int64
	status          [5]int64
	seconds         float64
	series          []*model.TrafficPoint
}

func sumTraffic(res *agentpb.TrafficResult, domains []string) trafficSum {
	var s trafficSum
	points := map[int64]*model.TrafficPoint{}
	for _, d := range res.GetDomains() {
		if !slices.Contains(domains, d.GetDomain()) {
			continue // only what was asked for
		}
		for _, b := range d.GetBuckets() {
			s.requests += int64(b.GetRequests())
			s.bytes += int64(b.GetBytes())
			s.status[0] += int64(b.GetStatus_1Xx())
			s.status[1] += int64(b.GetStatus_2Xx())
			s.status[2] += int64(b.GetStatus_3Xx())
			s.status[3] += int64(b.GetStatus_4Xx())
			s.status[4] += int64(b.GetStatus_5Xx())
			s.seconds += b.GetRequestSecondsSum()
			p := points[b.GetStartUnix()]
			if p == nil {
				p = &model.TrafficPoint{Start: time.Unix(b.GetStartUnix(), 0).UTC()}
				points[b.GetStartUnix()] = p
			}
			p.Requests += int64(b.GetRequests())
			p.Bytes += int64(b.GetBytes())
		}
	}
	s.series = make([]*model.TrafficPoint, 0, len(points))
	for _, p := range points {
		s.series = append(s.series, p)
	}
	sort.Slice(s.series, func(i, j int) bool { return s.series[i].Start.Before(s.series[j].Start) })
	return s
}

// readTraffic asks the account's node for the counters of domains.
func (r *Resolver) readTraffic(ctx context.Context, p auth.Principal, a *store.Account, domains []string, period model.TrafficPeriod, action, target string) (trafficSum, error) {
	since, step, err := trafficWindow(period, time.Now())
	if err != nil {
		return trafficSum{}, err
	}
	if a.Node == "" {
		return trafficSum{}, fmt.Errorf("account %s is not on a node yet: %w", a.Username, store.ErrConflict)
	}
	if len(domains) == 0 {
		return trafficSum{}, nil // no site, no traffic: nothing to ask the node
	}
	done, err := r.startObserve(p.Name, a.ID)
	if err != nil {
		return trafficSum{}, err
	}
	defer done()
	spec := &agentpb.Task{Action: &agentpb.Task_ReadTraffic{ReadTraffic: &agentpb.ReadTrafficAction{
		Username: a.Username, Domains: domains, SinceUnixNano: since.UnixNano(), Step: step}}}
	t, err := r.nodeQuery(ctx, p, a.Node, spec, action)
	if err != nil {
		return trafficSum{}, err
	}
	res, err := t.TrafficResult()
	if err != nil {
		return trafficSum{}, errorf(CodeUnavailable, "node "+a.Node+": "+err.Error())
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), action, target, "ok")
	ev.Detail = map[string]string{"account": a.ID, "period": string(period)}
	if err := r.Store.AppendAudit(ctx, ev); err != nil {
		return trafficSum{}, err
	}
	return sumTraffic(res, domains), nil
}

// trafficDomains are the domains whose requests an account's log records:
// every site but the aliases, whose requests are logged with their target's.
func trafficDomains(a *store.Account) []string {
	var out []string
	for _, s := range a.AllSites() {
		if s.AliasOf == "" {
			out = append(out, s.Domain)
		}
	}
	return out
}

// serviceName validates the name of a daemon on a node.
func serviceName(name string) error {
	return validate.ObjectName("service", name)
}

func serviceUp(s store.ServiceStatus) bool { return s.State == "running" }

func scrapeTokenModel(t *store.ScrapeToken) *model.ScrapeToken {
	out := &model.ScrapeToken{ID: t.ID, Name: t.Name, CreatedAt: t.CreatedAt}
	for _, sc := range t.ScopeList() {
		out.Scopes = append(out.Scopes, model.ScrapeScope(strings.ToUpper(sc)))
	}
	return out
}

// scrapeScopes checks createScrapeToken's scopes and returns them as the
// store keeps them, in canonical order. Left out (nil), a token opens all
// three, as every token did before scopes; an empty list would open
// nothing and is refused, as is a scope given twice.
func scrapeScopes(in []model.ScrapeScope) ([]string, error) {
	if in == nil {
		return slices.Clone(store.ScrapeScopes), nil
	}
	if len(in) == 0 {
		return nil, &validate.Error{Field: "scopes", Reason: "give at least one of DISCOVERY, METRICS, ALERTS, or leave scopes out for all three"}
	}
	seen := make(map[string]bool, len(in))
	for _, sc := range in {
		v := strings.ToLower(string(sc))
		if !sc.IsValid() {
			return nil, &validate.Error{Field: "scopes", Reason: fmt.Sprintf("unknown scope %q (one of DISCOVERY, METRICS, ALERTS)", string(sc))}
		}
		if seen[v] {
			return nil, &validate.Error{Field: "scopes", Reason: fmt.Sprintf("scope %s given twice", sc)}
		}
		seen[v] = true
	}
	out := make([]string, 0, len(seen))
	for _, sc := range store.ScrapeScopes {
		if seen[sc] {
			out = append(out, sc)
		}
	}
	return out, nil
}

func nodeMetricsModel(node string, m *agentpb.NodeMetricsResult, svcs *store.NodeServices) *model.NodeMetrics {
	out := &model.NodeMetrics{
		Node: node, CPUBusy: m.GetCpuBusyRatio(), Cpus: int(m.GetCpus()),
		Load1: m.GetLoad1(), Load5: m.GetLoad5(), Load15: m.GetLoad15(),
		MemoryTotalBytes: int64(m.GetMemoryTotalBytes()), MemoryAvailableBytes: int64(m.GetMemoryAvailableBytes()),
		UptimeSeconds: m.GetUptimeSeconds(),
		Filesystems:   []*model.FilesystemUsage{}, Services: []*model.ServiceSummary{},
	}
	for _, f := range m.GetFilesystems() {
		out.Filesystems = append(out.Filesystems, &model.FilesystemUsage{
			Mountpoint: f.GetMountpoint(), Device: f.GetDevice(), Fstype: f.GetFstype(),
			SizeBytes: int64(f.GetSizeBytes()), AvailBytes: int64(f.GetAvailBytes()),
			Files: int64(f.GetFiles()), FilesFree: int64(f.GetFilesFree())})
	}
	for _, s := range svcs.Services {
		sm := serviceModel(s)
		out.Services = append(out.Services, &model.ServiceSummary{Name: s.Name, State: sm.State,
			Version: sm.Version, Restarts: s.Restarts, Up: serviceUp(s)})
	}
	return out
}
