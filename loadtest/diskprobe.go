package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"
)

// Every write the API acknowledges waits for etcd's WAL fsync, so the disk
// sets a floor under createAccount's latency that no code above it can
// lower. The disk probe measures that floor side by side with the run: a
// small durable write at a fixed interval, in the filesystem etcd writes to,
// from the first create to the last ACTIVE.
const (
	probeInterval = 10 * time.Millisecond
	probeWrite    = 4 << 10
	probeFile     = 64 << 20 // preallocated and reused, like a WAL segment
	// probeBar is the createAccount p99 bar: the share of time a durable
	// write would have waited longer than this is the share of creates
	// the disk alone pushes over it.
	probeBar = 50 * time.Millisecond
)

// DiskFigures are the disk probe's: a probeWrite write plus fdatasync
// every probeInterval.
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
	stalls []span
}

// span is a stretch of wall time.
type span struct{ start, end time.Time }

// overlapping counts the spans in xs that share time with one of stalls,
// which must be in time order and not overlap each other (the probe's
// writes follow one another).
func overlapping(xs, stalls []span) int {
	n := 0
	for _, x := range xs {
		// The first stall still going on when x starts.
		i := sort.Search(len(stalls), func(i int) bool { return stalls[i].end.After(x.start) })
		if i < len(stalls) && stalls[i].start.Before(x.end) {
			n++
		}
	}
	return n
}

// diskProbe writes and syncs a file in dir until stop is called, which
// returns its figures. A probe that cannot create its file reports nothing
// measured and the reason.
func diskProbe(dir string) (stop func() (DiskFigures, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var (
		fig DiskFigures
		err error
	)
	go func() {
		defer close(done)
		fig, err = runDiskProbe(ctx, dir)
	}()
	return func() (DiskFigures, error) {
		cancel()
		<-done
		return fig, err
	}
}

func runDiskProbe(ctx context.Context, dir string) (DiskFigures, error) {
	fig := DiskFigures{Dir: dir, IntervalMs: float64(probeInterval) / float64(time.Millisecond)}
	f, err := os.CreateTemp(dir, "npanel-loadtest-diskprobe-")
	if err != nil {
		return fig, fmt.Errorf("disk probe: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	if err := preallocate(f, probeFile); err != nil {
		return fig, fmt.Errorf("disk probe: preallocate %s: %w", f.Name(), err)
	}
	buf := make([]byte, probeWrite)
	var lat []time.Duration
	var stalled time.Duration
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	begin := time.Now()
	for off := int64(0); ; off = (off + probeWrite) % probeFile {
		select {
		case <-ctx.Done():
			fig.Seconds = round3(time.Since(begin).Seconds())
			fig.Measured = len(lat) > 0
			fig.Latency = distOf(lat)
			fig.StalledSeconds = round3(stalled.Seconds())
			if fig.Seconds > 0 {
				fig.StalledShare = round3(100 * fig.StalledSeconds / fig.Seconds)
			}
			return fig, nil
		case <-tick.C:
		}
		t := time.Now()
		if _, err := f.WriteAt(buf, off); err != nil {
			return fig, fmt.Errorf("disk probe: write: %w", err)
		}
		if err := datasync(f); err != nil {
			return fig, fmt.Errorf("disk probe: sync: %w", err)
		}
		d := time.Since(t)
		lat = append(lat, d)
		if d > probeBar {
			fig.SlowWrites++
			stalled += d - probeBar
			fig.stalls = append(fig.stalls, span{t, t.Add(d)})
		}
	}
}
