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

// TestDecodeAccountEventShared: followers of one loop share one decoding
// of each account event; a lone follower's events decode on their own.
func TestDecodeAccountEventShared(t *testing.T) {
	s := store.New(testenv.EtcdClient(t, testenv.StartEtcd(t)))
	ctx := context.Background()
	audit := store.NewAuditEvent("test", "", "x", "y", "ok")
	now := time.Now().UTC()
	if err := s.CreatePlan(ctx, store.Plan{Name: "p", DiskMB: 10, Domains: 1, PHPVersions: []string{"8.2"}, CreatedAt: now}, audit); err != nil {
		t.Fatal(err)
	}
	_, planRev, err := s.GetPlanRev(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	create := func(name string) {
		t.Helper()
		a := &store.Account{ID: store.NewAccountID(now), Username: name, Domain: name + ".example.com", Plan: "p", Owner: "admin",
			DiskMB: 10, Roles: []string{"web"}, Generation: 1, CreatedAt: now}
		if err := s.CreateAccount(ctx, a, planRev, store.Limits{}, audit); err != nil {
			t.Fatal(err)
		}
	}
	type seen struct {
		mu    sync.Mutex
		accts map[string]*store.Account
		heads map[string]store.AccountHead
	}
	followAccounts := func(full bool) (*seen, func()) {
		v := &seen{accts: map[string]*store.Account{}, heads: map[string]store.AccountHead{}}
		take := func(evs []store.Event) {
			v.mu.Lock()
			defer v.mu.Unlock()
			for _, ev := range evs {
				if full {
					a, err := store.DecodeAccountEvent(ev)
					if err != nil {
						t.Error(err)
						return
					}
					v.accts[a.Username] = a
				} else {
					h, err := store.DecodeAccountHeadEvent(ev)
					if err != nil {
						t.Error(err)
						return
					}
					v.heads[h.Username] = h
				}
			}
		}
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			s.Follow(fctx, store.KindAccounts, store.Follower{
				Replace: func(evs []store.Event, _ int64) { take(evs) },
				Apply:   func(b store.WatchBatch) { take(b.Events) },
			})
			close(done)
		}()
		return v, func() { cancel(); <-done }
	}
	get := func(v *seen, name string) (*store.Account, store.AccountHead, bool) {
		v.mu.Lock()
		defer v.mu.Unlock()
		a, ok1 := v.accts[name]
		h, ok2 := v.heads[name]
		return a, h, ok1 || ok2
	}

	lone, stopLone := followAccounts(true)
	create("solo")
	testenv.WaitFor(t, 5*time.Second, "solo followed", func() bool { _, _, ok := get(lone, "solo"); return ok })
	heads, stopHeads := followAccounts(false)
	full2, stopFull2 := followAccounts(true)
	defer stopHeads()
	defer stopFull2()
	// Joined once their own lists are in: "shared" then comes by the loop.
	testenv.WaitFor(t, 5*time.Second, "both joined", func() bool {
		_, _, ok1 := get(heads, "solo")
		_, _, ok2 := get(full2, "solo")
		return ok1 && ok2
	})
	create("shared")
	testenv.WaitFor(t, 5*time.Second, "shared followed", func() bool {
		_, _, ok1 := get(lone, "shared")
		_, _, ok2 := get(full2, "shared")
		_, _, ok3 := get(heads, "shared")
		return ok1 && ok2 && ok3
	})
	a1, _, _ := get(lone, "shared")
	a2, _, _ := get(full2, "shared")
	_, h, _ := get(heads, "shared")
	if a1 != a2 {
		t.Error("two followers of one loop decoded one event twice")
	}
	if h != a1.Head() {
		t.Errorf("head %+v, want %+v", h, a1.Head())
	}
	stopLone()
	stopFull2()
	create("alone")
	testenv.WaitFor(t, 5*time.Second, "alone followed", func() bool { _, _, ok := get(heads, "alone"); return ok })
}
