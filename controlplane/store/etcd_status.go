package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdMember is one member of the etcd cluster and what it answered about
// itself. Healthy is false, with Error set, when it did not answer within
// the timeout or reported errors (alarms, a raft error).
type EtcdMember struct {
	ID          string
	Name        string
	PeerURLs    []string
	ClientURLs  []string
	Learner     bool
	Healthy     bool
	Leader      bool
	DBSizeBytes int64
	Version     string
	Error       string
}

// EtcdMembers lists the etcd cluster's members with each one's status,
// asked of the member itself at its first client URL, each within timeout:
// a member down or partitioned away shows as unhealthy instead of holding
// up the answer.
func (s *Store) EtcdMembers(ctx context.Context, timeout time.Duration) ([]EtcdMember, error) {
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Serializable: a cluster that lost quorum still lists its members,
	// which is when an operator needs to see which are down.
	resp, err := s.cli.MemberList(lctx, clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("etcd member list: %w", err)
	}
	out := make([]EtcdMember, len(resp.Members))
	var wg sync.WaitGroup
	for i, m := range resp.Members {
		out[i] = EtcdMember{
			ID:         strconv.FormatUint(m.ID, 16),
			Name:       m.Name,
			PeerURLs:   m.PeerURLs,
			ClientURLs: m.ClientURLs,
			Learner:    m.IsLearner,
		}
		if len(m.ClientURLs) == 0 {
			// Added with "etcdctl member add" but never started.
			out[i].Error = "member not started: no client URL"
			continue
		}
		wg.Add(1)
		go func(e *EtcdMember, id uint64, endpoint string) {
			defer wg.Done()
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := s.cli.Status(sctx, endpoint)
			if err != nil {
				if errors.Is(sctx.Err(), context.DeadlineExceeded) {
					err = fmt.Errorf("no answer from %s within %s", endpoint, timeout)
				}
				e.Error = err.Error()
				return
			}
			e.DBSizeBytes, e.Version = st.DbSize, st.Version
			e.Leader = st.Leader == id
			if len(st.Errors) > 0 {
				e.Error = strings.Join(st.Errors, "; ")
				return
			}
			if st.Leader == 0 {
				// Answers, but cut off from a quorum: it serves no writes.
				e.Error = "no raft leader"
				return
			}
			e.Healthy = true
		}(&out[i], m.ID, m.ClientURLs[0])
	}
	wg.Wait()
	return out, nil
}

// Snapshot streams a snapshot of the etcd keyspace from the member the
// client is connected to: the bbolt database followed by its SHA-256, the
// format "etcdutl snapshot restore" reads and checks.
func (s *Store) Snapshot(ctx context.Context) (io.ReadCloser, error) {
	rc, err := s.cli.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd snapshot: %w", err)
	}
	return rc, nil
}
