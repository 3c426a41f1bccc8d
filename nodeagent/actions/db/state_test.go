package db

import (
	"context"
	"testing"
	"time"
)

// Engines and object locks belong to a module: a second agent's module
// neither waits for the first's locks nor uses its connection pools.
func TestModulesDoNotShareState(t *testing.T) {
	a, b := NewModule(), NewModule()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	unlock, err := a.locks.Lock(ctx, "mariadb/alice_app")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	other, err := b.locks.Lock(ctx, "mariadb/alice_app")
	if err != nil {
		t.Fatalf("another module's lock blocked: %v", err)
	}
	other()
	a.engines["k"] = &mariadb{}
	if len(b.engines) != 0 {
		t.Fatal("two modules share their engines")
	}
	if act := a.NewDropDatabase(nil); act.m != a {
		t.Fatal("action not built by its module")
	}
	if act := a.NewListDatabases(nil); act.m != a {
		t.Fatal("action not built by its module")
	}
}
