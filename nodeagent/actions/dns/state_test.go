package dns

import (
	"context"
	"testing"
	"time"
)

// Zone locks and applied state belong to a module: a second agent's module
// neither waits for the first's locks nor patches from its memory.
func TestModulesDoNotShareZoneState(t *testing.T) {
	a, b := NewModule(), NewModule()
	ca, cb := a.client("127.0.0.1:1", "k"), b.client("127.0.0.1:1", "k")
	if ca.st != a.client("127.0.0.1:1", "k").st {
		t.Fatal("one module's clients do not share its zone state")
	}

	unlock := ca.lockZone("example.com.")
	done := make(chan struct{})
	go func() {
		cb.lockZone("example.com.")()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("another module's zone lock blocked")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := a.zones.locks.Lock(ctx, "example.com."); err == nil {
		t.Fatal("the same module's zone lock was taken twice")
	}
	unlock()

	now := time.Now()
	remember(ca, "example.com.", &appliedState{serial: 7, at: now})
	if st := recall(ca, "example.com.", now); st == nil || st.serial != 7 {
		t.Fatalf("recall = %+v", st)
	}
	if st := recall(cb, "example.com.", now); st != nil {
		t.Fatalf("another module recalled %+v", st)
	}
	if newClient("127.0.0.1:1", "k", newTransport(), newZoneState()).st == ca.st {
		t.Fatal("a client of its own shares a module's state")
	}
}
