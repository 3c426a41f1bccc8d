package controlplane

import (
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
