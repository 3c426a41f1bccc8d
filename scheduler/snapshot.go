package scheduler

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/npanel/npanel/validate"
)

// Resources is an amount of what nodes offer and accounts consume.
type Resources struct {
	Accounts int
	DiskMB   int64
}

// Node is one node as the scheduler sees it.
type Node struct {
	Name     string
	Ready    bool // status READY; any other status takes no new accounts
	Draining bool
	Roles    []string // "web", "dns", "mail", "db", "backup"
	Labels   map[string]string
	// Capacity is what the node may hold. Zero in a dimension means zero:
	// the node takes nothing that needs any of it. There is no "unlimited";
	// the store fills in defaults (DefaultMaxAccounts, the disk the agent
	// reported) before a node gets here, so a zero is a real answer — a node
	// that has not reported its disk yet must not attract every account.
	Capacity  Resources
	Allocated Resources
}

var (
	// ErrUnknownNode: Allocate or Release named a node not in the snapshot.
	ErrUnknownNode = errors.New("unknown node")
	// ErrOverCommit: Allocate would exceed the node's capacity.
	ErrOverCommit = errors.New("would exceed the node's capacity")
	// ErrOverRelease: Release would take the allocation below zero.
	ErrOverRelease = errors.New("would release more than is allocated")
)

// Snapshot is the cluster as one planning pass sees it: the nodes, their
// allocations as they were read, and what the pass has allocated since.
//
// NewSnapshot does the per-node work once (role bitmasks, capacities as
// integers, reciprocals for scoring, name hashes for tie-breaking) so that
// Place is a linear scan over a compact array without allocating. Label
// selectors are evaluated against every node the first time a snapshot sees
// them and cached by their canonical text; labels do not change within a
// snapshot, so the cache never needs invalidating.
//
// A Snapshot is not safe for concurrent use: even Place fills the selector
// cache. The controller owns one per pass.
type Snapshot struct {
	strategy Strategy
	slots    []slot // hot, indexed like nodes
	nodes    []Node // cold; Allocated is kept in slots
	index    map[string]int
	roleBits map[string]uint64
	matches  map[string][]bool // canonical selector → per-slot match
	touched  []bool
	touchedN int
}

// slot holds what the filters and scores read, in one cache-friendly record.
type slot struct {
	capAcc, allocAcc   int64
	capDisk, allocDisk int64
	invAcc, invDisk    float64 // 1/capacity, or 0 where capacity is 0
	roles              uint64  // bit per interned role
	nameHash           uint64
	status             reason // fit, notReady or draining
}

// NewSnapshot copies nodes into a snapshot ranked by strategy (an unknown
// strategy ranks as Spread). Node names are unique in the store; should a
// name repeat, the later node replaces the earlier.
func NewSnapshot(nodes []Node, strategy Strategy) *Snapshot {
	s := &Snapshot{
		strategy: strategy,
		index:    make(map[string]int, len(nodes)),
		roleBits: internRoles(nodes),
		matches:  make(map[string][]bool),
	}
	for _, n := range nodes {
		n.Roles = slices.Clone(n.Roles)
		n.Labels = maps.Clone(n.Labels)
		sl := slot{
			capAcc:    int64(n.Capacity.Accounts),
			allocAcc:  int64(n.Allocated.Accounts),
			capDisk:   n.Capacity.DiskMB,
			allocDisk: n.Allocated.DiskMB,
			nameHash:  fnv1a(n.Name),
		}
		if sl.capAcc > 0 {
			sl.invAcc = 1 / float64(sl.capAcc)
		}
		if sl.capDisk > 0 {
			sl.invDisk = 1 / float64(sl.capDisk)
		}
		switch {
		case !n.Ready:
			sl.status = notReady
		case n.Draining:
			sl.status = draining
		}
		for _, r := range n.Roles {
			sl.roles |= s.roleBits[r]
		}
		if i, dup := s.index[n.Name]; dup {
			s.nodes[i], s.slots[i] = n, sl
			continue
		}
		s.index[n.Name] = len(s.nodes)
		s.nodes = append(s.nodes, n)
		s.slots = append(s.slots, sl)
	}
	s.touched = make([]bool, len(s.slots))
	return s
}

// internRoles gives each distinct role a bit. The known roles come first so
// they always get one; should a snapshot carry more than 64 distinct roles,
// the rest get none and are checked by name (hasRolesByName), which is
// slower but still correct.
func internRoles(nodes []Node) map[string]uint64 {
	names := slices.Clone(validate.NodeRoles)
	var other []string
	for _, n := range nodes {
		for _, r := range n.Roles {
			if !slices.Contains(names, r) && !slices.Contains(other, r) {
				other = append(other, r)
			}
		}
	}
	slices.Sort(other)
	names = append(names, other...)
	bits := make(map[string]uint64, min(len(names), 64))
	for i, r := range names[:min(len(names), 64)] {
		bits[r] = 1 << i
	}
	return bits
}

