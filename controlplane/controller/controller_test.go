package controller_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/controlplane/controller"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

func newStore(t *testing.T) *store.Store {
	return store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
}

func addNode(t *testing.T, st *store.Store, name string) {
	t.Helper()
	err := st.CreateNode(context.Background(), store.Node{Name: name, CreatedAt: time.Now().UTC()},
		store.NewAuditEvent("test", "", "createNode", name, "ok"))
	if err != nil {
		t.Fatal(err)
	}
}

// synced records the keys a controller synced.
type synced struct {
	mu sync.Mutex
	n  map[string]int
}

func (s *synced) sync(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n == nil {
		s.n = map[string]int{}
	}
	s.n[key]++
	return nil
}

func (s *synced) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[key]
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// The informer lists, and a watch that starts from a compacted revision
// makes it list again: what was written meanwhile is synced, and it
// follows the kind from the new list on.
func TestInformerRelistsOnCompaction(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addNode(t, st, "n1")

	listing, gate := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	first.Store(true)
	var logs syncBuffer
	var s synced
	c := controller.New(controller.Options{
		Name:  "nodes",
		Store: st,
		Sources: []controller.Source{{Kind: store.KindNodes, Handle: func(ev store.Event) (string, bool, bool) {
			if first.CompareAndSwap(true, false) {
				close(listing)
				<-gate // hold the first list while the test writes and compacts
			}
			return ev.Name, true, !ev.Deleted
		}}},
		Sync: s.sync,
		Log:  slog.New(slog.NewTextHandler(&logs, nil)),
	})
	go c.Run(ctx)
	<-listing
	// Two writes: a compaction at the current revision keeps that one, so
	// a watch from just after the list would still be served.
	addNode(t, st, "n2")
	addNode(t, st, "n2b")
	if err := st.CompactAll(ctx); err != nil {
		t.Fatal(err)
	}
	close(gate)
	testenv.WaitFor(t, 10*time.Second, "n1 and n2 synced", func() bool { return s.count("n1") > 0 && s.count("n2") > 0 })
	if !strings.Contains(logs.String(), "compacted") {
		t.Fatalf("no relist after compaction; log:\n%s", logs.String())
	}
	addNode(t, st, "n3")
	testenv.WaitFor(t, 10*time.Second, "n3 synced from the watch", func() bool { return s.count("n3") > 0 })
}

func TestInformerResync(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addNode(t, st, "kept")
	addNode(t, st, "dropped")
	var s synced
	c := controller.New(controller.Options{
		Name: "resync", Store: st, Sync: s.sync,
		Sources: []controller.Source{{Kind: store.KindNodes, Resync: 20 * time.Millisecond,
			Handle: func(ev store.Event) (string, bool, bool) { return ev.Name, true, ev.Name == "kept" }}},
	})
	go c.Run(ctx)
	testenv.WaitFor(t, 10*time.Second, "kept resynced", func() bool { return s.count("kept") >= 3 })
	if n := s.count("dropped"); n != 1 {
		t.Fatalf("a key not kept was synced %d times, want once (its list)", n)
	}
}

func TestBatchRetriesWithMetrics(t *testing.T) {
	st := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range []string{"a", "b", "c"} {
		addNode(t, st, n)
	}
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	var batches [][]string
	var failed atomic.Bool
	c := controller.New(controller.Options{
		Name: "batch", Store: st, Metrics: controller.NewMetrics(reg),
		Sources:   []controller.Source{{Kind: store.KindNodes}},
		BatchSize: 2, Gather: 50 * time.Millisecond, BaseDelay: 10 * time.Millisecond,
		SyncBatch: func(_ context.Context, keys []string) error {
			mu.Lock()
			defer mu.Unlock()
			batches = append(batches, keys)
			if failed.CompareAndSwap(false, true) {
				return errors.New("first batch fails")
			}
			return nil
		},
	})
	go c.Run(ctx)
	testenv.WaitFor(t, 10*time.Second, "all keys synced after the retry", func() bool {
		mu.Lock()
		defer mu.Unlock()
		seen := map[string]int{}
		for _, b := range batches {
			if len(b) > 2 {
				t.Fatalf("batch of %d, limit 2", len(b))
			}
			for _, k := range b {
				seen[k]++
			}
		}
		return len(seen) == 3 && len(batches) >= 3
	})
	if n := counterValue(t, reg, "npanel_controller_retries_total"); n != 2 {
		t.Fatalf("retries %v, want 2 (the failed batch's keys)", n)
	}
}

// counterValue reads a counter of one series from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// Controllers run only while Lead runs; each term lists afresh.
func TestManagerLeaderGating(t *testing.T) {
	st := newStore(t)
	addNode(t, st, "n1")
	var s synced
	c := controller.New(controller.Options{Name: "gated", Store: st, Sync: s.sync,
		Sources: []controller.Source{{Kind: store.KindNodes}}})
	m := controller.NewManager()
	m.Add(c)

	c.Enqueue("before")
	if m.Leading() {
		t.Fatal("leading before Lead")
	}
	term := func() {
		// Counted before Lead starts: its first sync may come at once.
		want := s.count("n1") + 1
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Lead(ctx); close(done) }()
		testenv.WaitFor(t, 10*time.Second, "n1 synced this term", func() bool { return s.count("n1") >= want })
		if !m.Leading() {
			t.Fatal("not leading during Lead")
		}
		cancel() // leadership lost
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Lead did not return when leadership was lost")
		}
	}
	term()
	if m.Leading() {
		t.Fatal("leading after Lead returned")
	}
	c.Enqueue("between")
	term()
	if s.count("before") != 0 || s.count("between") != 0 {
		t.Fatal("a key queued while not leading was synced")
	}
}
