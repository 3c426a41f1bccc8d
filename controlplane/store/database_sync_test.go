package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/npanel/npanel/controlplane/store"
)

// A database sync too large for one etcd transaction (objects changed
// while no leader ran) makes progress in parts until every status is
// written, instead of failing and retrying forever.
func TestSyncDatabasesInParts(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	a, err := f.create("alice", "alice.example.com")
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	for batch := 0; batch < n; batch += 50 {
		err := f.s.ChangeDatabases(ctx, a.ID, "t", func(*store.DatabaseSet) (*store.DatabaseChange, error) {
			ch := &store.DatabaseChange{}
			for i := batch; i < batch+50; i++ {
				ch.Databases = append(ch.Databases, &store.Database{Name: fmt.Sprintf("alice_%03d", i), Engine: "mariadb", Generation: 1})
			}
			return ch, nil
		}, store.AuditEvent{})
		if err != nil {
			t.Fatal(err)
		}
	}
	rounds := 0
	err = f.s.SyncDatabases(ctx, a.ID, func(set *store.DatabaseSet, _ map[string]*store.Task) (*store.DatabaseSync, error) {
		rounds++
		ch := store.NewDatabaseSync()
		for name, d := range set.Databases {
			if d.Status.ObservedGeneration != d.Generation {
				ch.Databases[name] = &store.ObjectStatus{ObservedGeneration: d.Generation, State: store.DatabaseActive}
			}
		}
		return ch, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	set, err := f.s.GetDatabases(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range set.Databases {
		if d.Status.State != store.DatabaseActive {
			t.Fatalf("%s: status %+v after the sync", name, d.Status)
		}
	}
	if len(set.Databases) != n || rounds < 3 {
		t.Fatalf("%d databases in %d rounds", len(set.Databases), rounds)
	}
	t.Logf("%d statuses written in %d rounds", n, rounds)
}
