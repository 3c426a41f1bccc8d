package observe

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/hoststat"
	"github.com/npanel/npanel/protos/agentpb"
)

// NodeMetricsName is the action name in metrics and logs.
const NodeMetricsName = "node_metrics"

// busySample is the window cpu_busy_ratio is measured over: long enough to
// mean something on an idle host, short enough for an interactive query.
const busySample = 500 * time.Millisecond

// NodeMetrics reads the host's summary for nodeMetrics (GraphQL) and
// `npanel ctl node top`. The daemons' states are not in it: the server
// has them from the node's ServiceReports.
type NodeMetrics struct {
	// host is the proc tree read; nil is the host's /proc (tests set it).
	host *hoststat.Reader
}

var _ actions.Action = (*NodeMetrics)(nil)

// NewNodeMetrics builds the action; the request carries nothing.
func NewNodeMetrics(*agentpb.NodeMetricsAction) *NodeMetrics { return &NodeMetrics{} }

// Name implements actions.Action.
func (a *NodeMetrics) Name() string { return NodeMetricsName }

// Validate implements actions.Action.
func (a *NodeMetrics) Validate() error { return nil }

// Apply implements actions.Action.
func (a *NodeMetrics) Apply(ctx context.Context, _ *actions.Env) (proto.Message, error) {
	r := a.host
	if r == nil {
		var err error
		if r, err = hoststat.New(); err != nil {
			return nil, err
		}
	}
	cpu, err := r.CPU()
	if err != nil {
		return nil, err
	}
	load, err := r.Load()
	if err != nil {
		return nil, err
	}
	mem, err := r.Memory()
	if err != nil {
		return nil, err
	}
	fss, err := r.Filesystems()
	if err != nil {
		return nil, err
	}
	busy, err := r.BusyRatio(ctx, busySample)
	if err != nil {
		return nil, fmt.Errorf("cpu busy ratio: %w", err)
	}
	res := &agentpb.NodeMetricsResult{
		CpuBusyRatio:         busy,
		Cpus:                 uint32(cpu.CPUs),
		Load1:                load.Load1,
		Load5:                load.Load5,
		Load15:               load.Load15,
		MemoryTotalBytes:     mem.Total,
		MemoryAvailableBytes: mem.Available,
		UptimeSeconds:        int64(time.Since(cpu.BootTime).Seconds()),
	}
	for _, f := range fss {
		res.Filesystems = append(res.Filesystems, &agentpb.FilesystemUsage{
			Mountpoint: f.MountPoint, Device: f.Device, Fstype: f.FSType,
			SizeBytes: f.SizeBytes, AvailBytes: f.AvailBytes, Files: f.Files, FilesFree: f.FilesFree,
		})
	}
	return res, nil
}
