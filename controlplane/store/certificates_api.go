package store

import "context"

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
