package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

func TestListWatchAndCompaction(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	audit := func(n string) store.AuditEvent { return store.NewAuditEvent("test", "", "node", n, "ok") }
	if err := s.CreateNode(ctx, store.Node{Name: "a"}, audit("a")); err != nil {
		t.Fatal(err)
	}
	evs, rev, err := s.List(ctx, store.KindNodes)
	if err != nil || len(evs) != 1 || evs[0].Name != "a" || !evs[0].Created || rev < evs[0].Rev {
		t.Fatalf("list: %+v rev %d err %v", evs, rev, err)
	}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := s.Watch(wctx, store.KindNodes, rev)
	if err := s.CreateNode(ctx, store.Node{Name: "b"}, audit("b")); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveNode(ctx, "b", audit("b")); err != nil {
		t.Fatal(err)
	}
	var got []store.Event
	for len(got) < 2 {
		select {
		case b := <-w:
			if b.Err != nil {
				t.Fatal(b.Err)
			}
			got = append(got, b.Events...)
		case <-time.After(10 * time.Second):
			t.Fatalf("watch gave %+v", got)
		}
	}
	if got[0].Name != "b" || got[0].Deleted || !got[0].Created || got[1].Name != "b" || !got[1].Deleted {
		t.Fatalf("events %+v", got)
	}

	// A watch from before a compaction says so, typed, and closes.
	if err := s.CompactAll(ctx); err != nil {
		t.Fatal(err)
	}
	b, ok := <-s.Watch(ctx, store.KindNodes, rev)
	if !ok || !errors.Is(b.Err, store.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %+v", b)
	}
}
