// Package graph serves the control plane's GraphQL API: schema, resolvers
// and the mapping of errors to machine-readable codes.
package graph

import (
	"context"
	"log/slog"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
)

// Cluster is what the API needs from the running server beyond the store.
type Cluster interface {
	// NewJoinToken signs a one-time join token for node.
	NewJoinToken(node string, ttl time.Duration) (token string, expires time.Time, err error)
	// ReplicaID names this replica; LeaderID the one running controllers.
	ReplicaID() string
	LeaderID(ctx context.Context) (string, error)
}

// Resolver is the root of every resolver; gqlgen regenerates the
// *.resolvers.go files around it.
type Resolver struct {
	Store   *store.Store
	Auth    *auth.Authenticator
	Cluster Cluster
	Log     *slog.Logger
}
