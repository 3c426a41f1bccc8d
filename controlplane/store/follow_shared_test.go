package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// recorder is a follower that keeps what it was given.
type recorder struct {
	mu       sync.Mutex
	listed   []string // names of the last Replace
	applied  []string // names of Apply events since, "-name" for deletions
	returned bool     // Follow returned: nothing may come after
	late     bool     // a callback came after Follow returned
}

func (r *recorder) follower() store.Follower {
	return store.Follower{
		Replace: func(evs []store.Event, _ int64) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.late = r.late || r.returned
			r.listed, r.applied = nil, nil
			for _, ev := range evs {
				r.listed = append(r.listed, ev.Name)
			}
		},
		Apply: func(b store.WatchBatch) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.late = r.late || r.returned
			for _, ev := range b.Events {
				n := ev.Name
				if ev.Deleted {
					n = "-" + n
				}
				r.applied = append(r.applied, n)
			}
		},
	}
}

func (r *recorder) state() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("listed %v applied %v", r.listed, r.applied)
}

// follow runs Follow until the returned stop is called; stop returns once
// Follow has.
func follow(s *store.Store, r *recorder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.Follow(ctx, store.KindNodes, r.follower())
		r.mu.Lock()
		r.returned = true
		r.mu.Unlock()
		close(done)
	}()
	return func() { cancel(); <-done }
}

// TestFollowShared: followers of one kind share one loop, and each sees
// every change once: one that joins a running loop gets a list of its own
// and only the changes after it; one that left gets nothing more.
func TestFollowShared(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	node := func(n string) {
		t.Helper()
		if err := s.CreateNode(ctx, store.Node{Name: n}, store.NewAuditEvent("test", "", "node", n, "ok")); err != nil {
			t.Fatal(err)
		}
	}
	want := func(r *recorder, what, state string) {
		t.Helper()
		testenv.WaitFor(t, 10*time.Second, what+": "+state, func() bool { return r.state() == state })
	}

	node("a")
	first := &recorder{}
	stopFirst := follow(s, first)
	want(first, "first follower's list", "listed [a] applied []")
	node("b")
	want(first, "first follower sees b", "listed [a] applied [b]")

	// A burst of writes while a second follower joins: whatever the join
	// lands between, it sees each node once, in its list or after it.
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 20 {
			node(fmt.Sprintf("c%02d", i))
		}
	})
	second := &recorder{}
	stopSecond := follow(s, second)
	wg.Wait()
	node("d")
	want(first, "first follower sees the burst and d", "listed [a] applied [b c00 c01 c02 c03 c04 c05 c06 c07 c08 c09 c10 c11 c12 c13 c14 c15 c16 c17 c18 c19 d]")
	testenv.WaitFor(t, 10*time.Second, "second follower sees d", func() bool {
		second.mu.Lock()
		defer second.mu.Unlock()
		return slices.Contains(second.applied, "d")
	})
	second.mu.Lock()
	seen := append(slices.Clone(second.listed), second.applied...)
	second.mu.Unlock()
	slices.Sort(seen)
	if fmt.Sprint(seen) != "[a b c00 c01 c02 c03 c04 c05 c06 c07 c08 c09 c10 c11 c12 c13 c14 c15 c16 c17 c18 c19 d]" {
		t.Fatalf("the joining follower saw %v (%s)", seen, second.state())
	}

	// The first leaves; the loop goes on for the second.
	stopFirst()
	if err := s.RemoveNode(ctx, "a", store.NewAuditEvent("test", "", "node", "a", "ok")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "second follower sees a removed", func() bool {
		second.mu.Lock()
		defer second.mu.Unlock()
		return slices.Contains(second.applied, "-a")
	})
	stopSecond()
	if first.late || second.late {
		t.Fatal("a follower was called after Follow returned")
	}

	// With every follower gone the loop ended; a new one starts another.
	third := &recorder{}
	defer follow(s, third)()
	want(third, "a follower after all left", "listed [b c00 c01 c02 c03 c04 c05 c06 c07 c08 c09 c10 c11 c12 c13 c14 c15 c16 c17 c18 c19 d] applied []")
	node("e")
	want(third, "it follows", "listed [b c00 c01 c02 c03 c04 c05 c06 c07 c08 c09 c10 c11 c12 c13 c14 c15 c16 c17 c18 c19 d] applied [e]")
}
