package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// ServiceStatus is one daemon a node's agent manages, as the agent reported
// it (WHM's Service Status, per node).
type ServiceStatus struct {
	Name     string    `json:"name"`
	State    string    `json:"state"` // running, stopped, failed
	Version  string    `json:"version,omitempty"`
	Listen   []string  `json:"listen,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	Error    string    `json:"error,omitempty"`
	Restarts int       `json:"restarts,omitempty"`
}

// NodeServices is a node's last service report. It lives under its own key
// because it changes whenever a daemon does, independently of the facts and
// certificate serials in NodeState.
type NodeServices struct {
	Node       string          `json:"node"`
	ReportedAt time.Time       `json:"reportedAt"`
	Services   []ServiceStatus `json:"services"`
}

func servicesKey(node string) string { return prefixServices + node }

// PutServices stores a node's service report, replacing the previous one.
// The node must still be declared: a report racing the node's removal must
// not leave an orphan behind.
func (s *Store) PutServices(ctx context.Context, r NodeServices) error {
	resp, err := s.cli.Txn(ctx).If(present(nodeKey(r.Node))).
		Then(clientv3.OpPut(servicesKey(r.Node), mustJSON(r))).Commit()
	if err != nil {
		return fmt.Errorf("store services of %q: %w", r.Node, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("node %q: %w", r.Node, ErrNotFound)
	}
	return nil
}

// GetServices returns a node's last service report; a node that never
// reported has an empty one.
func (s *Store) GetServices(ctx context.Context, node string) (*NodeServices, error) {
	r, _, err := getJSON[NodeServices](ctx, s.cli, servicesKey(node))
	if err == ErrNotFound {
		return &NodeServices{Node: node}, nil
	}
	return r, err
}

// CachedServices is GetServices answered from the replica's mirror of
// service reports when it holds the node's (see mirror). The DNS
// controller looks up every DNS node's report each time it lists the DNS
// servers: read from etcd, a cluster of a thousand DNS nodes costs
// hundreds of reads a second. Reports change only when a daemon does. The
// result is shared: read it, never change it.
func (s *Store) CachedServices(ctx context.Context, node string) (*NodeServices, error) {
	if r, _, ok := s.services.get(node); ok {
		return r, nil
	}
	return s.GetServices(ctx, node)
}
