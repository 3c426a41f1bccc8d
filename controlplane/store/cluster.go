package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/pki/ca"
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

// sealedRecord is how the CA material and the cluster secrets are stored:
// their JSON sealed under the replicas' key-encryption key, with the etcd
// key as additional data. Records written before sealing existed hold the
// clear JSON, which has no "sealed" field.
type sealedRecord struct {
	Sealed *pki.Sealed `json:"sealed,omitempty"`
}

// ClusterKEK reports whether the cluster's CA exists in etcd and, when its
// record is sealed, the id of the key-encryption key that sealed it (empty
// for a clear record written before sealing).
func (s *Store) ClusterKEK(ctx context.Context) (exists bool, kekID string, err error) {
	resp, err := s.cli.Get(ctx, keyCA)
	if err != nil {
		return false, "", fmt.Errorf("read cluster CA: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return false, "", nil
	}
	var rec sealedRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return true, "", fmt.Errorf("decode %s: %w", keyCA, err)
	}
	if rec.Sealed == nil {
		return true, "", nil
	}
	return true, rec.Sealed.KEK, nil
}

// Bootstrap returns the cluster's CA material and secrets, creating them from
// the generators when this is the first start of the first replica. Several
// replicas starting at once race on a create-if-absent transaction: exactly
// one set wins and every replica returns that one. Both records are sealed
// under kek; records a release before sealing wrote in the clear are sealed
// and rewritten here, in a transaction that fails if another replica got
// there first (then the sealed records are read again). migrated says this
// call sealed them.
func (s *Store) Bootstrap(ctx context.Context, kek *pki.KEK, newCA func() (*ca.Material, error), newSecrets func() (*Secrets, error)) (_ *ca.Material, _ *Secrets, migrated bool, _ error) {
	resp, err := s.cli.Get(ctx, keyCA, clientv3.WithCountOnly())
	if err != nil {
		return nil, nil, false, fmt.Errorf("read cluster CA: %w", err)
	}
	if resp.Count == 0 {
		m, err := newCA()
		if err != nil {
			return nil, nil, false, err
		}
		sec, err := newSecrets()
		if err != nil {
			return nil, nil, false, err
		}
		puts, err := sealBoth(kek, m, sec)
		if err != nil {
			return nil, nil, false, err
		}
		_, err = s.cli.Txn(ctx).If(absent(keyCA), absent(keySecrets)).Then(puts...).Commit()
		if err != nil {
			return nil, nil, false, fmt.Errorf("create cluster CA: %w", err)
		}
	}
	for range 5 {
		// One transaction reads both records at one revision.
		tr, err := s.cli.Txn(ctx).Then(clientv3.OpGet(keyCA), clientv3.OpGet(keySecrets)).Commit()
		if err != nil {
			return nil, nil, false, fmt.Errorf("read cluster CA: %w", err)
		}
		caKV, secKV := tr.Responses[0].GetResponseRange().Kvs, tr.Responses[1].GetResponseRange().Kvs
		if len(caKV) == 0 || len(secKV) == 0 {
			return nil, nil, false, fmt.Errorf("cluster CA or secrets missing from etcd (%s, %s)", keyCA, keySecrets)
		}
		m, mClear, err := openJSON[ca.Material](kek, keyCA, caKV[0].Value)
		if err != nil {
			return nil, nil, false, err
		}
		sec, sClear, err := openJSON[Secrets](kek, keySecrets, secKV[0].Value)
		if err != nil {
			return nil, nil, false, err
		}
		if !mClear && !sClear {
			return m, sec, migrated, nil
		}
		puts, err := sealBoth(kek, m, sec)
		if err != nil {
			return nil, nil, false, err
		}
		cr, err := s.cli.Txn(ctx).
			If(unchanged(keyCA, caKV[0].ModRevision), unchanged(keySecrets, secKV[0].ModRevision)).
			Then(puts...).
			Commit()
		if err != nil {
			return nil, nil, false, fmt.Errorf("seal cluster CA: %w", err)
		}
		if cr.Succeeded {
			return m, sec, true, nil
		}
		// Another replica sealed them first: read its records.
	}
	return nil, nil, false, fmt.Errorf("seal cluster CA: the records kept changing under this replica")
}

// CompactAll drops every revision but the current one, physically, so
// that values since replaced leave the keyspace.
func (s *Store) CompactAll(ctx context.Context) error {
	resp, err := s.cli.Get(ctx, keySecrets, clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if _, err := s.cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	return nil
}

// sealBoth returns the puts of the CA material and the secrets, sealed.
func sealBoth(kek *pki.KEK, m *ca.Material, sec *Secrets) ([]clientv3.Op, error) {
	sm, err := sealJSON(kek, keyCA, m)
	if err != nil {
		return nil, err
	}
	ss, err := sealJSON(kek, keySecrets, sec)
	if err != nil {
		return nil, err
	}
	return []clientv3.Op{clientv3.OpPut(keyCA, sm), clientv3.OpPut(keySecrets, ss)}, nil
}

// sealJSON returns v's JSON sealed under kek for the etcd key name.
func sealJSON(kek *pki.KEK, name string, v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", name, err)
	}
	sealed, err := kek.Seal(name, b)
	if err != nil {
		return "", fmt.Errorf("seal %s: %w", name, err)
	}
	return mustJSON(sealedRecord{Sealed: sealed}), nil
}

// openJSON decodes the record stored at name, opening it under kek; clear
// is true for a record written before sealing. Errors never quote the
// value: it holds keys.
func openJSON[T any](kek *pki.KEK, name string, value []byte) (_ *T, clear bool, _ error) {
	var rec sealedRecord
	if err := json.Unmarshal(value, &rec); err != nil {
		return nil, false, fmt.Errorf("decode %s: %w", name, err)
	}
	plain := value
	if rec.Sealed != nil {
		var err error
		if plain, err = kek.Open(name, rec.Sealed); err != nil {
			return nil, false, err
		}
	}
	var v T
	if err := json.Unmarshal(plain, &v); err != nil {
		return nil, false, fmt.Errorf("decode %s: %w", name, err)
	}
	return &v, rec.Sealed == nil, nil
}

// Replica is a running server replica, registered under its session lease so
// that it disappears when the replica dies.
type Replica struct {
	ID         string `json:"id"`
	APIAddr    string `json:"apiAddr"`
	AgentAddr  string `json:"agentAddr"`
	GossipAddr string `json:"gossipAddr,omitempty"`
	// Version is the replica's build; empty for replicas older than it.
	Version string `json:"version,omitempty"`
}

// Replicas lists the live server replicas.
func (s *Store) Replicas(ctx context.Context) ([]Replica, error) {
	out, _, err := listJSON[Replica](ctx, s.cli, prefixReplicas)
	return out, err
}

// DecodeReplica decodes a replica record from a watch event.
func DecodeReplica(b []byte) (Replica, error) {
	var r Replica
	err := json.Unmarshal(b, &r)
	return r, err
}
