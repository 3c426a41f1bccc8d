package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/pki"
)

// Secrets are cluster-wide symmetric keys, created once at first start and
// shared by every replica.
type Secrets struct {
	ClusterID string `json:"clusterId"`
	// TokenKey signs API bearer tokens (HMAC).
	TokenKey []byte `json:"tokenKey"`
	// GossipKey encrypts the memberlist pool (AES-256).
	GossipKey []byte `json:"gossipKey"`
}

// Bootstrap returns the cluster's CA material and secrets, creating them from
// the generators when this is the first start of the first replica. Several
// replicas starting at once race on a create-if-absent transaction: exactly
// one set wins and every replica returns that one.
func (s *Store) Bootstrap(ctx context.Context, newCA func() (*pki.Material, error), newSecrets func() (*Secrets, error)) (*pki.Material, *Secrets, error) {
	resp, err := s.cli.Get(ctx, keyCA)
	if err != nil {
		return nil, nil, fmt.Errorf("read cluster CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		m, err := newCA()
		if err != nil {
			return nil, nil, err
		}
		sec, err := newSecrets()
		if err != nil {
			return nil, nil, err
		}
		_, err = s.cli.Txn(ctx).
			If(absent(keyCA), absent(keySecrets)).
			Then(clientv3.OpPut(keyCA, mustJSON(m)), clientv3.OpPut(keySecrets, mustJSON(sec))).
			Commit()
		if err != nil {
			return nil, nil, fmt.Errorf("create cluster CA: %w", err)
		}
	}
	m, _, err := getJSON[pki.Material](ctx, s.cli, keyCA)
	if err != nil {
		return nil, nil, fmt.Errorf("read cluster CA: %w", err)
	}
	sec, _, err := getJSON[Secrets](ctx, s.cli, keySecrets)
	if err != nil {
		return nil, nil, fmt.Errorf("read cluster secrets: %w", err)
	}
	return m, sec, nil
}

// Replica is a running server replica, registered under its session lease so
// that it disappears when the replica dies.
type Replica struct {
	ID         string `json:"id"`
	APIAddr    string `json:"apiAddr"`
	AgentAddr  string `json:"agentAddr"`
	GossipAddr string `json:"gossipAddr,omitempty"`
}

// RegisterReplica records r under lease.
func (s *Store) RegisterReplica(ctx context.Context, r Replica, lease clientv3.LeaseID) error {
	_, err := s.cli.Put(ctx, PrefixReplicas+r.ID, mustJSON(r), clientv3.WithLease(lease))
	if err != nil {
		return fmt.Errorf("register replica %s: %w", r.ID, err)
	}
	return nil
}

// Replicas lists the live server replicas.
func (s *Store) Replicas(ctx context.Context) ([]Replica, error) {
	out, _, err := listJSON[Replica](ctx, s.cli, PrefixReplicas)
	return out, err
}

// DecodeReplica decodes a replica record from a watch event.
func DecodeReplica(b []byte) (Replica, error) {
	var r Replica
	err := json.Unmarshal(b, &r)
	return r, err
}
