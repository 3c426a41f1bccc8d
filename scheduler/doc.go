// Package scheduler places hosting accounts on nodes. It is pure: given a
// snapshot of the nodes and their allocations and an account's request, it
// returns a placement or the reason nothing fits, and does no I/O, so it can
// be table-tested and benchmarked alone.
//
// As in Nomad's scheduler, feasibility and ranking are kept apart. Filters
// (feasible.go) decide whether a node may take the account at all: it is
// READY, not draining, has every role the plan needs, matches the reseller's
// node selector and has accounts and disk left. Scores (rank.go) order the
// nodes that pass: spread (least allocated) by default, bin-pack when the
// server is configured for it. Ties are broken by a hash of the account and
// node names, so equal nodes are not always filled in name order, yet the
// result stays a pure function of the inputs.
//
// The control plane reads one Snapshot from etcd, places a batch of accounts
// against it, calling Allocate after each placement so the batch never
// over-commits a node, and commits the batch in one transaction that compares
// the allocation revision of every node in Touched — optimistic concurrency
// in the manner of Nomad's plan applier.
package scheduler
