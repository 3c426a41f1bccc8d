// Package diskprobe measures the disk under a benchmark or load test while
// it runs. Every write nPanel acknowledges waits for an fsync (etcd's WAL,
// the agent's journal, PowerDNS's database), so a disk that stalls puts a
// floor under the latency no code above it can lower. The probe makes a
// small durable write at a fixed interval, in the filesystem under test,
// so a slow request can be laid beside the disk's own stalls.
package diskprobe

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"
)

const (
	// Interval is how often the probe writes. A write slower than that
	// delays the next: the probe never has two writes in flight.
	Interval  = 10 * time.Millisecond
	writeSize = 4 << 10
	fileSize  = 64 << 20 // preallocated and reused, like a WAL segment
)

// Span is a stretch of wall time.
type Span struct{ Start, End time.Time }

// Took is the span's length.
func (s Span) Took() time.Duration { return s.End.Sub(s.Start) }

// Result is what a probe measured: each write plus fdatasync, in time order.
type Result struct {
	Dir string
	// Elapsed runs from the first tick (once the probe's file is
	// preallocated) to Stop.
	Elapsed time.Duration
	Writes  []Span
}

// Over returns the writes that took longer than bar, in time order: the
// disk's stalls, as seen by a durable write against that bar.
func (r Result) Over(bar time.Duration) []Span {
	var out []Span
	for _, w := range r.Writes {
		if w.Took() > bar {
			out = append(out, w)
		}
	}
	return out
}

// Stalled sums how long past bar each write took: for at least that long,
// a durable write issued at that moment would have waited more than bar (a
// stall that began up to one Interval before its write is not counted).
func (r Result) Stalled(bar time.Duration) time.Duration {
	var d time.Duration
	for _, w := range r.Writes {
		if t := w.Took(); t > bar {
			d += t - bar
		}
	}
	return d
}

// StalledPercent is Stalled(bar) over Elapsed, in percent.
func (r Result) StalledPercent(bar time.Duration) float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return 100 * r.Stalled(bar).Seconds() / r.Elapsed.Seconds()
}

// Overlapping counts the spans in xs that share time with one of stalls,
// which must be in time order and not overlap each other (Over's result).
func Overlapping(xs, stalls []Span) int {
	n := 0
	for _, x := range xs {
		// The first stall still going on when x starts.
		i := sort.Search(len(stalls), func(i int) bool { return stalls[i].End.After(x.Start) })
		if i < len(stalls) && stalls[i].Start.Before(x.End) {
			n++
		}
	}
	return n
}

// Probe is a running probe.
type Probe struct {
	cancel context.CancelFunc
	done   chan struct{}
	res    Result
	err    error
}

// Start writes and syncs a file in dir every Interval until Stop.
func Start(dir string) *Probe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Probe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.res, p.err = run(ctx, dir)
	}()
	return p
}

// Stop ends the probe and returns what it measured. A probe that could not
// create or write its file returns the reason, with the writes it made.
func (p *Probe) Stop() (Result, error) {
	p.cancel()
	<-p.done
	return p.res, p.err
}

func run(ctx context.Context, dir string) (Result, error) {
	res := Result{Dir: dir}
	f, err := os.CreateTemp(dir, "npanel-diskprobe-")
	if err != nil {
		return res, fmt.Errorf("disk probe: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	if err := preallocate(f, fileSize); err != nil {
		return res, fmt.Errorf("disk probe: preallocate %s: %w", f.Name(), err)
	}
	buf := make([]byte, writeSize)
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	begin := time.Now()
	for off := int64(0); ; off = (off + writeSize) % fileSize {
		select {
		case <-ctx.Done():
			res.Elapsed = time.Since(begin)
			return res, nil
		case <-tick.C:
		}
		t := time.Now()
		if _, err := f.WriteAt(buf, off); err != nil {
			return res, fmt.Errorf("disk probe: write: %w", err)
		}
		if err := datasync(f); err != nil {
			return res, fmt.Errorf("disk probe: sync: %w", err)
		}
		res.Writes = append(res.Writes, Span{t, time.Now()})
	}
}
