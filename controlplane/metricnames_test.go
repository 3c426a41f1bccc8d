package controlplane_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/internal/metricnames"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/nodeagent/actions/allowlist"
	"github.com/npanel/npanel/nodeagent/logship"
	"github.com/npanel/npanel/nodeagent/logtail"
)

// deploy/prometheus/metrics.txt, which the dashboards and alert rules are
// checked against, names exactly the families the code registers: on the
// server, in etcd, and in an agent that runs every module with /metrics,
// the tail engine and the Loki shipper on.
func TestMetricNamesListed(t *testing.T) {
	listed, err := metricnames.ReadFile("../deploy/prometheus/metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	tok, err := s.Admin.CreateJoinToken(ctx, "names-1", "127.0.0.1", []string{"WEB"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := allowlist.Modules([]string{"web", "dns", "db", "mail"})
	if err != nil {
		t.Fatal(err)
	}
	agentReg := prometheus.NewRegistry()
	// New registers every collector; the agent never runs.
	if _, err := nodeagent.New(nodeagent.Config{Servers: []string{s.Config.AgentListen}, JoinToken: tok.Token,
		DataDir: t.TempDir(), Modules: mods, MetricsListen: "127.0.0.1:0", Registry: agentReg,
		AllowTestUsernames: true, Logger: testenv.Logger()}); err != nil {
		t.Fatal(err)
	}
	eng, err := logtail.New(logtail.Config{DataDir: t.TempDir(), Registry: agentReg, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ship, err := logship.New(logship.Config{URL: "http://127.0.0.1:9/loki/api/v1/push", Node: "names-1",
		DataDir: t.TempDir(), Registry: agentReg, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ship.Close() })

	etcdReg, ok := prometheus.DefaultRegisterer.(*prometheus.Registry)
	if !ok {
		t.Fatal("the default registerer is not a registry")
	}
	regs := map[string]*prometheus.Registry{"agent": agentReg, "server": s.RegistryForTest(), "etcd": etcdReg}
	for _, name := range listed {
		var in []string
		for which, reg := range regs {
			if registered(t, reg, name) {
				in = append(in, which)
			}
		}
		if len(in) == 0 {
			t.Errorf("metrics.txt lists %s, which no registry has", name)
		}
	}
	// And every npanel_ family with a sample is listed.
	for which, reg := range regs {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("gather %s: %v", which, err)
		}
		for _, mf := range mfs {
			if n := mf.GetName(); strings.HasPrefix(n, "npanel_") && !slices.Contains(listed, n) &&
				!strings.HasPrefix(n, "npanel_grpc_") {
				t.Errorf("the %s exports %s, which metrics.txt does not list", which, n)
			}
		}
	}
}

// registered tells whether reg holds a family called name: registering a
// probe of that name collides with it (other help or labels, or the same
// descriptor) exactly when it is there.
func registered(t *testing.T, reg *prometheus.Registry, name string) bool {
	t.Helper()
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "probe", ConstLabels: prometheus.Labels{"probe_only": "1"}})
	err := reg.Register(probe)
	if err == nil {
		reg.Unregister(probe)
		return false
	}
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) || strings.Contains(err.Error(), "same fully-qualified name") {
		return true
	}
	t.Fatalf("probe %s: %v", name, err)
	return false
}
