package scheduler

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Feasibility: the filters a node must pass to be ranked at all. They run in
// a fixed order and a rejected node is counted under the first filter that
// rejected it, as Nomad's AllocMetric does, so PlacementError's counts add
// up to the number of nodes considered.

// Reasons are the stable keys of PlacementError.Filtered; its message puts
// them in words.
const (
	ReasonNotPinned         = "not the pinned node"
	ReasonNotReady          = "not ready"
	ReasonDraining          = "draining"
	ReasonMissingRolePrefix = "missing role " // followed by the role, e.g. "missing role web"
	ReasonSelector          = "selector"
	ReasonAccountsExhausted = "accounts exhausted"
	ReasonDiskExhausted     = "disk exhausted"
)

type reason uint8

const (
	fit reason = iota
	notPinned
	notReady
	draining
	missingRole
	selectorMismatch
	accountsExhausted
	diskExhausted
)

// query is a Request prepared once per Place, so that the per-node work is
// a handful of integer comparisons.
type query struct {
	req       *Request
	roles     uint64 // bits of the request's roles that have one
	someNoBit bool   // a requested role has no bit: check it by name
	match     []bool // nil: no selector (or pinned)
	needAcc   int64
	needDisk  int64
	acctHash  uint64
}

func (s *Snapshot) prepare(r *Request) query {
	q := query{
		req:      r,
		needAcc:  int64(r.Need.Accounts),
		needDisk: r.Need.DiskMB,
		acctHash: fnv1a(r.Account),
	}
	for _, role := range r.Roles {
		if b, ok := s.roleBits[role]; ok {
			q.roles |= b
		} else {
			q.someNoBit = true
		}
	}
	if r.Node == "" {
		q.match = s.selectorMatches(r.Selector)
	}
	return q
}

// reject returns fit, or the first filter node i fails. It is kept small
// enough to inline into Place's loop; roles without a bit are checked apart,
// in rejectByName.
func (s *Snapshot) reject(i int, q *query) reason {
	n := &s.slots[i]
	switch {
	case n.status != fit:
		return n.status
	case n.roles&q.roles != q.roles:
		return missingRole
	case q.match != nil && !q.match[i]:
		return selectorMismatch
	case q.needAcc > n.capAcc-n.allocAcc:
		return accountsExhausted
	case q.needDisk > n.capDisk-n.allocDisk:
		return diskExhausted
	}
	return fit
}

// rejectByName completes reject for a request naming a role that has no
// bit, keeping the filter order: a missing role outranks the selector and
// capacity verdicts reject may have given.
func (s *Snapshot) rejectByName(i int, q *query, why reason) reason {
	if (why == fit || why > missingRole) && s.missingRole(i, q.req.Roles) != "" {
		return missingRole
	}
	return why
}

// verdict is reject followed, when the request needs it, by rejectByName.
func (s *Snapshot) verdict(i int, q *query) reason {
	why := s.reject(i, q)
	if q.someNoBit {
		why = s.rejectByName(i, q, why)
	}
	return why
}

// missingRole returns the first of roles node i lacks, or "".
func (s *Snapshot) missingRole(i int, roles []string) string {
	for _, r := range roles {
		if b, ok := s.roleBits[r]; ok {
			if s.slots[i].roles&b == 0 {
				return r
			}
		} else if !slices.Contains(s.nodes[i].Roles, r) {
			return r
		}
	}
	return ""
}

// explain is Place's slow path, run only when nothing fits: it repeats the
// filters over every node to say how many each one removed.
func (s *Snapshot) explain(q *query, pinned int) *PlacementError {
	e := &PlacementError{
		Account:    q.req.Account,
		Pinned:     q.req.Node,
		Selector:   q.req.Selector.String(),
		Considered: len(s.slots),
		Filtered:   make(map[string]int),
	}
	count := func(i int, why reason) {
		var key string
		switch why {
		case notPinned:
			key = ReasonNotPinned
		case notReady:
			key = ReasonNotReady
		case draining:
			key = ReasonDraining
		case missingRole:
			key = ReasonMissingRolePrefix + s.missingRole(i, q.req.Roles)
		case selectorMismatch:
			key = ReasonSelector
			if e.Labels == nil {
				e.Labels = make(map[string]int)
			}
			e.Labels[labelText(s.nodes[i].Labels)]++
		case accountsExhausted:
			key = ReasonAccountsExhausted
		case diskExhausted:
			key = ReasonDiskExhausted
		}
		e.Filtered[key]++
	}
	for i := range s.slots {
		if q.req.Node != "" && i != pinned {
			count(i, notPinned)
		} else if why := s.verdict(i, q); why != fit {
			count(i, why)
		}
	}
	return e
}

// labelText is a node's labels as an operator writes them: "env=dev,zone=eu-1".
func labelText(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}

