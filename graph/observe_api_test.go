package graph_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// observeAgent answers the observability query tasks queued for the fake
// nodes as an agent would, and remembers what it was asked.
type observeAgent struct {
	mu    sync.Mutex
	asked []*agentpb.Task
}

func (o *observeAgent) tasks() []*agentpb.Task {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*agentpb.Task(nil), o.asked...)
}

func (o *observeAgent) run(ctx context.Context, st *store.Store, nodes ...string) {
	hour := time.Now().UTC().Truncate(time.Hour).Unix()
	for ctx.Err() == nil {
		for _, n := range nodes {
			ts, _, err := st.PendingTasks(ctx, n)
			if err != nil {
				continue
			}
			for _, t := range ts {
				r := &agentpb.TaskResult{TaskId: t.GetId(), Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED}
				switch a := t.GetAction().(type) {
				case *agentpb.Task_ReadDomainLog:
					r.Result = &agentpb.TaskResult_DomainLog{DomainLog: &agentpb.DomainLogResult{Lines: []string{"GET / " + a.ReadDomainLog.GetDomain()}}}
				case *agentpb.Task_ReadServiceLog:
					r.Result = &agentpb.TaskResult_ServiceLog{ServiceLog: &agentpb.ServiceLogResult{Lines: []string{a.ReadServiceLog.GetService() + " started"}}}
				case *agentpb.Task_ReadTraffic:
					res := &agentpb.TrafficResult{}
					// An extra domain nobody asked for must not be counted.
					for _, d := range append(a.ReadTraffic.GetDomains(), "intruder.example.org") {
						res.Domains = append(res.Domains, &agentpb.DomainTraffic{Domain: d, Buckets: []*agentpb.TrafficBucket{
							{StartUnix: hour - 3600, Requests: 10, Bytes: 1000, Status_2Xx: 8, Status_5Xx: 2, RequestSecondsSum: 1},
							{StartUnix: hour, Requests: 30, Bytes: 3000, Status_2Xx: 30, RequestSecondsSum: 3},
						}})
					}
					r.Result = &agentpb.TaskResult_Traffic{Traffic: res}
				case *agentpb.Task_NodeMetrics:
					r.Result = &agentpb.TaskResult_NodeMetrics{NodeMetrics: &agentpb.NodeMetricsResult{CpuBusyRatio: 0.25, Cpus: 4, Load1: 1.5,
						MemoryTotalBytes: 8 << 30, MemoryAvailableBytes: 2 << 30, UptimeSeconds: 3600,
						Filesystems: []*agentpb.FilesystemUsage{{Mountpoint: "/", Device: "/dev/sda1", Fstype: "ext4", SizeBytes: 100, AvailBytes: 40}}}}
				default:
					continue
				}
				o.mu.Lock()
				o.asked = append(o.asked, t)
				o.mu.Unlock()
				_, _ = st.CompleteTask(ctx, n, r, store.NewAuditEvent("node:"+n, "", "task", "", ""))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func startObserveAgent(t *testing.T, tn *certTenants) *observeAgent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o := &observeAgent{}
	done := make(chan struct{})
	go func() { defer close(done); o.run(ctx, tn.s.Store(), "n-eu", "n-us") }()
	t.Cleanup(func() { cancel(); <-done })
	return o
}

// TestObserveRBAC is the access matrix of the observability queries and
// the scrape token operations: admin, the account's reseller, another
// reseller, the account's user, another account's user and an anonymous
// caller.
func TestObserveRBAC(t *testing.T) {
	tn := setupCertTenants(t)
	ctx := context.Background()
	startObserveAgent(t, tn)
	node, _ := otherNode(t, tn)
	if err := tn.s.Store().PutServices(ctx, store.NodeServices{Node: node, ReportedAt: time.Now(),
		Services: []store.ServiceStatus{{Name: "nginx", State: "running", Version: "1.26", Restarts: 2}, {Name: "pdns", State: "failed"}}}); err != nil {
		t.Fatal(err)
	}
	anon := client.New(tn.s.URL(), "")
	who := []struct {
		name string
		c    *client.Client
	}{{"admin", tn.admin}, {"resa", tn.resA}, {"resb", tn.resB}, {"alphauser", tn.userA}, {"bravouser", tn.userB}, {"anonymous", anon}}
	// alpha1's logs and traffic: its owner, its reseller and admins.
	tenant := map[string]string{"admin": "", "resa": "", "resb": "NOT_FOUND", "alphauser": "", "bravouser": "NOT_FOUND", "anonymous": "UNAUTHENTICATED"}
	adminOnly := map[string]string{"admin": "", "resa": "FORBIDDEN", "resb": "FORBIDDEN", "alphauser": "FORBIDDEN", "bravouser": "FORBIDDEN", "anonymous": "UNAUTHENTICATED"}

	for _, w := range who {
		lines, err := w.c.DomainLogs(ctx, tn.a1Domain, "ACCESS", client.LogQuery{Lines: 5, Grep: "GET", Since: time.Now().Add(-time.Hour)})
		want(t, w.name+" domainLogs", err, tenant[w.name])
		if err == nil && (len(lines) != 1 || !strings.Contains(lines[0], tn.a1Domain)) {
			t.Errorf("%s domainLogs: %q", w.name, lines)
		}
		bw, err := w.c.Bandwidth(ctx, "alpha1", "DAY")
		want(t, w.name+" bandwidth", err, tenant[w.name])
		if err == nil && (bw.Requests != 40 || bw.Bytes != 4000 || len(bw.Series) != 2 || bw.Series[0].Requests != 10 || bw.Account != "alpha1") {
			t.Errorf("%s bandwidth: %+v", w.name, bw)
		}
		rq, err := w.c.Requests(ctx, tn.a1Domain, "WEEK")
		want(t, w.name+" requests", err, tenant[w.name])
		if err == nil && (rq.Requests != 40 || rq.Status.S2xx != 38 || rq.Status.S5xx != 2 || rq.MeanSeconds != 0.1) {
			t.Errorf("%s requests: %+v", w.name, rq)
		}
		_, err = w.c.ServiceLogs(ctx, node, "nginx", client.LogQuery{})
		want(t, w.name+" serviceLogs", err, adminOnly[w.name])
		nm, err := w.c.NodeMetrics(ctx, node)
		want(t, w.name+" nodeMetrics", err, adminOnly[w.name])
		if err == nil && (nm.CPUs != 4 || nm.CPUBusy != 0.25 || len(nm.Filesystems) != 1 || len(nm.Services) != 2 || !nm.Services[0].Up || nm.Services[1].Up) {
			t.Errorf("%s nodeMetrics: %+v", w.name, nm)
		}
		ss, err := w.c.ServiceStatus(ctx, node, "nginx")
		want(t, w.name+" serviceStatus", err, adminOnly[w.name])
		if err == nil && (ss == nil || !ss.Up || ss.Service.Restarts != 2 || ss.Node != node) {
			t.Errorf("%s serviceStatus: %+v", w.name, ss)
		}
		_, err = w.c.ScrapeTokens(ctx)
		want(t, w.name+" scrapeTokens", err, adminOnly[w.name])
		_, tok, err := w.c.CreateScrapeToken(ctx, "prom-"+w.name)
		want(t, w.name+" createScrapeToken", err, adminOnly[w.name])
		if err == nil {
			if err := tn.admin.DeleteScrapeToken(ctx, tok.ID); err != nil {
				t.Errorf("delete: %v", err)
			}
		}
		_, tok, err = w.c.CreateScrapeToken(ctx, "scoped-"+w.name, "METRICS")
		want(t, w.name+" createScrapeToken with scopes", err, adminOnly[w.name])
		if err == nil {
			if err := tn.admin.DeleteScrapeToken(ctx, tok.ID); err != nil {
				t.Errorf("delete: %v", err)
			}
		}
	}
	// The refused createScrapeToken calls wrote no token.
	if ts, err := tn.admin.ScrapeTokens(ctx); err != nil || len(ts) != 0 {
		t.Errorf("scrape tokens after the refused creations: %+v %v, want none", ts, err)
	}
	// bravo1's, read by alpha1's user or reseller: NOT_FOUND, as for
	// nothing at all.
	_, err := tn.userA.Requests(ctx, tn.b1Domain, "DAY")
	want(t, "alphauser requests of bravo1", err, "NOT_FOUND")
	_, err = tn.resA.Bandwidth(ctx, "bravo1", "DAY")
	want(t, "resa bandwidth of bravo1", err, "NOT_FOUND")
	_, err = tn.admin.Bandwidth(ctx, "nosuchaccount", "DAY")
	want(t, "bandwidth of a missing account", err, "NOT_FOUND")

	// deleteScrapeToken: admins only, a missing one NOT_FOUND.
	_, tok, err := tn.admin.CreateScrapeToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range who[1:] {
		want(t, w.name+" deleteScrapeToken", w.c.DeleteScrapeToken(ctx, tok.ID), adminOnly[w.name])
	}
	want(t, "admin deleteScrapeToken", tn.admin.DeleteScrapeToken(ctx, tok.ID), "")
	want(t, "deleteScrapeToken twice", tn.admin.DeleteScrapeToken(ctx, tok.ID), "NOT_FOUND")

	for _, action := range []string{"createScrapeToken", "deleteScrapeToken", "domainLogs", "bandwidth", "requests", "serviceLogs"} {
		evs, _, err := tn.admin.AuditEvents(ctx, client.AuditFilter{Action: action}, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for _, e := range evs {
			ok = ok || e.Result == "ok"
		}
		if !ok {
			t.Errorf("no successful %s audited", action)
		}
	}
}

// TestObserveArguments: the filters reach the node as given; bad ones
// are INVALID_INPUT and a daemon the node does not report NOT_FOUND.
func TestObserveArguments(t *testing.T) {
	tn := setupCertTenants(t)
	ctx := context.Background()
	o := startObserveAgent(t, tn)
	node, _ := otherNode(t, tn)
	since := time.Now().Add(-10 * time.Minute).Truncate(time.Second)
	if _, err := tn.admin.DomainLogs(ctx, tn.a1Domain, "ERROR", client.LogQuery{Lines: 7, Since: since, Grep: "timeout"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.admin.ServiceLogs(ctx, node, "agent", client.LogQuery{Lines: 3, Grep: "connected"}); err != nil {
		t.Fatal(err)
	}
	var sawDomain, sawService bool
	for _, task := range o.tasks() {
		if a := task.GetReadDomainLog(); a != nil {
			sawDomain = a.GetGrep() == "timeout" && a.GetSinceUnixNano() == since.UnixNano() && a.GetLines() == 7 && a.GetUsername() == "alpha1"
		}
		if a := task.GetReadServiceLog(); a != nil {
			sawService = a.GetService() == "agent" && a.GetGrep() == "connected" && a.GetLines() == 3 && a.GetSinceUnixNano() == 0
		}
	}
	if !sawDomain || !sawService {
		t.Errorf("tasks asked: %v", o.tasks())
	}
	for name, q := range map[string]client.LogQuery{
		"long grep":      {Grep: strings.Repeat("x", 201)},
		"control grep":   {Grep: "a\nb"},
		"future since":   {Since: time.Now().Add(time.Hour)},
		"too many lines": {Lines: 1001},
	} {
		_, err := tn.admin.DomainLogs(ctx, tn.a1Domain, "ACCESS", q)
		want(t, "domainLogs "+name, err, "INVALID_INPUT")
		_, err = tn.admin.ServiceLogs(ctx, node, "nginx", q)
		want(t, "serviceLogs "+name, err, "INVALID_INPUT")
	}
	_, err := tn.admin.Bandwidth(ctx, "alpha1", "YEAR")
	if err == nil {
		t.Error("bandwidth over a YEAR accepted")
	}
	_, err = tn.admin.ServiceStatus(ctx, node, "nosuchd")
	want(t, "serviceStatus of an unknown daemon", err, "NOT_FOUND")
	_, err = tn.admin.ServiceStatus(ctx, "n-nowhere", "nginx")
	want(t, "serviceStatus of an unknown node", err, "NOT_FOUND")
	_, err = tn.admin.NodeMetrics(ctx, "n-nowhere")
	want(t, "nodeMetrics of an unknown node", err, "NOT_FOUND")
	_, err = tn.admin.ServiceLogs(ctx, "n-nowhere", "nginx", client.LogQuery{})
	want(t, "serviceLogs of an unknown node", err, "NOT_FOUND")

	// The week's traffic is asked in daily buckets from a day boundary.
	if _, err := tn.admin.Requests(ctx, tn.a1Domain, "MONTH"); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Second, "a read_traffic task", func() bool {
		for _, task := range o.tasks() {
			if a := task.GetReadTraffic(); a != nil && a.GetStep() == agentpb.TrafficStep_TRAFFIC_STEP_DAY {
				since := time.Unix(0, a.GetSinceUnixNano()).UTC()
				return since.Equal(since.Truncate(24*time.Hour)) && time.Since(since) > 30*24*time.Hour && len(a.GetDomains()) == 1
			}
		}
		return false
	})
}

// createScrapeToken's scopes: left out, all three; given, in canonical
// order whatever order they came in; an empty list, a repeat or an
// unknown scope refused with nothing stored; the audit event names them.
func TestScrapeTokenScopes(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := context.Background()
	_, all, err := s.Admin.CreateScrapeToken(ctx, "all")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(all.Scopes, []string{"DISCOVERY", "METRICS", "ALERTS"}) {
		t.Errorf("default scopes: %v", all.Scopes)
	}
	_, two, err := s.Admin.CreateScrapeToken(ctx, "two", "ALERTS", "METRICS")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(two.Scopes, []string{"METRICS", "ALERTS"}) {
		t.Errorf("scopes METRICS,ALERTS: %v", two.Scopes)
	}
	for _, tc := range []struct {
		name   string
		scopes []string
		code   string
	}{
		{"empty", []string{}, "INVALID_INPUT"},
		{"twice", []string{"METRICS", "DISCOVERY", "METRICS"}, "INVALID_INPUT"},
		{"unknown", []string{"ADMIN"}, "GRAPHQL_VALIDATION_FAILED"},
	} {
		_, _, err := s.Admin.CreateScrapeToken(ctx, "bad-"+strings.ReplaceAll(tc.name, " ", "-"), tc.scopes...)
		want(t, tc.name+" scopes", err, tc.code)
		if err != nil && tc.code == "INVALID_INPUT" && !strings.Contains(err.Error(), "scopes") {
			t.Errorf("%s scopes: %v does not name the field", tc.name, err)
		}
	}
	ts, err := s.Admin.ScrapeTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 {
		t.Fatalf("tokens after the refused creations: %+v, want all and two", ts)
	}
	for _, tk := range ts {
		if want := map[string][]string{"all": all.Scopes, "two": two.Scopes}[tk.Name]; !slices.Equal(tk.Scopes, want) {
			t.Errorf("listed %s: %v, want %v", tk.Name, tk.Scopes, want)
		}
	}
	evs, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{Action: "createScrapeToken"}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var okScopes []string
	refused := 0
	for _, e := range evs {
		if e.Result == "ok" {
			okScopes = append(okScopes, e.Detail["scopes"])
		} else {
			refused++
		}
	}
	slices.Sort(okScopes)
	if !slices.Equal(okScopes, []string{"discovery,metrics,alerts", "metrics,alerts"}) || refused < 2 {
		t.Errorf("audit: scopes of the created %q, %d refusals", okScopes, refused)
	}
}
