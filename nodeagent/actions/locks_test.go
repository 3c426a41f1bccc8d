package actions

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestKeyedLocks(t *testing.T) {
	ctx := context.Background()
	var locks KeyedLocks
	unlockA, err := locks.Lock(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Another name is independent.
	unlockB, err := locks.Lock(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	unlockB()
	// The same name waits, and gives up with its context.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := locks.Lock(short, "a"); err == nil || !strings.Contains(err.Error(), "another action") {
		t.Fatalf("second lock = %v", err)
	}
	got := make(chan struct{})
	go func() {
		u, err := locks.Lock(ctx, "a")
		if err == nil {
			u()
		}
		close(got)
	}()
	unlockA()
	<-got
	locks.mu.Lock()
	n := len(locks.m)
	locks.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d lock entries left", n)
	}
}