// PlacementError says why no node fits a request, in the manner of Nomad's
// AllocMetric: how many nodes were considered and how many each filter
// removed. Every considered node is counted exactly once, under the first
// filter that rejected it.
type PlacementError struct {
	Account string
	Pinned  string // the request's pinned node, if any
	// Selector is the request's node selector in canonical form.
	Selector string
	// Considered is every node in the snapshot, for a pinned request too:
	// the others are counted as "not the pinned node", so a pin to a node
	// that does not exist reads as every node filtered for that reason.
	Considered int
	// Filtered maps a reason (the Reason constants; "missing role X" names
	// the first missing role in the request's order) to a count of nodes.
	Filtered map[string]int
	// Labels counts the label sets of the nodes the selector rejected, so
	// the message can show what the pool looks like.
	Labels map[string]int
}

// maxLabelSets bounds how many distinct label sets a message shows.
const maxLabelSets = 3

// Error says in words why nothing fits, reasons in filter order, so equal
// errors read alike and a controller can compare messages to skip
// rewriting an unchanged status. It names counts only: the labels of nodes
// outside a reseller's pool are other customers' business (see Detail).
func (e *PlacementError) Error() string { return e.message(false) }

// Detail is Error with the label sets of the nodes the selector rejected,
// for operators: "3 nodes outside the reseller's node selector zone=eu-1
// (2 have env=dev, 1 has zone=us-1)".
func (e *PlacementError) Detail() string { return e.message(true) }

func (e *PlacementError) message(labels bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "no node fits account %q", e.Account)
	if e.Pinned != "" {
		fmt.Fprintf(&b, " pinned to %q", e.Pinned)
	}
	if e.Considered == 0 {
		b.WriteString(": the cluster has no nodes")
		return b.String()
	}
	fmt.Fprintf(&b, " (%s considered): ", nodes(e.Considered))
	reasons := make([]string, 0, len(e.Filtered))
	for k, n := range e.Filtered {
		if n > 0 {
			reasons = append(reasons, k)
		}
	}
	slices.SortFunc(reasons, func(a, b string) int {
		return cmp.Or(cmp.Compare(reasonRank(a), reasonRank(b)), cmp.Compare(a, b))
	})
	phrases := make([]string, 0, len(reasons))
	for _, k := range reasons {
		if p := e.phrase(k, e.Filtered[k], labels); p != "" {
			phrases = append(phrases, p)
		}
	}
	b.WriteString(strings.Join(phrases, "; "))
	return b.String()
}

func (e *PlacementError) phrase(reason string, n int, labels bool) string {
	switch {
	case reason == ReasonNotPinned:
		if n == e.Considered {
			return fmt.Sprintf("no node is named %q", e.Pinned)
		}
		return "" // the other nodes are not news
	case reason == ReasonNotReady:
		return nodes(n) + " not READY"
	case reason == ReasonDraining:
		return nodes(n) + " draining"
	case strings.HasPrefix(reason, ReasonMissingRolePrefix):
		return fmt.Sprintf("%s without the %s role", nodes(n), strings.TrimPrefix(reason, ReasonMissingRolePrefix))
	case reason == ReasonSelector && labels:
		return fmt.Sprintf("%s outside the reseller's node selector %s (%s)", nodes(n), e.Selector, e.labelSummary())
	case reason == ReasonSelector:
		return fmt.Sprintf("%s outside the reseller's node selector %s", nodes(n), e.Selector)
	case reason == ReasonAccountsExhausted:
		return nodes(n) + " with no account slots left"
	case reason == ReasonDiskExhausted:
		return nodes(n) + " without the disk the plan needs"
	}
	return fmt.Sprintf("%s %s", nodes(n), reason)
}

// labelSummary reads "2 have env=dev, 1 has no labels", most common first.
func (e *PlacementError) labelSummary() string {
	sets := slices.Collect(maps.Keys(e.Labels))
	slices.SortFunc(sets, func(a, b string) int {
		return cmp.Or(cmp.Compare(e.Labels[b], e.Labels[a]), cmp.Compare(a, b))
	})
	parts := make([]string, 0, maxLabelSets+1)
	for i, set := range sets {
		if i == maxLabelSets {
			parts = append(parts, fmt.Sprintf("%d more label sets", len(sets)-i))
			break
		}
		verb := "have"
		if e.Labels[set] == 1 {
			verb = "has"
		}
		if set == "" {
			parts = append(parts, fmt.Sprintf("%d %s no labels", e.Labels[set], verb))
			continue
		}
		parts = append(parts, fmt.Sprintf("%d %s %s", e.Labels[set], verb, set))
	}
	return strings.Join(parts, ", ")
}

func nodes(n int) string {
	if n == 1 {
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", n)
}

func reasonRank(r string) int {
	switch {
	case r == ReasonNotPinned:
		return 0
	case r == ReasonNotReady:
		return 1
	case r == ReasonDraining:
		return 2
	case strings.HasPrefix(r, ReasonMissingRolePrefix):
		return 3
	case r == ReasonSelector:
		return 4
	case r == ReasonAccountsExhausted:
		return 5
	case r == ReasonDiskExhausted:
		return 6
	}
	return 7
}
