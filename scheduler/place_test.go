package scheduler

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"testing"
)

// with returns a copy of n changed by f, for building table rows.
func with(n Node, f func(*Node)) Node {
	n.Roles = slices.Clone(n.Roles)
	n.Labels = maps.Clone(n.Labels)
	f(&n)
	return n
}

func TestFilters(t *testing.T) {
	ok := readyNode("ok", 10, 1000)
	web := []string{"web"}
	one := Resources{Accounts: 1, DiskMB: 100}
	for _, tc := range []struct {
		name     string
		node     Node // placed next to nothing: either it fits or the request fails
		req      Request
		filtered map[string]int // nil: the node fits
	}{
		{"fits", ok, Request{Roles: web, Need: one}, nil},
		{"not ready", with(ok, func(n *Node) { n.Ready = false }), Request{Roles: web, Need: one},
			map[string]int{"not ready": 1}},
		{"draining", with(ok, func(n *Node) { n.Draining = true }), Request{Roles: web, Need: one},
			map[string]int{"draining": 1}},
		{"not ready and draining counts as not ready", with(ok, func(n *Node) { n.Ready, n.Draining = false, true }),
			Request{Roles: web, Need: one}, map[string]int{"not ready": 1}},
		{"missing role", ok, Request{Roles: []string{"web", "backup"}, Need: one},
			map[string]int{"missing role backup": 1}},
		{"first missing role in request order", ok, Request{Roles: []string{"backup", "web", "ftp"}, Need: one},
			map[string]int{"missing role backup": 1}},
		{"role no node has", ok, Request{Roles: []string{"ftp"}, Need: one},
			map[string]int{"missing role ftp": 1}},
		{"no roles needed", with(ok, func(n *Node) { n.Roles = nil }), Request{Need: one}, nil},
		{"all roles present", ok, Request{Roles: []string{"db", "mail", "dns", "web"}, Need: one}, nil},
		{"selector", ok, Request{Roles: web, Need: one, Selector: mustParse(t, "zone=us-1")},
			map[string]int{"selector": 1}},
		{"selector matches", ok, Request{Roles: web, Need: one, Selector: mustParse(t, "zone in (eu-1),!legacy")}, nil},
		{"accounts exhausted", with(ok, func(n *Node) { n.Allocated = Resources{10, 0} }), Request{Roles: web, Need: one},
			map[string]int{"accounts exhausted": 1}},
		{"disk exhausted", with(ok, func(n *Node) { n.Allocated = Resources{0, 901} }), Request{Roles: web, Need: one},
			map[string]int{"disk exhausted": 1}},
		{"exact fit", with(ok, func(n *Node) { n.Allocated = Resources{9, 900} }), Request{Roles: web, Need: one}, nil},
		{"both exhausted counts as accounts", with(ok, func(n *Node) { n.Allocated = Resources{10, 1000} }),
			Request{Roles: web, Need: one}, map[string]int{"accounts exhausted": 1}},
		{"zero account capacity is none", with(ok, func(n *Node) { n.Capacity.Accounts = 0 }), Request{Roles: web, Need: one},
			map[string]int{"accounts exhausted": 1}},
		{"zero disk capacity is none", with(ok, func(n *Node) { n.Capacity.DiskMB = 0 }), Request{Roles: web, Need: one},
			map[string]int{"disk exhausted": 1}},
		{"zero disk capacity fits a zero-disk need", with(ok, func(n *Node) { n.Capacity.DiskMB = 0 }),
			Request{Roles: web, Need: Resources{Accounts: 1}}, nil},
		{"over-committed by the operator", with(ok, func(n *Node) { n.Capacity = Resources{5, 1000}; n.Allocated = Resources{8, 0} }),
			Request{Roles: web, Need: Resources{DiskMB: 1}}, map[string]int{"accounts exhausted": 1}},
		{"filter order: not ready before role, selector, capacity",
			with(ok, func(n *Node) { n.Ready = false; n.Roles = nil; n.Allocated = Resources{10, 1000} }),
			Request{Roles: web, Need: one, Selector: mustParse(t, "zone=x")}, map[string]int{"not ready": 1}},
		{"filter order: role before selector", with(ok, func(n *Node) { n.Roles = nil }),
			Request{Roles: web, Need: one, Selector: mustParse(t, "zone=x")}, map[string]int{"missing role web": 1}},
		{"filter order: selector before capacity", with(ok, func(n *Node) { n.Allocated = Resources{10, 0} }),
			Request{Roles: web, Need: one, Selector: mustParse(t, "zone=x")}, map[string]int{"selector": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Account = "alice"
			for _, strategy := range []Strategy{Spread, BinPack} {
				p, err := NewSnapshot([]Node{tc.node}, strategy).Place(tc.req)
				if tc.filtered == nil {
					if err != nil || p.Node != tc.node.Name {
						t.Errorf("%v: got %+v, %v; want node %s", strategy, p, err, tc.node.Name)
					}
					continue
				}
				var pe *PlacementError
				if !errors.As(err, &pe) {
					t.Fatalf("%v: got %+v, %v; want a PlacementError", strategy, p, err)
				}
				if pe.Considered != 1 || !maps.Equal(pe.Filtered, tc.filtered) {
					t.Errorf("%v: considered %d, filtered %v; want 1, %v", strategy, pe.Considered, pe.Filtered, tc.filtered)
				}
			}
		})
	}
}

