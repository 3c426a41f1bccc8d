// Package graph serves the control plane's GraphQL API: schema, resolvers
// and the mapping of errors to machine-readable codes.
package graph

import (
	"context"
	"log/slog"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/validate"
)

// Cluster is what the API needs from the running server beyond the store.
type Cluster interface {
	// NewJoinToken signs a one-time join token for node.
	// hosts (the node's address) become the IP and DNS SANs of the node's
	// certificate.
	NewJoinToken(node string, hosts []string, ttl time.Duration) (token string, expires time.Time, err error)
	// ReplicaID names this replica; LeaderID the one running controllers.
	ReplicaID() string
	LeaderID(ctx context.Context) (string, error)
	// EmbeddedEtcd reports whether etcd runs inside this replica.
	EmbeddedEtcd() bool
	// ListAccounts returns a consistent page of accounts in id order.
	ListAccounts(ctx context.Context, f store.AccountFilter, after string, limit int) ([]*store.Account, bool, error)
	// AccountCounts counts accounts by status.
	AccountCounts(ctx context.Context) (map[store.AccountStatus]int, error)
	// ValidSelector checks a node selector's syntax.
	ValidSelector(sel string) error
	// FollowAccount subscribes user, on websocket conn (connID; "": none,
	// held to the user's cap alone), to account id's changes from the
	// replica's one watch on accounts; it refuses with
	// ErrTooManySubscriptions over the caps.
	FollowAccount(id, user, conn string) (AccountFeed, error)
}

// ZoneWriter commits the API's changes to a zone's desired state; the zone
// controller behind it may start serving the change in the same
// transaction.
type ZoneWriter interface {
	// ChangeZone applies fn to the zone and commits the result with audit,
	// again from a fresh read when the zone changed meanwhile; fn's error
	// aborts and writes nothing.
	ChangeZone(ctx context.Context, name string, audit store.AuditEvent, fn func(*store.Zone) error) (*store.Zone, error)
}

// Resolver is the root of every resolver; gqlgen regenerates the
// *.resolvers.go files around it.
type Resolver struct {
	Store   *store.Store
	Auth    *auth.Authenticator
	Cluster Cluster
	Zones   ZoneWriter
	Log     *slog.Logger
	// KEK seals secrets the API stores (backup targets' S3 keys).
	KEK *pki.KEK
	// AllowTestUsernames admits validate.TestUserPrefix names, for servers
	// started by integration tests only.
	AllowTestUsernames bool
	// PublicIntrospection lets anonymous callers introspect the schema.
	PublicIntrospection bool
	// MaxWebsocketsPerIP caps the websockets open from one client IP
	// (0: DefaultMaxWebsocketsPerIP).
	MaxWebsocketsPerIP int
	// Refusals audits refused requests under a rate limit; nil: not audited.
	Refusals *store.RefusalAudit

	logReads logReadGate
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

// revokeSessions raises user's session generation: every login token it
// holds is refused from the next request on.
func (r *Resolver) revokeSessions(ctx context.Context, p auth.Principal, action, user string) error {
	_, err := r.Store.UpdateUser(ctx, user, true, func(*store.User) error { return nil },
		store.NewAuditEvent(p.Name, source(ctx), action, user, "ok"))
	return err
}

// refuse audits a request refused before it could change anything, under
// the refusal rate limit.
func (r *Resolver) refuse(ctx context.Context, kind, action, target, result string) {
	if r.Refusals == nil {
		return
	}
	actor := "anonymous"
	if p, ok := auth.FromContext(ctx); ok {
		actor = p.Name
	}
	r.Refusals.Record(ctx, kind, store.NewAuditEvent(actor, source(ctx), action, target, result))
}

// refusedRead audits, under the refusal rate limit, a read refused for
// another tenant's object or a role's rights. Each refusal is audited
// once: where a resolver hides another tenant's object as NOT_FOUND (only
// there is it told from a genuine NOT_FOUND, which is not audited), or by
// ErrorPresenter for FORBIDDEN. Mutations audit their refusals in
// auditFailure.
func (r *Resolver) refusedRead(ctx context.Context, what, target, code string) {
	if graphql.HasOperationContext(ctx) && graphql.GetOperationContext(ctx).Operation != nil &&
		graphql.GetOperationContext(ctx).Operation.Operation == ast.Mutation {
		return
	}
	r.refuse(ctx, store.RefusedRead, "read."+what, target, code)
}
