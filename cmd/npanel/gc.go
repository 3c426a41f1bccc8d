package main

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// serverGCPercent is the server's GOGC unless $GOGC says otherwise. Most
// of what the server allocates lives for one request or one etcd round
// trip; collecting at 5x the live heap instead of Go's 2x takes the
// collector's marking (which on two cores takes one of them for a third of
// the time at the default) mostly out of request latency under load.
const serverGCPercent = 400

// serverMemoryShare is the part of the memory available to the process
// that the collector treats as a soft limit unless $GOMEMLIMIT says
// otherwise: near it the collector runs as often as it must, so the
// larger GOGC never costs the process its memory.
const serverMemoryShare = 0.6

// serverHeapShare is the part of the memory available to the process that
// the heap may grow to between collections, unless $GOGC says otherwise
// (the JVM's default maximum heap is the same share). With the embedded
// etcd the live heap is mostly etcd's key index, and every collection
// marks all of it: at 100,000 accounts a mark phase takes a second, and
// requests arriving during one wait for the cores. Fewer collections are
// fewer such seconds. serverGCPercent still applies once the live heap
// outgrows the share, and below budgetMinLive.
const serverHeapShare = 0.25

// earlyRunway is how many times the live heap before its goal the server
// starts a collection itself, when the budget applies. Collections under
// the budget are half a minute apart, and each one held up a few hundred
// creates over 50 ms, the largest hold-ups the load test found besides the
// disk's. Started early by runtime.GC, with the goal still far, the same
// collections held up fewer: 245-622 creates per 100,000-account run over
// six runs (about 430 on average), against 670-703 in every earlier run.
// The mark phase got shorter (0.8 s against 1.1 s at the same heap), its
// assists did not, so the gain is around the mark rather than in the
// pacing; our reading is that runtime.GC sweeps the multi-gigabyte heap
// in its own goroutine at once instead of in the allocations that follow,
// but that is not proven.
const earlyRunway = 3

// tuneGC applies serverGCPercent, serverHeapShare and serverMemoryShare
// for as long as ctx lasts.
func tuneGC(ctx context.Context) {
	avail := availableMemory()
	if os.Getenv("GOMEMLIMIT") == "" && avail > 0 {
		debug.SetMemoryLimit(int64(float64(avail) * serverMemoryShare))
	}
	if os.Getenv("GOGC") != "" {
		return
	}
	debug.SetGCPercent(serverGCPercent)
	if avail > 0 {
		go keepHeapBudget(ctx, int64(float64(avail)*serverHeapShare), 100*time.Millisecond)
	}
}

// keepHeapBudget, looking every interval, sets GOGC after every collection
// so that the next one is due when the heap reaches budget, and starts that
// one itself once startEarly says so.
func keepHeapBudget(ctx context.Context, budget int64, interval time.Duration) {
	sample := []metrics.Sample{
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/gc/heap/goal:bytes"},
		{Name: "/gc/heap/allocs:bytes"},
	}
	var (
		seen     uint64
		live     int64
		allocsAt int64 // allocated bytes, all told, when seen was
		started  bool  // this cycle's successor, by runtime.GC
	)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		metrics.Read(sample)
		allocs := int64(sample[5].Value.Uint64())
		if cycles := sample[0].Value.Uint64(); cycles != seen {
			seen, started, allocsAt = cycles, false, allocs
			live = int64(sample[1].Value.Uint64())
			roots := int64(sample[2].Value.Uint64() + sample[3].Value.Uint64())
			debug.SetGCPercent(gcPercentFor(live, roots, budget))
		}
		// The heap as the runtime paces it: live plus what was allocated
		// since. The heap's objects would count the dead ones a collection
		// has not swept yet, and start another collection on its heels.
		goal, heap := int64(sample[4].Value.Uint64()), live+allocs-allocsAt
		if !started && startEarly(live, heap, goal) {
			started = true
			// runtime.GC returns once the cycle has marked and swept;
			// the server does not wait for that.
			go runtime.GC()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// startEarly says whether a heap of heap bytes, live of them live at the
// last collection, is within earlyRunway times live of its goal. Only where
// the budget lets the heap grow far: a live heap of at least budgetMinLive,
// and a goal at least twice the runway past it, so that starting early
// costs at most half the growth between collections.
func startEarly(live, heap, goal int64) bool {
	runway := earlyRunway * live
	return live >= budgetMinLive && goal-live >= 2*runway && heap >= goal-runway
}

// maxGCPercent bounds the GOGC keepHeapBudget sets: the runtime grows the
// heap by GOGC percent of the stacks too, which can grow after the GOGC is
// set (a thousand agents connecting).
const maxGCPercent = 2000

// budgetMinLive is the live heap below which the budget does not apply:
// marking a small heap takes milliseconds, so collecting it more often
// costs requests nothing, and an idle server keeps its small footprint.
const budgetMinLive = 64 << 20

// gcPercentFor is the GOGC that lets a heap whose live part is live grow
// to budget, between serverGCPercent and maxGCPercent (serverGCPercent
// below budgetMinLive). The runtime grows the heap by GOGC percent of the
// live heap plus the stacks and globals it scans (roots): with a thousand
// agents' streams the stacks alone are tens of megabytes.
func gcPercentFor(live, roots, budget int64) int {
	if live < budgetMinLive {
		return serverGCPercent
	}
	return int(min(max((budget-live)*100/(live+roots), serverGCPercent), maxGCPercent))
}

// availableMemory is the memory limit of the process's cgroup (v2), else
// the machine's RAM, in bytes; 0 when neither can be read.
func availableMemory() int64 {
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rel, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
				lim, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", rel, "memory.max"))
				if v, perr := strconv.ParseInt(strings.TrimSpace(string(lim)), 10, 64); err == nil && perr == nil && v > 0 {
					return v // "max" (no limit) does not parse
				}
			}
		}
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
			if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
