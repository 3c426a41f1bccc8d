// Package graph serves the control plane's GraphQL API: schema, resolvers
// and the mapping of errors to machine-readable codes.
package graph

import (
	"context"
	"log/slog"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/validate"
)

// Cluster is what the API needs from the running server beyond the store.
type Cluster interface {
	// NewJoinToken signs a one-time join token for node.
	NewJoinToken(node string, ttl time.Duration) (token string, expires time.Time, err error)
	// ReplicaID names this replica; LeaderID the one running controllers.
	ReplicaID() string
	LeaderID(ctx context.Context) (string, error)
	// ListAccounts returns a consistent page of accounts in id order.
	ListAccounts(ctx context.Context, f store.AccountFilter, after string, limit int) ([]*store.Account, bool, error)
	// AccountCounts counts accounts by status.
	AccountCounts(ctx context.Context) (map[store.AccountStatus]int, error)
	// ValidSelector checks a node selector's syntax.
	ValidSelector(sel string) error
	// ZoneTask is the task converging a zone just changed, to enqueue
	// with the change, or nil when the zone controller decides.
	ZoneTask(ctx context.Context, z *store.Zone) (*store.ZoneTask, error)
	// ZoneTaskQueued says that the zone's write at rev enqueued the task
	// ZoneTask gave.
	ZoneTaskQueued(zone string, rev int64)
	// FollowAccount subscribes user, on connection conn, to account id's
	// changes from the replica's one watch on accounts; it refuses with
	// ErrTooManySubscriptions over the caps.
	FollowAccount(id, user, conn string) (AccountFeed, error)
}

// Resolver is the root of every resolver; gqlgen regenerates the
// *.resolvers.go files around it.
type Resolver struct {
	Store   *store.Store
	Auth    *auth.Authenticator
	Cluster Cluster
	Log     *slog.Logger
	// AllowTestUsernames admits validate.TestUserPrefix names, for servers
	// started by integration tests only.
	AllowTestUsernames bool
}

// validUsername applies the account name rules, admitting test names when
// the server was started for tests.
func (r *Resolver) validUsername(s string) error {
	err := validate.Username(s)
	if err != nil && r.AllowTestUsernames && validate.TestUsername(s) == nil {
		return nil
	}
	return err
}