// Strategy is the ranking the snapshot was built with.
func (s *Snapshot) Strategy() Strategy { return s.strategy }

// Len is the number of nodes in the snapshot.
func (s *Snapshot) Len() int { return len(s.slots) }

// Node returns a node's current state, including what this snapshot has
// allocated on it. The result is a copy.
func (s *Snapshot) Node(name string) (Node, bool) {
	i, ok := s.index[name]
	if !ok {
		return Node{}, false
	}
	n := s.nodes[i]
	n.Roles = slices.Clone(n.Roles)
	n.Labels = maps.Clone(n.Labels)
	n.Allocated = Resources{Accounts: int(s.slots[i].allocAcc), DiskMB: s.slots[i].allocDisk}
	return n, true
}

// Allocate records that r has been placed on the node. It refuses, changing
// nothing, what Place would not have chosen: an allocation beyond the node's
// capacity. That makes "a batch never over-commits" a property of the
// snapshot rather than of every caller's care.
func (s *Snapshot) Allocate(node string, r Resources) error {
	i, err := s.lookup("allocate", node, r)
	if err != nil {
		return err
	}
	sl := &s.slots[i]
	if int64(r.Accounts) > sl.capAcc-sl.allocAcc || r.DiskMB > sl.capDisk-sl.allocDisk {
		return fmt.Errorf("allocate %d accounts, %d MB on node %q (%d/%d accounts, %d/%d MB used): %w",
			r.Accounts, r.DiskMB, node, sl.allocAcc, sl.capAcc, sl.allocDisk, sl.capDisk, ErrOverCommit)
	}
	sl.allocAcc += int64(r.Accounts)
	sl.allocDisk += r.DiskMB
	s.touch(i, r)
	return nil
}

// Release returns r to the node, for an account removed or moved within the
// same planning pass.
func (s *Snapshot) Release(node string, r Resources) error {
	i, err := s.lookup("release", node, r)
	if err != nil {
		return err
	}
	sl := &s.slots[i]
	if int64(r.Accounts) > sl.allocAcc || r.DiskMB > sl.allocDisk {
		return fmt.Errorf("release %d accounts, %d MB on node %q (%d accounts, %d MB allocated): %w",
			r.Accounts, r.DiskMB, node, sl.allocAcc, sl.allocDisk, ErrOverRelease)
	}
	sl.allocAcc -= int64(r.Accounts)
	sl.allocDisk -= r.DiskMB
	s.touch(i, r)
	return nil
}

func (s *Snapshot) lookup(verb, node string, r Resources) (int, error) {
	if r.Accounts < 0 || r.DiskMB < 0 {
		return 0, fmt.Errorf("%s %d accounts, %d MB on node %q: negative resources", verb, r.Accounts, r.DiskMB, node)
	}
	i, ok := s.index[node]
	if !ok {
		return 0, fmt.Errorf("%s on node %q: %w", verb, node, ErrUnknownNode)
	}
	return i, nil
}

// touch marks a node whose allocation the commit must write. A zero change
// is not a write, and leaving it out spares the commit a compare that could
// only make it fail needlessly.
func (s *Snapshot) touch(i int, r Resources) {
	if r == (Resources{}) || s.touched[i] {
		return
	}
	s.touched[i] = true
	s.touchedN++
}

// Touched lists, sorted, the nodes whose allocation Allocate or Release
// changed since the snapshot was made or ResetTouched was last called: the
// nodes whose allocation revision the batch's commit must compare. A node
// allocated and released back to where it was is still listed; its revision
// still guards against a concurrent writer.
func (s *Snapshot) Touched() []string {
	out := make([]string, 0, s.touchedN)
	for i, t := range s.touched {
		if t {
			out = append(out, s.nodes[i].Name)
		}
	}
	slices.Sort(out)
	return out
}

// ResetTouched forgets which nodes were touched, for a controller that
// commits several batches from one snapshot.
func (s *Snapshot) ResetTouched() {
	clear(s.touched)
	s.touchedN = 0
}

// selectorMatches returns, for a non-empty selector, whether each slot
// matches it, computing it on first sight.
func (s *Snapshot) selectorMatches(sel Selector) []bool {
	if sel.Empty() {
		return nil
	}
	if m, ok := s.matches[sel.text]; ok {
		return m
	}
	m := make([]bool, len(s.nodes))
	for i := range s.nodes {
		m[i] = sel.Matches(s.nodes[i].Labels)
	}
	s.matches[sel.text] = m
	return m
}
