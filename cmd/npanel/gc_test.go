package main

import (
	"context"
	"runtime"
	"runtime/debug"
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
