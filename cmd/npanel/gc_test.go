package main

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestAvailableMemory(t *testing.T) {
	// Every Linux machine this runs on has /proc/meminfo; a cgroup limit,
	// when set, is at most the machine's memory.
	if m := availableMemory(); m < 64<<20 {
		t.Fatalf("available memory %d bytes", m)
	}
}

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live, roots, budget int64
		want                int
	}{
		{live: 400 << 20, budget: 6 << 30, want: 1436},                  // grow to the budget
		{live: 400 << 20, roots: 400 << 20, budget: 6 << 30, want: 718}, // stacks count towards the growth
		{live: 2 << 20, budget: 6 << 30, want: serverGCPercent},         // small heap: marking it is quick
		{live: 100 << 20, budget: 60 << 30, want: maxGCPercent},         // bounded
		{live: 1 << 30, budget: 6 << 30, want: 500},                     // the budget is 6x live
		{live: 2 << 30, budget: 6 << 30, want: serverGCPercent},         // live outgrew the share
		{live: 8 << 30, budget: 6 << 30, want: serverGCPercent},         // beyond the budget: never below the floor
	} {
		if got := gcPercentFor(tc.live, tc.roots, tc.budget); got != tc.want {
			t.Errorf("gcPercentFor(%d, %d, %d) = %d, want %d", tc.live, tc.roots, tc.budget, got, tc.want)
		}
	}
}

// currentGCPercent reads GOGC without changing it.
func currentGCPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestKeepHeapBudgetFollowsCollections(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	ballast := make([]byte, budgetMinLive+(8<<20)) // a live heap the budget applies to
	defer runtime.KeepAlive(ballast)
	for _, tc := range []struct {
		name   string
		budget int64
		check  func(int) bool
	}{
		{"roomy budget", 1 << 40, func(p int) bool { return p == maxGCPercent }},
		{"budget below the live heap", 1, func(p int) bool { return p == serverGCPercent }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { keepHeapBudget(ctx, tc.budget, time.Millisecond); close(done) }()
			defer func() { cancel(); <-done }()
			deadline := time.Now().Add(10 * time.Second)
			for p := currentGCPercent(); !tc.check(p); p = currentGCPercent() {
				if time.Now().After(deadline) {
					t.Fatalf("GOGC still %d", p)
				}
				runtime.GC()
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

func TestStartEarly(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		live, heap, goal int64
		want             bool
	}{
		{live: 400 * mb, heap: 4800 * mb, goal: 6000 * mb, want: true},  // 3x live before the goal
		{live: 400 * mb, heap: 4700 * mb, goal: 6000 * mb, want: false}, // not yet
		{live: 400 * mb, heap: 5000 * mb, goal: 6000 * mb, want: true},  // past the point
		{live: 32 * mb, heap: 590 * mb, goal: 600 * mb, want: false},    // small heap: the runtime's own pacing
		{live: 400 * mb, heap: 1900 * mb, goal: 2000 * mb, want: false}, // GOGC 400: early would double the collections
		{live: 400 * mb, heap: 1600 * mb, goal: 2800 * mb, want: true},  // the goal just twice the runway past live
		{live: 400 * mb, heap: 2600 * mb, goal: 2700 * mb, want: false}, // just under
	} {
		if got := startEarly(tc.live, tc.heap, tc.goal); got != tc.want {
			t.Errorf("startEarly(live %d, heap %d, goal %d MB) = %v, want %v", tc.live/mb, tc.heap/mb, tc.goal/mb, got, tc.want)
		}
	}
}

// gcSink keeps the compiler from dropping the garbage the test allocates.
var gcSink []byte

// TestKeepHeapBudgetStartsEarly grows the heap towards a goal the budget
// sets far out, and wants the collections started by keepHeapBudget (forced
// ones), each before the runtime's own trigger.
func TestKeepHeapBudgetStartsEarly(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	ballast := make([]byte, budgetMinLive+(8<<20))
	defer runtime.KeepAlive(ballast)
	runtime.GC()
	sample := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/cycles/forced:gc-cycles"},
	}
	metrics.Read(sample)
	live, roots := int64(sample[0].Value.Uint64()), int64(sample[1].Value.Uint64()+sample[2].Value.Uint64())
	// GOGC 700: the goal is 8x live, the start 5x, the runtime's own
	// trigger no earlier than live plus 70% of the growth, 5.9x.
	budget := live + 7*(live+roots)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { keepHeapBudget(ctx, budget, time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	// About 700: a collection between the reads above and keepHeapBudget's
	// may have moved the live heap a little.
	for p := currentGCPercent(); p < 690 || p > 710; p = currentGCPercent() {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d, want about 700", p)
		}
		time.Sleep(time.Millisecond)
	}
	// Two in a row: after its collection, keepHeapBudget starts the next,
	// once the heap has grown again (some 4x live: a start at 5x).
	metrics.Read(sample)
	natural := func() uint64 { return sample[3].Value.Uint64() - sample[4].Value.Uint64() }
	before, forced := natural(), sample[4].Value.Uint64()
	seen, grown := forced, int64(0) // bytes allocated since the last forced collection
	for time.Now().Before(deadline) {
		gcSink = make([]byte, 1<<20)
		grown += 1 << 20
		// Slow enough that keepHeapBudget, looking every millisecond, sees
		// the heap in the 65 MB between its start and the runtime's even
		// when the test shares busy cores.
		time.Sleep(2 * time.Millisecond)
		metrics.Read(sample)
		if n := sample[4].Value.Uint64(); n > seen {
			if grown < 3*live {
				t.Fatalf("collection %d forced after %d MB of growth, want at least 3x the %d MB live", n-forced, grown>>20, live>>20)
			}
			seen, grown = n, 0
		}
		switch {
		case natural() > before:
			t.Fatalf("the runtime started a collection before keepHeapBudget did (%d forced before it)", sample[4].Value.Uint64()-forced)
		case sample[4].Value.Uint64() >= forced+2:
			return
		}
	}
	t.Fatalf("%d collections started within 20s, want 2", sample[4].Value.Uint64()-forced)
}