func TestStrategies(t *testing.T) {
	nodes := []Node{
		with(readyNode("empty", 100, 100_000), func(n *Node) {}),
		with(readyNode("half", 100, 100_000), func(n *Node) { n.Allocated = Resources{50, 50_000} }),
		with(readyNode("almost-full", 100, 100_000), func(n *Node) { n.Allocated = Resources{98, 90_000} }),
		with(readyNode("small-empty", 10, 10_000), func(n *Node) {}),
	}
	for _, tc := range []struct {
		name      string
		strategy  Strategy
		need      Resources
		wantNode  string
		wantScore float64
	}{
		// small-empty ends at (9/10 + 9900/10000)/2 = 0.945 after placement;
		// empty at (99/100 + 99900/100000)/2 = 0.9945.
		{"spread picks the emptiest fraction", Spread, Resources{1, 100}, "empty", 0.9945},
		// almost-full: 1 - (1/100 + 9900/100000)/2 = 0.9455.
		{"binpack picks the fullest that fits", BinPack, Resources{1, 100}, "almost-full", 0.9455},
		// The need counts: 3 accounts do not fit almost-full.
		{"binpack skips what the need overflows", BinPack, Resources{3, 100}, "half", 1 - (47.0/100+49_900.0/100_000)/2},
		// After placement: small-empty (0 + 0.5)/2 = 0.25 vs empty (0.9 + 0.95)/2:
		// spread judges the node as it will be, not as it is.
		{"spread scores after placement", Spread, Resources{10, 5000}, "empty", (0.9 + 0.95) / 2},
		{"binpack scores after placement", BinPack, Resources{10, 5000}, "small-empty", 1 - (0+0.5)/2},
	} {
		s := NewSnapshot(nodes, tc.strategy)
		p, err := s.Place(Request{Account: "a", Roles: []string{"web"}, Need: tc.need})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if p.Node != tc.wantNode || abs(p.Score-tc.wantScore) > 1e-9 {
			t.Errorf("%s: got %+v, want %s with score %v", tc.name, p, tc.wantNode, tc.wantScore)
		}
	}
}

func abs(f float64) float64 { return max(f, -f) }

func TestBatchSpreadsAndPacks(t *testing.T) {
	var nodes []Node
	for i := range 4 {
		nodes = append(nodes, readyNode(fmt.Sprintf("n%d", i), 10, 10_000))
	}
	for _, tc := range []struct {
		strategy Strategy
		want     []int // accounts per node after 8 placements, sorted
	}{
		{Spread, []int{2, 2, 2, 2}},
		{BinPack, []int{0, 0, 0, 8}},
	} {
		s := NewSnapshot(nodes, tc.strategy)
		for i := range 8 {
			r := Request{Account: fmt.Sprintf("acct%d", i), Roles: []string{"web"}, Need: Resources{1, 100}}
			p, err := s.Place(r)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Allocate(p.Node, r.Need); err != nil {
				t.Fatal(err)
			}
		}
		var got []int
		for _, n := range nodes {
			m, _ := s.Node(n.Name)
			got = append(got, m.Allocated.Accounts)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: accounts per node %v, want %v", tc.strategy, got, tc.want)
		}
	}
}

