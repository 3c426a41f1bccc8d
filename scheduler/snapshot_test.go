package scheduler

import (
	"errors"
	"slices"
	"testing"
)

func readyNode(name string, accounts int, diskMB int64) Node {
	return Node{
		Name:     name,
		Ready:    true,
		Roles:    []string{"web", "dns", "mail", "db"},
		Labels:   map[string]string{"zone": "eu-1"},
		Capacity: Resources{Accounts: accounts, DiskMB: diskMB},
	}
}

func TestAllocateRelease(t *testing.T) {
	a := readyNode("a", 10, 1000)
	a.Allocated = Resources{Accounts: 2, DiskMB: 200}
	s := NewSnapshot([]Node{a, readyNode("b", 10, 1000), readyNode("c", 10, 1000)}, Spread)

	steps := []struct {
		name    string
		op      func(string, Resources) error
		node    string
		r       Resources
		wantErr error // nil, a sentinel, or errAny
	}{
		{"allocate", s.Allocate, "c", Resources{1, 100}, nil},
		{"allocate", s.Allocate, "a", Resources{1, 100}, nil},
		{"allocate to the brim", s.Allocate, "a", Resources{7, 700}, nil},
		{"allocate one account too many", s.Allocate, "a", Resources{1, 0}, ErrOverCommit},
		{"allocate one MB too many", s.Allocate, "a", Resources{0, 1}, ErrOverCommit},
		{"allocate nothing on a full node", s.Allocate, "a", Resources{}, nil},
		{"allocate on an unknown node", s.Allocate, "x", Resources{1, 1}, ErrUnknownNode},
		{"allocate negative", s.Allocate, "b", Resources{-1, 0}, errAny},
		{"release", s.Release, "a", Resources{5, 500}, nil},
		{"release more than allocated", s.Release, "c", Resources{2, 0}, ErrOverRelease},
		{"release more disk than allocated", s.Release, "c", Resources{0, 101}, ErrOverRelease},
		{"release on an unknown node", s.Release, "x", Resources{1, 1}, ErrUnknownNode},
		{"release negative", s.Release, "c", Resources{0, -5}, errAny},
		{"release nothing", s.Release, "b", Resources{}, nil},
	}
	for _, st := range steps {
		err := st.op(st.node, st.r)
		switch {
		case st.wantErr == nil && err != nil:
			t.Errorf("%s: %v", st.name, err)
		case st.wantErr != nil && err == nil:
			t.Errorf("%s: accepted", st.name)
		case st.wantErr != nil && st.wantErr != errAny && !errors.Is(err, st.wantErr):
			t.Errorf("%s: %v, want %v", st.name, err, st.wantErr)
		}
	}
	for name, want := range map[string]Resources{"a": {5, 500}, "b": {0, 0}, "c": {1, 100}} {
		n, ok := s.Node(name)
		if !ok || n.Allocated != want {
			t.Errorf("node %s allocated %+v, want %+v", name, n.Allocated, want)
		}
	}
	if _, ok := s.Node("x"); ok {
		t.Error("Node found an unknown node")
	}
	// b was only ever given zero changes and refused ones: no write to commit.
	if got := s.Touched(); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("Touched = %v, want [a c]", got)
	}
	s.ResetTouched()
	if got := s.Touched(); len(got) != 0 {
		t.Errorf("after ResetTouched, Touched = %v", got)
	}
	if err := s.Allocate("b", Resources{1, 1}); err != nil {
		t.Fatal(err)
	}
	if got := s.Touched(); !slices.Equal(got, []string{"b"}) {
		t.Errorf("Touched = %v, want [b]", got)
	}
}

var errAny = errors.New("any error")

func TestTouchedSortedAndAllocateReleaseRoundTrip(t *testing.T) {
	s := NewSnapshot([]Node{readyNode("z", 5, 50), readyNode("m", 5, 50), readyNode("a", 5, 50)}, Spread)
	for _, n := range []string{"z", "a", "m", "z"} {
		if err := s.Allocate(n, Resources{1, 10}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Release("m", Resources{1, 10}); err != nil {
		t.Fatal(err)
	}
	// m is back where it started, but the commit must still compare its
	// revision: the batch read it, and a concurrent writer may have changed it.
	if got := s.Touched(); !slices.Equal(got, []string{"a", "m", "z"}) {
		t.Errorf("Touched = %v, want [a m z]", got)
	}
}

func TestSnapshotIsolatedFromCaller(t *testing.T) {
	nodes := []Node{readyNode("a", 10, 1000)}
	s := NewSnapshot(nodes, Spread)
	sel := mustParse(t, "zone=eu-1")
	nodes[0].Labels["zone"] = "us-1"
	nodes[0].Roles[0] = "backup"
	nodes[0].Ready = false
	if _, err := s.Place(Request{Roles: []string{"web"}, Need: Resources{1, 1}, Selector: sel}); err != nil {
		t.Errorf("changing the caller's nodes changed the snapshot: %v", err)
	}
	n, _ := s.Node("a")
	n.Labels["zone"] = "us-1"
	n.Roles[0] = "backup"
	if got, _ := s.Node("a"); got.Labels["zone"] != "eu-1" || got.Roles[0] != "web" {
		t.Errorf("changing Node's result changed the snapshot: %+v", got)
	}
}

func TestDuplicateNodeNameLaterWins(t *testing.T) {
	first := readyNode("a", 10, 1000)
	second := readyNode("a", 3, 300)
	s := NewSnapshot([]Node{first, readyNode("b", 1, 1), second}, Spread)
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
	if n, _ := s.Node("a"); n.Capacity != second.Capacity {
		t.Errorf("node a = %+v, want the later entry", n)
	}
}

func TestStrategyText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Strategy
	}{{"spread", Spread}, {"binpack", BinPack}, {"bin-pack", BinPack}} {
		got, err := ParseStrategy(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseStrategy(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "Spread", "pack", "binpack "} {
		if _, err := ParseStrategy(bad); err == nil {
			t.Errorf("ParseStrategy(%q) accepted", bad)
		}
	}
	for _, s := range []Strategy{Spread, BinPack} {
		b, err := s.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Strategy
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("%v does not round-trip through text: %v, %v", s, back, err)
		}
	}
	if _, err := Strategy(7).MarshalText(); err == nil || Strategy(7).String() != "Strategy(7)" {
		t.Error("an unknown strategy must not marshal")
	}
}
