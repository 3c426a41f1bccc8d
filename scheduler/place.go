package scheduler

import "fmt"

// Request is one account to place.
type Request struct {
	// Account names the account; it only seeds the tie-break.
	Account string
	// Roles the node must all have.
	Roles []string
	// Need is normally {Accounts: 1, DiskMB: the plan's disk}.
	Need Resources
	// Selector is the reseller's node pool.
	Selector Selector
	// Node pins the account: only this node is considered. The pin is still
	// subject to readiness, draining, roles and capacity — a pin must not
	// put an account where it cannot run — but not to the selector, because
	// pinning is an administrator overriding the reseller's pool.
	Node string
}

// Placement is the chosen node and its score (see rank.go), reported so that
// callers can log why a node won.
type Placement struct {
	Node  string
	Score float64
}

// Place chooses a node for r given the snapshot's current allocations. It
// does not allocate: the caller calls Allocate once it has decided to keep
// the placement. When no node fits, the error is a *PlacementError; an
// invalid request (negative need) gets a plain error.
//
// Place is a pure function of the snapshot's state and r: repeated calls
// agree, whatever order the nodes were given in.
func (s *Snapshot) Place(r Request) (Placement, error) {
	if r.Need.Accounts < 0 || r.Need.DiskMB < 0 {
		return Placement{}, fmt.Errorf("place account %q: negative need %d accounts, %d MB", r.Account, r.Need.Accounts, r.Need.DiskMB)
	}
	q := s.prepare(&r)
	b := best{i: -1}
	pinned := -1
	if r.Node != "" {
		if i, ok := s.index[r.Node]; ok {
			pinned = i
			if s.verdict(i, &q) == fit {
				b = best{i: i, score: s.score(i, &q)}
			}
		}
	} else {
		for i := range s.slots {
			// verdict, written out: reject inlines here, verdict would not.
			why := s.reject(i, &q)
			if q.someNoBit {
				why = s.rejectByName(i, &q, why)
			}
			if why != fit {
				continue
			}
			if sc := s.score(i, &q); s.better(i, sc, &q, &b) {
				b = best{i: i, score: sc}
			}
		}
	}
	if b.i < 0 {
		return Placement{}, s.explain(&q, pinned)
	}
	return Placement{Node: s.nodes[b.i].Name, Score: b.score}, nil
}