func TestTieBreakScattersEqualNodes(t *testing.T) {
	var nodes []Node
	for i := range 10 {
		nodes = append(nodes, readyNode(fmt.Sprintf("n%d", i), 100, 100_000))
	}
	for _, strategy := range []Strategy{Spread, BinPack} {
		s := NewSnapshot(nodes, strategy)
		chosen := map[string]int{}
		for i := range 200 {
			p, err := s.Place(Request{Account: fmt.Sprintf("user%d", i), Need: Resources{1, 1}})
			if err != nil {
				t.Fatal(err)
			}
			chosen[p.Node]++
		}
		// Name order would put all 200 on n0; a fair hash gives each node
		// about 20. Every node chosen at least 5 times is a loose bound
		// that a real tie-break passes with overwhelming probability.
		for _, n := range nodes {
			if chosen[n.Name] < 5 {
				t.Errorf("%v: equal nodes chosen %v: not scattered", strategy, chosen)
				break
			}
		}
	}
}

func TestPin(t *testing.T) {
	nodes := []Node{
		readyNode("a", 10, 1000),
		with(readyNode("b", 10, 1000), func(n *Node) { n.Labels["zone"] = "us-1"; n.Allocated = Resources{9, 900} }),
		with(readyNode("drain", 10, 1000), func(n *Node) { n.Draining = true }),
		with(readyNode("down", 10, 1000), func(n *Node) { n.Ready = false }),
		with(readyNode("dns-only", 10, 1000), func(n *Node) { n.Roles = []string{"dns"} }),
		with(readyNode("full", 10, 1000), func(n *Node) { n.Allocated = Resources{10, 0} }),
	}
	euOnly := mustParse(t, "zone=eu-1")
	for _, tc := range []struct {
		pin      string
		wantNode string
		reason   string // what the pinned node was filtered for
	}{
		// The selector is ignored: b is the fullest and outside the pool,
		// yet an administrator's pin puts the account there.
		{pin: "b", wantNode: "b"},
		{pin: "a", wantNode: "a"},
		{pin: "drain", reason: "draining"},
		{pin: "down", reason: "not ready"},
		{pin: "dns-only", reason: "missing role web"},
		{pin: "full", reason: "accounts exhausted"},
		{pin: "gone"},
	} {
		for _, strategy := range []Strategy{Spread, BinPack} {
			s := NewSnapshot(nodes, strategy)
			p, err := s.Place(Request{Account: "alice", Roles: []string{"web"}, Need: Resources{1, 100}, Selector: euOnly, Node: tc.pin})
			if tc.wantNode != "" {
				if err != nil || p.Node != tc.wantNode {
					t.Errorf("pin %s (%v): got %+v, %v", tc.pin, strategy, p, err)
				}
				continue
			}
			var pe *PlacementError
			if !errors.As(err, &pe) {
				t.Fatalf("pin %s (%v): got %+v, %v; want a PlacementError", tc.pin, strategy, p, err)
			}
			want := map[string]int{"not the pinned node": len(nodes) - 1, tc.reason: 1}
			if tc.reason == "" {
				want = map[string]int{"not the pinned node": len(nodes)}
			}
			if pe.Considered != len(nodes) || pe.Pinned != tc.pin || !maps.Equal(pe.Filtered, want) {
				t.Errorf("pin %s (%v): %+v, want filtered %v", tc.pin, strategy, pe, want)
			}
		}
	}
}

