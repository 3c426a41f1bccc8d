package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// GetCertificateRev reads one certificate with the revision it was last
// written at: a WatchCertificate from that revision misses no later write.
func (s *Store) GetCertificateRev(ctx context.Context, id string) (*Certificate, int64, error) {
	return getJSON[Certificate](ctx, s.cli, certKey(id))
}

// WatchCertificate follows certificate id's record (its key alone, not
// every certificate) from the revision after afterRev.
func (s *Store) WatchCertificate(ctx context.Context, id string, afterRev int64) <-chan WatchBatch {
	return s.Watch(ctx, Kind{label: "certificate " + id, prefix: certKey(id), exact: true}, afterRev)
}

// GetCertificates reads the certificates of the given ids (sites' domains)
// in one transaction per 100 ids, in the order given; ids without a
// certificate are skipped. A tenant's listing reads its own sites' keys
// this way instead of every certificate of the cluster.
func (s *Store) GetCertificates(ctx context.Context, ids []string) ([]*Certificate, error) {
	out := make([]*Certificate, 0, len(ids))
	// Chunks stay within etcd's default --max-txn-ops (128).
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 100)]
		ids = ids[len(chunk):]
		ops := make([]clientv3.Op, len(chunk))
		for i, id := range chunk {
			ops[i] = clientv3.OpGet(certKey(id))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read certificates: %w", err)
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				c, err := decodeJSON[Certificate](kv.Key, kv.Value)
				if err != nil {
					return nil, err
				}
				out = append(out, c)
			}
		}
	}
	return out, nil
}

// ListCertificatesAfter reads at most limit certificates (all with limit
// 0) with ids after after (from the start when it is ""), in id order;
// more reports whether any follow.
func (s *Store) ListCertificatesAfter(ctx context.Context, after string, limit int) (certs []Certificate, more bool, err error) {
	return pageJSON[Certificate](ctx, s.cli, prefixCerts, after, limit)
}
