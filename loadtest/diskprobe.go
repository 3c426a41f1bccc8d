package main

import (
	"time"

	"github.com/npanel/npanel/internal/diskprobe"
)

// Every write the API acknowledges waits for etcd's WAL fsync, so the disk
// sets a floor under createAccount's latency that no code above it can
// lower. The disk probe measures that floor side by side with the run: a
// small durable write at a fixed interval, in the filesystem etcd writes to,
// from the first create to the last ACTIVE.
//
// probeBar is the createAccount p99 bar: the share of time a durable write
// would have waited longer than this is the share of creates the disk alone
// pushes over it.
const probeBar = 50 * time.Millisecond

// DiskFigures are the disk probe's (internal/diskprobe): a 4 KiB write
// plus fdatasync every diskprobe.Interval.
type DiskFigures struct {
	Measured   bool    `json:"measured"`
	Dir        string  `json:"dir"`
	IntervalMs float64 `json:"intervalMs"`
	Latency    Dist    `json:"writeSyncLatencyMs"`
	// SlowWrites took longer than probeBar. StalledSeconds sums how long
	// past probeBar each took: for that long, a durable write issued at
	// that moment would have waited more than probeBar (at least; a stall
	// that began up to one interval before its probe is not counted).
	// StalledShare is StalledSeconds over the probe's wall time, in percent.
	SlowWrites     int     `json:"writesOver50ms"`
	StalledSeconds float64 `json:"stalledSecondsOver50ms"`
	StalledShare   float64 `json:"stalledPercentOver50ms"`
	Seconds        float64 `json:"seconds"`
	// stalls are the slow writes, in time order.
	stalls []diskprobe.Span
}

// diskFiguresOf sums up a probe's result against probeBar.
func diskFiguresOf(res diskprobe.Result) DiskFigures {
	fig := DiskFigures{
		Dir:        res.Dir,
		IntervalMs: float64(diskprobe.Interval) / float64(time.Millisecond),
		Measured:   len(res.Writes) > 0,
		Seconds:    round3(res.Elapsed.Seconds()),
		stalls:     res.Over(probeBar),
	}
	lat := make([]time.Duration, len(res.Writes))
	for i, w := range res.Writes {
		lat[i] = w.Took()
	}
	fig.Latency = distOf(lat)
	fig.SlowWrites = len(fig.stalls)
	fig.StalledSeconds = round3(res.Stalled(probeBar).Seconds())
	if fig.Seconds > 0 {
		fig.StalledShare = round3(100 * fig.StalledSeconds / fig.Seconds)
	}
	return fig
}