func TestPlacementErrorMessage(t *testing.T) {
	var nodes []Node
	add := func(count int, f func(*Node)) {
		for range count {
			nodes = append(nodes, with(readyNode(fmt.Sprintf("n%02d", len(nodes)), 10, 1000), f))
		}
	}
	add(3, func(n *Node) { n.Ready = false })
	add(2, func(n *Node) { n.Allocated.DiskMB = 950 })
	s := NewSnapshot(nodes, Spread)
	req := Request{Account: "alice", Roles: []string{"web"}, Need: Resources{1, 100}}
	_, err := s.Place(req)
	if got, want := fmt.Sprint(err), `no node fits account "alice" (5 nodes considered): 3 nodes not READY; 2 nodes without the disk the plan needs`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	// Every reason at once, listed in filter order and, among roles, by name.
	add(1, func(n *Node) { n.Draining = true })
	add(2, func(n *Node) { n.Roles = []string{"mail"} })
	add(1, func(n *Node) { n.Roles = []string{"web"} })
	add(4, func(n *Node) { n.Labels = nil })
	add(1, func(n *Node) { n.Allocated.Accounts = 10 })
	s = NewSnapshot(nodes, BinPack)
	req.Roles = []string{"web", "mail"}
	req.Selector = mustParse(t, "zone")
	_, err = s.Place(req)
	want := `no node fits account "alice" (14 nodes considered): 3 nodes not READY; 1 node draining; 1 node without the mail role; 2 nodes without the web role; 4 nodes outside the reseller's node selector zone; 1 node with no account slots left; 2 nodes without the disk the plan needs`
	for range 20 { // map iteration order must not leak into the message
		if _, err2 := s.Place(req); fmt.Sprint(err2) != want || fmt.Sprint(err) != want {
			t.Fatalf("got  %s\nwant %s", err2, want)
		}
	}

	req.Node = "n05"
	_, err = s.Place(req)
	if got, want := fmt.Sprint(err), `no node fits account "alice" pinned to "n05" (14 nodes considered): 1 node draining`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	req.Node = "nope"
	_, err = s.Place(req)
	if got, want := fmt.Sprint(err), `no node fits account "alice" pinned to "nope" (14 nodes considered): no node is named "nope"`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	// The selector's misses show the labels the pool has, most common first.
	dev := NewSnapshot([]Node{
		with(readyNode("a", 10, 1000), func(n *Node) { n.Labels = map[string]string{"env": "dev"} }),
		with(readyNode("b", 10, 1000), func(n *Node) { n.Labels = map[string]string{"env": "dev"} }),
		with(readyNode("c", 10, 1000), func(n *Node) { n.Labels = map[string]string{"zone": "us-1", "env": "prod"} }),
	}, Spread)
	_, err = dev.Place(Request{Account: "carol", Need: Resources{1, 1}, Selector: mustParse(t, "zone=eu-1")})
	if got, want := fmt.Sprint(err), `no node fits account "carol" (3 nodes considered): 3 nodes outside the reseller's node selector zone=eu-1`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if pe := (*PlacementError)(nil); !errors.As(err, &pe) {
		t.Fatal(err)
	} else if got, want := pe.Detail(), `no node fits account "carol" (3 nodes considered): 3 nodes outside the reseller's node selector zone=eu-1 (2 have env=dev, 1 has env=prod,zone=us-1)`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}

	_, err = NewSnapshot(nil, Spread).Place(Request{Account: "bob", Need: Resources{1, 1}})
	var pe *PlacementError
	if !errors.As(err, &pe) || pe.Considered != 0 || len(pe.Filtered) != 0 {
		t.Errorf("empty snapshot: %#v", err)
	}
	if got, want := fmt.Sprint(err), `no node fits account "bob": the cluster has no nodes`; got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestPlaceRejectsNegativeNeed(t *testing.T) {
	s := NewSnapshot([]Node{readyNode("a", 10, 1000)}, Spread)
	for _, need := range []Resources{{-1, 0}, {0, -1}} {
		_, err := s.Place(Request{Account: "a", Need: need})
		var pe *PlacementError
		if err == nil || errors.As(err, &pe) {
			t.Errorf("need %+v: got %v, want a plain error", need, err)
		}
	}
}

