package controller_test

import (
	"context"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/controller"
)

// TestTicks: a tick's key is synced when a run starts, without any event,
// and again each period.
func TestTicks(t *testing.T) {
	var s synced
	c := controller.New(controller.Options{Name: "tick", Sync: s.sync,
		Ticks: []controller.Tick{{Key: "all", Every: 20 * time.Millisecond}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for s.count("all") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("synced %d times in 5s, want at least 3", s.count("all"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
