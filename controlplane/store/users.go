package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Role is what a user may do. Issue-level RBAC builds on these three.
type Role string

const (
	RoleAdmin    Role = "admin"
	RoleReseller Role = "reseller"
	RoleUser     Role = "user"
)

// User is a person or automation that signs in to the API.
type User struct {
	Name         string `json:"name"`
	Role         Role   `json:"role"`
	PasswordHash string `json:"passwordHash"` // bcrypt
	// Owner is who manages this user: the reseller or admin that created it.
	Owner string `json:"owner,omitempty"`
	// Account is the account a user-role login may act on.
	Account   string    `json:"account,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	// Generation is the user's session generation, carried in its login
	// tokens: raising it voids every login token issued before (logout,
	// revokeSessions, a new password or role). See UpdateUser.
	Generation int64 `json:"generation,omitempty"`
}

// ListUsers returns every user, by name.
func (s *Store) ListUsers(ctx context.Context) ([]User, error) {
	out, _, err := listJSON[User](ctx, s.cli, prefixUsers)
	return out, err
}

func userKey(name string) string { return prefixUsers + name }

// CreateUser writes u if no user of that name exists.
func (s *Store) CreateUser(ctx context.Context, u User, audit AuditEvent) error {
	u.Generation = firstGeneration(u.Generation)
	resp, err := s.cli.Txn(ctx).If(absent(userKey(u.Name))).
		Then(clientv3.OpPut(userKey(u.Name), mustJSON(u)), auditPut(audit)).Commit()
	if err != nil {
		return fmt.Errorf("create user %q: %w", u.Name, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("user %q exists: %w", u.Name, ErrConflict)
	}
	return nil
}

// firstGeneration starts a new user's session generation at the clock, not
// at 0: a login token of a deleted user of the same name carries a smaller
// generation and is refused, not taken for the new user's.
func firstGeneration(g int64) int64 {
	if g != 0 {
		return g
	}
	return time.Now().UnixNano()
}

// GetUser returns a user.
func (s *Store) GetUser(ctx context.Context, name string) (*User, error) {
	u, _, err := getJSON[User](ctx, s.cli, userKey(name))
	if err == ErrNotFound {
		return nil, fmt.Errorf("user %q: %w", name, ErrNotFound)
	}
	return u, err
}

// UpdateUser applies change to the user in a compare-and-swap loop and
// writes it with audit in one transaction. A change of password or role
// raises the session generation as well, so no token issued for the old
// password or role outlives the change; revoke (logout, revokeSessions)
// raises it on its own.
func (s *Store) UpdateUser(ctx context.Context, name string, revoke bool, change func(*User) error, audit AuditEvent) (*User, error) {
	key := userKey(name)
	for {
		u, rev, err := getJSON[User](ctx, s.cli, key)
		if err == ErrNotFound {
			return nil, fmt.Errorf("user %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		before := *u
		if err := change(u); err != nil {
			return nil, err
		}
		if revoke || u.PasswordHash != before.PasswordHash || u.Role != before.Role {
			u.Generation = before.Generation + 1
		}
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, mustJSON(u)), auditPut(audit)).Commit()
		if err != nil {
			return nil, fmt.Errorf("update user %q: %w", name, err)
		}
		if resp.Succeeded {
			s.awaitUserMirror(ctx, name, resp.Header.Revision)
			return u, nil
		}
	}
}

// BindUser binds the USER login name to the account id, with the account's
// owner as the login's owner. The account is read in the same loop and
// compared: an account given to another owner meanwhile is seen by check
// (which may refuse) and never leaves the login with the old owner. The
// login's sessions end: what its tokens may do changed.
func (s *Store) BindUser(ctx context.Context, name, id string, check func(*User, *Account) error, audit AuditEvent) (*User, error) {
	key := userKey(name)
	for {
		u, rev, err := getJSON[User](ctx, s.cli, key)
		if err == ErrNotFound {
			return nil, fmt.Errorf("user %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return nil, err
		}
		a, arev, err := s.GetAccount(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := check(u, a); err != nil {
			return nil, err
		}
		if u.Account != a.ID {
			u.Generation++
		}
		u.Account, u.Owner = a.ID, a.Owner
		resp, err := s.cli.Txn(ctx).If(unchanged(key, rev), unchanged(accountKey(id), arev)).
			Then(clientv3.OpPut(key, mustJSON(u)), auditPut(audit)).Commit()
		if err != nil {
			return nil, fmt.Errorf("update user %q: %w", name, err)
		}
		if resp.Succeeded {
			s.awaitUserMirror(ctx, name, resp.Header.Revision)
			return u, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// awaitUserMirror waits, briefly, until this replica's mirror of users has
// seen rev, so that a revocation holds on this replica from the caller's
// next request (other replicas follow within their watch's lag).
func (s *Store) awaitUserMirror(ctx context.Context, name string, rev int64) {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, r, ok := s.users.get(name); !ok || r >= rev {
			return // not mirrored (read from etcd) or up to date
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// CachedUser is GetUser answered from the replica's mirror of users when
// it holds the user (see mirror), for the check of every request's caller.
// The user may lag its record by milliseconds; a user not (yet) mirrored
// is read from etcd. The result is shared: read it, never change it.
func (s *Store) CachedUser(ctx context.Context, name string) (*User, error) {
	if u, _, ok := s.users.get(name); ok {
		return u, nil
	}
	return s.GetUser(ctx, name)
}

// UseJoinToken records that the join token with this id was used. It fails
// with ErrConflict if it was used before, on any replica: the create-if-absent
// transaction is what makes a token single-use cluster-wide. The record lives
// until the token would have expired anyway, plus a margin for clock skew.
func (s *Store) UseJoinToken(ctx context.Context, id, node string, expires time.Time) error {
	ttl := int64(time.Until(expires)/time.Second) + 3600
	lease, err := s.cli.Grant(ctx, ttl)
	if err != nil {
		return fmt.Errorf("use join token: %w", err)
	}
	key := prefixTokens + id
	resp, err := s.cli.Txn(ctx).If(absent(key)).
		Then(clientv3.OpPut(key, node, clientv3.WithLease(lease.ID))).Commit()
	if err != nil {
		return fmt.Errorf("use join token: %w", err)
	}
	if !resp.Succeeded {
		_, _ = s.cli.Revoke(ctx, lease.ID)
		return fmt.Errorf("join token already used: %w", ErrConflict)
	}
	return nil
}