func TestManyDistinctRoles(t *testing.T) {
	// More distinct roles than bits: the ones without a bit are checked by
	// name and must behave exactly like the rest.
	var nodes []Node
	for i := range 80 {
		nodes = append(nodes, with(readyNode(fmt.Sprintf("n%02d", i), 10, 1000), func(n *Node) {
			n.Roles = []string{"web", fmt.Sprintf("r%02d", i)}
		}))
	}
	s := NewSnapshot(nodes, Spread)
	for i := range 80 {
		p, err := s.Place(Request{Account: "a", Roles: []string{fmt.Sprintf("r%02d", i), "web"}, Need: Resources{1, 1}})
		if err != nil || p.Node != fmt.Sprintf("n%02d", i) {
			t.Errorf("role r%02d: got %+v, %v", i, p, err)
		}
	}
	_, err := s.Place(Request{Account: "a", Roles: []string{"r79", "r78"}, Need: Resources{1, 1}})
	var pe *PlacementError
	if !errors.As(err, &pe) || pe.Filtered["missing role r79"] != 79 || pe.Filtered["missing role r78"] != 1 {
		t.Errorf("got %v", err)
	}
}

// oracle is the specification written plainly: each filter straight from the
// Node fields, every node scored, the best kept by (score, tie hash, name).
// Place must agree with it on every input. The score arithmetic is the
// implementation's own (multiplying by the reciprocal) so that near-ties
// round the same way; what the oracle checks is which nodes compete and how
// the winner is chosen.
func oracle(nodes []Node, strategy Strategy, r Request) (Placement, map[string]int) {
	byName := map[string]Node{}
	for _, n := range nodes {
		byName[n.Name] = n // later duplicates win
	}
	filtered := map[string]int{}
	var best *Placement
	var bestHash uint64
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		n := byName[name]
		why := ""
		for _, role := range r.Roles {
			if why == "" && !slices.Contains(n.Roles, role) {
				why = "missing role " + role
			}
		}
		switch {
		case r.Node != "" && n.Name != r.Node:
			why = "not the pinned node"
		case !n.Ready:
			why = "not ready"
		case n.Draining:
			why = "draining"
		case why != "":
		case r.Node == "" && !r.Selector.Matches(n.Labels):
			why = "selector"
		case n.Allocated.Accounts+r.Need.Accounts > n.Capacity.Accounts:
			why = "accounts exhausted"
		case n.Allocated.DiskMB+r.Need.DiskMB > n.Capacity.DiskMB:
			why = "disk exhausted"
		}
		if why != "" {
			filtered[why]++
			continue
		}
		frac := func(capacity, free int64) float64 {
			if capacity == 0 {
				return 0
			}
			return float64(free) * (1 / float64(capacity))
		}
		free := (frac(int64(n.Capacity.Accounts), int64(n.Capacity.Accounts-n.Allocated.Accounts-r.Need.Accounts)) +
			frac(n.Capacity.DiskMB, n.Capacity.DiskMB-n.Allocated.DiskMB-r.Need.DiskMB)) / 2
		score := free
		if strategy == BinPack {
			score = 1 - free
		}
		h := tiebreak(fnv1a(r.Account), fnv1a(n.Name))
		// Names are visited in order, so on a full tie the earlier name stays.
		if best == nil || score > best.Score || score == best.Score && h > bestHash {
			best, bestHash = &Placement{Node: n.Name, Score: score}, h
		}
	}
	if best == nil {
		return Placement{}, filtered
	}
	return *best, nil
}

var testSelectors = []string{"", "", "zone=a", "zone!=a", "ssd", "!ssd", "zone in (a,b),!old", "tier notin (x)", "zone=c,ssd"}

var parsedTestSelectors = sync.OnceValue(func() []Selector {
	out := make([]Selector, len(testSelectors))
	for i, s := range testSelectors {
		var err error
		if out[i], err = ParseSelector(s); err != nil {
			panic(err)
		}
	}
	return out
})

