package observe

import (
	"context"
	"testing"

	"github.com/npanel/npanel/nodeagent/hoststat"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestNodeMetricsFixture(t *testing.T) {
	r, err := hoststat.NewAt("../../hoststat/testdata/proc")
	if err != nil {
		t.Fatal(err)
	}
	a := NewNodeMetrics(&agentpb.NodeMetricsAction{})
	a.host = r
	out, err := a.Apply(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := out.(*agentpb.NodeMetricsResult)
	// The fixture's counters do not move: no time passes between samples.
	if res.Cpus != 2 || res.Load1 != 0.5 || res.MemoryTotalBytes != 2048000*1024 || res.MemoryAvailableBytes != 1024000*1024 ||
		res.CpuBusyRatio != 0 || res.UptimeSeconds <= 0 {
		t.Fatalf("result = %v", res)
	}
}

func TestNodeMetricsHost(t *testing.T) {
	out, err := NewNodeMetrics(nil).Apply(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	res := out.(*agentpb.NodeMetricsResult)
	if res.Cpus == 0 || res.MemoryTotalBytes == 0 || len(res.Filesystems) == 0 || res.CpuBusyRatio < 0 || res.CpuBusyRatio > 1 {
		t.Fatalf("result = %v", res)
	}
}
