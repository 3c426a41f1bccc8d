package controlplane

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/npanel/npanel/controlplane/store"
)

// SecretsForTest exposes the cluster secrets this replica loaded, for the
// tests that look for them in etcd's files.
func (s *Server) SecretsForTest() *store.Secrets { return s.sec }

// GossipAddrForTest is the memberlist's bound address, one of the few
// listeners a replica may have.
func (s *Server) GossipAddrForTest() string { return s.gossip.addr() }

// Subscriptions counts the replica's live accountEvents subscriptions.
func (s *Server) Subscriptions() int { return s.accounts.hub.count() }

// RegistryForTest is the replica's own metrics registry (not etcd's, which
// is prometheus.DefaultRegisterer).
func (s *Server) RegistryForTest() *prometheus.Registry { return s.metrics.reg }

// MoveFetchClockForTest moves the cPanel fetch controller's clock by d
// until the test ends.
func MoveFetchClockForTest(t interface{ Cleanup(func()) }, d time.Duration) {
	fetchSkew.Store(int64(d))
	t.Cleanup(func() { fetchSkew.Store(0) })
}