// randomCluster makes small clusters with tight capacities, so that every
// filter and exhaustion happens often.
func randomCluster(rng *rand.Rand) []Node {
	allRoles := []string{"web", "dns", "mail", "db", "backup", "ftp"}
	nodes := make([]Node, rng.IntN(25))
	for i := range nodes {
		n := Node{
			Name:     fmt.Sprintf("n%02d", rng.IntN(40)), // duplicates now and then
			Ready:    rng.IntN(8) != 0,
			Draining: rng.IntN(10) == 0,
			Labels:   map[string]string{},
			Capacity: Resources{Accounts: rng.IntN(6), DiskMB: int64(rng.IntN(60))},
		}
		for _, r := range allRoles {
			if rng.IntN(3) != 0 {
				n.Roles = append(n.Roles, r)
			}
		}
		if rng.IntN(4) != 0 {
			n.Labels["zone"] = []string{"a", "b", "c"}[rng.IntN(3)]
		}
		if rng.IntN(2) == 0 {
			n.Labels["ssd"] = ""
		}
		if rng.IntN(5) == 0 {
			n.Labels["old"] = "1"
		}
		if rng.IntN(3) == 0 {
			n.Labels["tier"] = []string{"x", "y"}[rng.IntN(2)]
		}
		n.Allocated = Resources{Accounts: rng.IntN(n.Capacity.Accounts + 1), DiskMB: rng.Int64N(n.Capacity.DiskMB + 1)}
		if rng.IntN(20) == 0 { // an operator lowered the capacity below what is placed
			n.Allocated.Accounts = n.Capacity.Accounts + 1
		}
		nodes[i] = n
	}
	return nodes
}

func randomRequest(rng *rand.Rand, nodes []Node) Request {
	r := Request{
		Account:  fmt.Sprintf("acct%d", rng.IntN(1000)),
		Need:     Resources{Accounts: rng.IntN(3), DiskMB: int64(rng.IntN(15))},
		Selector: parsedTestSelectors()[rng.IntN(len(testSelectors))],
	}
	for _, role := range []string{"web", "mail", "db", "ftp", "gopher"} {
		if rng.IntN(4) == 0 {
			r.Roles = append(r.Roles, role)
		}
	}
	if rng.IntN(6) == 0 {
		if len(nodes) > 0 && rng.IntN(4) != 0 {
			r.Node = nodes[rng.IntN(len(nodes))].Name
		} else {
			r.Node = "nowhere"
		}
	}
	return r
}

// TestPlaceMatchesOracle drives Place and the oracle through the same random
// batches, allocating each placement into both.
func TestPlaceMatchesOracle(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for round := range 1500 {
		nodes := randomCluster(rng)
		strategy := Strategy(rng.IntN(2))
		s := NewSnapshot(nodes, strategy)
		for step := range 20 {
			r := randomRequest(rng, nodes)
			want, wantFiltered := oracle(nodes, strategy, r)
			got, err := s.Place(r)
			if wantFiltered == nil {
				if err != nil || got != want {
					t.Fatalf("round %d step %d: %+v on %+v\ngot  %+v, %v\nwant %+v", round, step, r, nodes, got, err, want)
				}
				if err := s.Allocate(got.Node, r.Need); err != nil {
					t.Fatalf("round %d step %d: allocate %s: %v", round, step, got.Node, err)
				}
				for i := range nodes {
					if nodes[i].Name == got.Node {
						nodes[i].Allocated.Accounts += r.Need.Accounts
						nodes[i].Allocated.DiskMB += r.Need.DiskMB
					}
				}
				continue
			}
			var pe *PlacementError
			if !errors.As(err, &pe) || !maps.Equal(pe.Filtered, wantFiltered) || pe.Considered != s.Len() {
				t.Fatalf("round %d step %d: %+v on %+v\ngot  %+v, %v\nwant filtered %v", round, step, r, nodes, got, err, wantFiltered)
			}
		}
	}
}

