package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// NodeStatus is the control plane's view of a node's health.
type NodeStatus string

const (
	// NodePending: added by an operator, never enrolled.
	NodePending NodeStatus = "PENDING"
	// NodeReady: the liveness lease is held and gossip agrees.
	NodeReady NodeStatus = "READY"
	// NodeSuspect: the lease is still held but gossip says the node is gone;
	// a hint that it will turn DOWN unless it comes back.
	NodeSuspect NodeStatus = "SUSPECT"
	// NodeDown: the lease expired.
	NodeDown NodeStatus = "DOWN"
)

// Node is the operator's declaration of a node. Only the API writes it.
type Node struct {
	Name    string            `json:"name"`
	Address string            `json:"address"`
	Roles   []string          `json:"roles"`
	Labels  map[string]string `json:"labels,omitempty"`
	// MaxAccounts caps how many accounts the scheduler places here; 0 means
	// DefaultMaxAccounts.
	MaxAccounts int `json:"maxAccounts,omitempty"`
	// DiskMB overrides the disk the scheduler may allocate; 0 means the size
	// the agent reports.
	DiskMB int64 `json:"diskMB,omitempty"`
	// Draining nodes get no new placements; their accounts stay.
	Draining  bool      `json:"draining,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// DefaultMaxAccounts is a node's account capacity unless the operator sets one.
const DefaultMaxAccounts = 1000

// NodeCapacity is what the scheduler may allocate on a node.
type NodeCapacity struct {
	Accounts int
	DiskMB   int64
}

// NodeFacts is what the agent reports about its host.
type NodeFacts struct {
	OS           string   `json:"os,omitempty"`
	Kernel       string   `json:"kernel,omitempty"`
	Arch         string   `json:"arch,omitempty"`
	CPUs         int      `json:"cpus,omitempty"`
	MemoryBytes  int64    `json:"memoryBytes,omitempty"`
	DiskBytes    int64    `json:"diskBytes,omitempty"`
	Capabilities []string `json:"capabilities,omitempty"`
	// BackupSSHPublicKey is the key the node logs in to backup nodes
	// with over SFTP ("ssh-ed25519 AAAA...").
	BackupSSHPublicKey string `json:"backupSshPublicKey,omitempty"`
}

// NodeState is everything about a node that the cluster learns rather than
// the operator declares. It is kept apart from Node so that agent reports and
// operator edits never contend on one key.
type NodeState struct {
	Name         string    `json:"name"`
	EnrolledAt   time.Time `json:"enrolledAt,omitzero"`
	AgentVersion string    `json:"agentVersion,omitempty"`
	Facts        NodeFacts `json:"facts"`
	// CertSerials are the certificate serials (hex) the gateway accepts for
	// this node: the newest and, across a renewal, the one before it. A
	// certificate not listed here is refused even if the CA signed it, which
	// is how removal (and later fencing) takes effect immediately.
	CertSerials []string `json:"certSerials,omitempty"`
	GossipAddr  string   `json:"gossipAddr,omitempty"`
	// MetricsAddr is where the agent serves /metrics (host:port, the host
	// possibly unspecified); empty when it serves none.
	MetricsAddr string `json:"metricsAddr,omitempty"`
	// PublicKey is the node certificate's public key (PKIX DER): secrets
	// for the node travel sealed to it (pki.Seal).
	PublicKey       []byte     `json:"publicKey,omitempty"`
	LastSeen        time.Time  `json:"lastSeen,omitzero"`
	Status          NodeStatus `json:"status"`
	StatusChangedAt time.Time  `json:"statusChangedAt,omitzero"`
	// StatusReason says why the node is not READY, when the liveness
	// controller knows (SUSPECT: gossip, or stalled task delivery).
	StatusReason string `json:"statusReason,omitempty"`
	// DeliveryStall is set by the gateway holding the node's stream while
	// a queued task has waited unsent longer than TaskStallAfter; the
	// liveness controller then turns the node SUSPECT.
	DeliveryStall *DeliveryStall `json:"deliveryStall,omitempty"`
}

// DeliveryStall describes a node whose queued tasks are not being sent.
type DeliveryStall struct {
	Since   time.Time `json:"since"`
	Replica string    `json:"replica"`
	// OldestTask is the oldest task waiting unsent.
	OldestTask string `json:"oldestTask"`
}

// Capacity combines the operator's limits with what the agent reported.
func (v *NodeView) Capacity() NodeCapacity {
	c := NodeCapacity{Accounts: v.MaxAccounts, DiskMB: v.DiskMB}
	if c.Accounts == 0 {
		c.Accounts = DefaultMaxAccounts
	}
	if c.DiskMB == 0 {
		c.DiskMB = v.State.Facts.DiskBytes >> 20
	}
	return c
}

// AcceptsSerial reports whether a certificate with this serial may act as the node.
func (st *NodeState) AcceptsSerial(serial string) bool {
	return slices.Contains(st.CertSerials, serial)
}

// NodeView joins a node's spec, state and liveness for readers.
type NodeView struct {
	Node
	State NodeState
	// Alive: the liveness lease is currently held.
	Alive bool
	// SpecRev is the revision of the node's spec as read (ListNodes), for
	// a placement that must not stand if the spec changed since
	// (Batch.GuardNode).
	SpecRev int64 `json:"-"`
}

func nodeKey(name string) string  { return prefixNodes + name }
func stateKey(name string) string { return prefixState + name }
func aliveKey(name string) string { return prefixAlive + name }

// CreateNode declares a node (PENDING). It is a conflict when a node with that
// name exists and has enrolled; a pending node is replaced, so that an
// operator can issue a fresh join token after the first one expired.
func (s *Store) CreateNode(ctx context.Context, n Node, audit AuditEvent) error {
	st := NodeState{Name: n.Name, Status: NodePending, StatusChangedAt: n.CreatedAt}
	prev, rev, err := getJSON[NodeState](ctx, s.cli, stateKey(n.Name))
	cmp := absent(stateKey(n.Name))
	switch {
	case err == ErrNotFound:
	case err != nil:
		return err
	case !prev.EnrolledAt.IsZero():
		return fmt.Errorf("node %q is already enrolled: %w", n.Name, ErrConflict)
	default:
		cmp = unchanged(stateKey(n.Name), rev)
	}
	resp, err := s.cli.Txn(ctx).If(cmp).Then(
		clientv3.OpPut(nodeKey(n.Name), mustJSON(n)),
		clientv3.OpPut(stateKey(n.Name), mustJSON(st)),
		auditPut(audit),
	).Commit()
	if err != nil {
		return fmt.Errorf("create node %q: %w", n.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("node %q changed concurrently: %w", n.Name, ErrConflict)
	}
	return nil
}

// RemoveNode deletes a node: its spec, state, liveness key and queued tasks.
// Its certificates stop being accepted at once, because the gateway checks
// every stream and renewal against the node state that is deleted here.
func (s *Store) RemoveNode(ctx context.Context, name string, audit AuditEvent) error {
	resp, err := s.cli.Txn(ctx).If(present(nodeKey(name))).Then(
		clientv3.OpDelete(nodeKey(name)),
		clientv3.OpDelete(stateKey(name)),
		clientv3.OpDelete(aliveKey(name)),
		clientv3.OpDelete(servicesKey(name)),
		clientv3.OpDelete(queuePrefix(name), clientv3.WithPrefix()),
		auditPut(audit),
	).Commit()
	if err != nil {
		return fmt.Errorf("remove node %q: %w", name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("node %q: %w", name, ErrNotFound)
	}
	return nil
}

// GetNode returns one node's joined view.
func (s *Store) GetNode(ctx context.Context, name string) (*NodeView, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(nodeKey(name)),
		clientv3.OpGet(stateKey(name)),
		clientv3.OpGet(aliveKey(name), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("get node %q: %w", name, err)
	}
	spec := resp.Responses[0].GetResponseRange().Kvs
	if len(spec) == 0 {
		return nil, fmt.Errorf("node %q: %w", name, ErrNotFound)
	}
	v := &NodeView{}
	if err := json.Unmarshal(spec[0].Value, &v.Node); err != nil {
		return nil, fmt.Errorf("decode node %q: %w", name, err)
	}
	if st := resp.Responses[1].GetResponseRange().Kvs; len(st) > 0 {
		if err := json.Unmarshal(st[0].Value, &v.State); err != nil {
			return nil, fmt.Errorf("decode node state %q: %w", name, err)
		}
	}
	v.Alive = resp.Responses[2].GetResponseRange().Count > 0
	return v, nil
}

// CachedNode is a node's spec, answered from the replica's mirror of node
// specs when it holds the node (see mirror), for controllers that look at
// a node's address and roles on every sync. The spec may lag its record by
// milliseconds; a node not (yet) mirrored is read from etcd, so a missing
// one is ErrNotFound as GetNode says it. The result is shared: read it,
// never change it.
func (s *Store) CachedNode(ctx context.Context, name string) (*Node, error) {
	if n, _, ok := s.nodes.get(name); ok {
		return n, nil
	}
	v, err := s.GetNode(ctx, name)
	if err != nil {
		return nil, err
	}
	return &v.Node, nil
}

// ListNodes returns every node's joined view, sorted by name, read at one
// revision so that spec, state and liveness agree.
func (s *Store) ListNodes(ctx context.Context) ([]NodeView, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(prefixNodes, clientv3.WithPrefix()),
		clientv3.OpGet(prefixState, clientv3.WithPrefix()),
		clientv3.OpGet(prefixAlive, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	states := map[string]NodeState{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var st NodeState
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		states[st.Name] = st
	}
	alive := map[string]bool{}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		alive[lastSegment(string(kv.Key))] = true
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	out := make([]NodeView, 0, len(kvs))
	for _, kv := range kvs {
		var v NodeView
		if err := json.Unmarshal(kv.Value, &v.Node); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		v.State = states[v.Name]
		v.Alive = alive[v.Name]
		v.SpecRev = kv.ModRevision
		out = append(out, v)
	}
	return out, nil
}

// GetNodeState returns a node's state and its revision for a later CAS.
func (s *Store) GetNodeState(ctx context.Context, name string) (*NodeState, int64, error) {
	st, rev, err := getJSON[NodeState](ctx, s.cli, stateKey(name))
	if err == ErrNotFound {
		return nil, 0, fmt.Errorf("node %q: %w", name, ErrNotFound)
	}
	return st, rev, err
}

// UpdateNodeState applies fn to the node's state and writes it back if the
// state did not change meanwhile, retrying on conflict. fn returning false
// means "nothing to write". A missing node is ErrNotFound: a removed node is
// never resurrected by a late report.
func (s *Store) UpdateNodeState(ctx context.Context, name string, fn func(*NodeState) bool, extra ...Op) error {
	for {
		st, rev, err := s.GetNodeState(ctx, name)
		if err != nil {
			return err
		}
		if !fn(st) {
			return nil
		}
		resp, err := s.cli.Txn(ctx).
			If(unchanged(stateKey(name), rev), present(nodeKey(name))).
			Then(append([]clientv3.Op{clientv3.OpPut(stateKey(name), mustJSON(st))}, rawOps(extra)...)...).
			Commit()
		if err != nil {
			return fmt.Errorf("update node state %q: %w", name, err)
		}
		if resp.Succeeded {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// MarkAlive binds the node's liveness key to lease. value says which replica
// holds the node's stream.
func (s *Store) MarkAlive(ctx context.Context, name, replica string, lease LeaseID) error {
	_, err := s.cli.Txn(ctx).If(present(nodeKey(name))).
		Then(clientv3.OpPut(aliveKey(name), replica, clientv3.WithLease(clientv3.LeaseID(lease)))).Commit()
	if err != nil {
		return fmt.Errorf("mark node %q alive: %w", name, err)
	}
	return nil
}

// UpdateNode applies fn to the node's spec and writes it back if it did not
// change meanwhile.
func (s *Store) UpdateNode(ctx context.Context, name string, fn func(*Node) error, audit AuditEvent) (*Node, error) {
	for {
		n, rev, err := getJSON[Node](ctx, s.cli, nodeKey(name))
		if err == ErrNotFound {
			return nil, fmt.Errorf("node %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		if err := fn(n); err != nil {
			return nil, err
		}
		resp, err := s.cli.Txn(ctx).If(unchanged(nodeKey(name), rev)).
			Then(clientv3.OpPut(nodeKey(name), mustJSON(n)), auditPut(audit)).Commit()
		if err != nil {
			return nil, fmt.Errorf("update node %q: %w", name, err)
		}
		if resp.Succeeded {
			return n, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// UpdateNodeChecked is UpdateNode for a change checked against what is
// placed on the node: fn sees the node's allocation, and the allocation's
// revision is compared in the transaction, so a placement made meanwhile
// makes fn check again.
func (s *Store) UpdateNodeChecked(ctx context.Context, name string, fn func(*Node, Alloc) error, audit AuditEvent) (*Node, error) {
	for {
		n, rev, err := getJSON[Node](ctx, s.cli, nodeKey(name))
		if err == ErrNotFound {
			return nil, fmt.Errorf("node %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		al, arev, err := getJSON[Alloc](ctx, s.cli, allocKey(name))
		if err == ErrNotFound {
			al, arev = &Alloc{}, 0
		} else if err != nil {
			return nil, err
		}
		if err := fn(n, *al); err != nil {
			return nil, err
		}
		allocCmp := absent(allocKey(name))
		if arev != 0 {
			allocCmp = unchanged(allocKey(name), arev)
		}
		resp, err := s.cli.Txn(ctx).If(unchanged(nodeKey(name), rev), allocCmp).
			Then(clientv3.OpPut(nodeKey(name), mustJSON(n)), auditPut(audit)).Commit()
		if err != nil {
			return nil, fmt.Errorf("update node %q: %w", name, err)
		}
		if resp.Succeeded {
			return n, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// DecodeNodeState decodes a state record (KindNodeState).
func DecodeNodeState(b []byte) (*NodeState, error) {
	var st NodeState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// LiveSet is what the liveness pass needs of every node: its state and
// whether its agent holds a liveness lease. It is read once and then kept
// current from the watches of WatchLiveSet (Apply), so that a pass over a
// thousand nodes costs no read.
type LiveSet struct {
	// Rev is the revision the set reflects.
	Rev      int64
	declared map[string]bool
	states   map[string]NodeState
	alive    map[string]bool
}

// LiveNode is one node of a LiveSet.
type LiveNode struct {
	Name  string
	State NodeState
	Alive bool
}

// ReadLiveSet reads every node's state and liveness in one transaction.
func (s *Store) ReadLiveSet(ctx context.Context) (*LiveSet, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(prefixNodes, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(prefixState, clientv3.WithPrefix()),
		clientv3.OpGet(prefixAlive, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("list node states: %w", err)
	}
	l := &LiveSet{Rev: resp.Header.Revision, declared: map[string]bool{}, states: map[string]NodeState{}, alive: map[string]bool{}}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		l.declared[lastSegment(string(kv.Key))] = true
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		var st NodeState
		if err := json.Unmarshal(kv.Value, &st); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		l.states[lastSegment(string(kv.Key))] = st
	}
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		l.alive[lastSegment(string(kv.Key))] = true
	}
	return l, nil
}

// WatchLiveSet follows what a LiveSet holds from the revision after rev,
// for Apply: declared nodes, their states and liveness keys, on one
// channel. It closes after a batch with Err (see Watch), or when ctx ends.
func (s *Store) WatchLiveSet(ctx context.Context, rev int64) <-chan WatchBatch {
	ctx, cancel := context.WithCancel(ctx)
	out := make(chan WatchBatch)
	var wg sync.WaitGroup
	for _, k := range []Kind{KindNodes, kindStates, kindAlive} {
		wg.Go(func() {
			for b := range s.Watch(ctx, k, rev) {
				select {
				case out <- b:
				case <-ctx.Done():
					return
				}
				if b.Err != nil {
					cancel() // one lost watch ends them all: the caller reads afresh
					return
				}
			}
		})
	}
	go func() {
		wg.Wait()
		cancel()
		close(out)
	}()
	return out
}

// Apply brings the set up to date with one event of WatchLiveSet.
func (l *LiveSet) Apply(ev Event) error {
	key := ev.key
	name := lastSegment(key)
	put := !ev.Deleted
	switch {
	case strings.HasPrefix(key, prefixNodes):
		setOrDelete(l.declared, name, put)
	case strings.HasPrefix(key, prefixAlive):
		setOrDelete(l.alive, name, put)
	case strings.HasPrefix(key, prefixState):
		if !put {
			delete(l.states, name)
			break
		}
		var st NodeState
		if err := json.Unmarshal(ev.Value, &st); err != nil {
			return fmt.Errorf("decode %s: %w", key, err)
		}
		l.states[name] = st
	}
	l.Rev = max(l.Rev, ev.Rev)
	return nil
}

func setOrDelete(m map[string]bool, k string, set bool) {
	if set {
		m[k] = true
	} else {
		delete(m, k)
	}
}

// NoteStatus records a status just written, ahead of its watch event.
func (l *LiveSet) NoteStatus(name string, st NodeStatus, reason string, at time.Time) {
	if cur, ok := l.states[name]; ok {
		if cur.Status != st {
			cur.StatusChangedAt = at
		}
		cur.Status, cur.StatusReason = st, reason
		l.states[name] = cur
	}
}

// Nodes lists the declared nodes.
func (l *LiveSet) Nodes() []LiveNode {
	out := make([]LiveNode, 0, len(l.declared))
	for name := range l.declared {
		out = append(out, LiveNode{Name: name, State: l.states[name], Alive: l.alive[name]})
	}
	return out
}
