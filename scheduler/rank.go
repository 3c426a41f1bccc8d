package scheduler

// Ranking: how feasible nodes are ordered.
//
// A node's score is computed as if the request were already placed on it,
// as Nomad does, so that a request which would fill a node counts against
// it. With free fractions after placement
//
//	fa = (capacity.accounts - allocated.accounts - need.accounts) / capacity.accounts
//	fd = (capacity.disk     - allocated.disk     - need.disk)     / capacity.disk
//
// (a dimension with zero capacity has fraction 0: it is full), the score is
//
//	Spread:  (fa + fd) / 2       the emptiest node wins
//	BinPack: 1 - (fa + fd) / 2   the fullest node that still fits wins
//
// so every score lies in [0, 1]. Fractions rather than absolute amounts keep
// a large node from attracting everything under Spread, and the mean weighs
// account slots and disk alike: either running out makes a node full.
//
// Equal scores are common (a fresh cluster of identical nodes) and are
// broken by tiebreak(account, node): the higher wins, and the node name
// decides only if the hashes collide too. Name order alone would send every
// account of a batch to the same first node until it is measurably fuller,
// and every replica's plan to the same nodes; the hash scatters accounts
// over equal nodes while keeping the choice a pure function of the inputs,
// independent of the order nodes were listed in.

func (s *Snapshot) score(i int, q *query) float64 {
	n := &s.slots[i]
	fa := float64(n.capAcc-n.allocAcc-q.needAcc) * n.invAcc
	fd := float64(n.capDisk-n.allocDisk-q.needDisk) * n.invDisk
	free := (fa + fd) / 2
	if s.strategy == BinPack {
		return 1 - free
	}
	return free
}

// better reports whether node i, scoring sc, beats the best so far. The
// tie-break hash of the best is computed only when a tie first needs it.
func (s *Snapshot) better(i int, sc float64, q *query, b *best) bool {
	if b.i < 0 || sc > b.score {
		return true
	}
	if sc < b.score {
		return false
	}
	if !b.hashed {
		b.hash, b.hashed = tiebreak(q.acctHash, s.slots[b.i].nameHash), true
	}
	h := tiebreak(q.acctHash, s.slots[i].nameHash)
	if h != b.hash {
		return h > b.hash
	}
	return s.nodes[i].Name < s.nodes[b.i].Name
}

type best struct {
	i      int
	score  float64
	hash   uint64
	hashed bool
}

// fnv1a is 64-bit FNV-1a, written out because hash/fnv's interface would
// allocate on the hot path.
func fnv1a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// tiebreak combines the FNV-1a hashes of the account and node names through
// the SplitMix64 finalizer. Hashing the concatenated names would cost a pass
// over the node name for every tied node; combining precomputed hashes costs
// a few multiplications, and the finalizer's avalanche makes each account
// order the nodes differently.
func tiebreak(account, node uint64) uint64 {
	x := account ^ node
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