// TestNoOverCommit places batches until the cluster is full and checks the
// invariant the controller relies on: a batch never takes a node past its
// capacity, every node that gained an allocation is in Touched, and when
// Place gives up, nothing did fit.
func TestNoOverCommit(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 3))
	for round := range 2000 {
		nodes := randomCluster(rng)
		s := NewSnapshot(nodes, Strategy(rng.IntN(2)))
		r := randomRequest(rng, nodes)
		r.Need.Accounts = 1 + rng.IntN(2) // the batch must end
		placed := map[string]bool{}
		for n := 0; ; n++ {
			r.Account = fmt.Sprintf("acct%d", n)
			p, err := s.Place(r)
			if err != nil {
				var pe *PlacementError
				if !errors.As(err, &pe) {
					t.Fatalf("round %d: %v", round, err)
				}
				break
			}
			if err := s.Allocate(p.Node, r.Need); err != nil {
				t.Fatalf("round %d: Place chose %s, Allocate refused it: %v", round, p.Node, err)
			}
			placed[p.Node] = true
		}
		initial := NewSnapshot(nodes, Spread)
		for _, n := range nodes {
			before, _ := initial.Node(n.Name)
			after, _ := s.Node(n.Name)
			grew := after.Allocated != before.Allocated
			if grew && (after.Allocated.Accounts > after.Capacity.Accounts || after.Allocated.DiskMB > after.Capacity.DiskMB) {
				t.Fatalf("round %d: node %s over-committed: %+v of %+v", round, n.Name, after.Allocated, after.Capacity)
			}
			if grew != placed[n.Name] {
				t.Fatalf("round %d: node %s grew=%v placed=%v", round, n.Name, grew, placed[n.Name])
			}
		}
		if got, want := s.Touched(), slices.Sorted(maps.Keys(placed)); !slices.Equal(got, want) {
			t.Fatalf("round %d: Touched %v, want %v", round, got, want)
		}
	}
}

// TestDeterministic checks that Place is a pure function of its inputs:
// the same batch against the same nodes gives the same placements, however
// the nodes are ordered and however often it runs.
func TestDeterministic(t *testing.T) {
	nodes := benchCluster(300, 5)
	reqs := benchRequests(t, 500, 5)
	run := func(nodes []Node, strategy Strategy) []Placement {
		s := NewSnapshot(nodes, strategy)
		var out []Placement
		for _, r := range reqs {
			p, err := s.Place(r)
			if err == nil {
				if err := s.Allocate(p.Node, r.Need); err != nil {
					t.Fatal(err)
				}
			}
			out = append(out, p)
		}
		return out
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, strategy := range []Strategy{Spread, BinPack} {
		want := run(nodes, strategy)
		distinct := map[string]bool{}
		for _, p := range want {
			distinct[p.Node] = true
		}
		if len(distinct) < 10 {
			t.Errorf("%v: only %d distinct nodes used; the fixture is too easy", strategy, len(distinct))
		}
		for i := range 5 {
			shuffled := slices.Clone(nodes)
			if i > 0 {
				rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
			}
			if got := run(shuffled, strategy); !reflect.DeepEqual(got, want) {
				t.Fatalf("%v: run %d (shuffled=%v) differs", strategy, i, i > 0)
			}
		}
	}
}

func TestSelectorCacheSharedByEqualSelectors(t *testing.T) {
	s := NewSnapshot([]Node{readyNode("a", 10, 1000), with(readyNode("b", 10, 1000), func(n *Node) { n.Labels["zone"] = "us-1" })}, Spread)
	for _, text := range []string{"zone=us-1", "zone == us-1", " zone=us-1"} {
		p, err := s.Place(Request{Need: Resources{1, 1}, Selector: mustParse(t, text)})
		if err != nil || p.Node != "b" {
			t.Errorf("%q: %+v, %v", text, p, err)
		}
	}
	if len(s.matches) != 1 {
		t.Errorf("%d cache entries for one canonical selector: %v", len(s.matches), slices.Collect(maps.Keys(s.matches)))
	}
}

func TestPlaceDoesNotAllocate(t *testing.T) {
	s := NewSnapshot(benchCluster(1000, 9), Spread)
	reqs := benchRequests(t, 64, 9)
	for _, r := range reqs { // fill the selector cache
		_, _ = s.Place(r)
	}
	i := 0
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := s.Place(reqs[i%len(reqs)]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs != 0 {
		t.Errorf("Place allocates %v times per call on the success path", allocs)
	}
}
