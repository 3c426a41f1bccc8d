package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// APIToken is a long-lived bearer credential for automation. Only a hash of
// its secret is stored: a copy of etcd does not yield usable tokens.
type APIToken struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	User       string    `json:"user"`
	SecretHash []byte    `json:"secretHash"` // SHA-256 of the secret
	ExpiresAt  time.Time `json:"expiresAt,omitzero"`
	CreatedAt  time.Time `json:"createdAt"`
	// UserCreatedAt is when the token's user was created: a token left
	// behind by a deleted user never signs in a new user of the same name.
	// Zero in tokens from before it was recorded.
	UserCreatedAt time.Time `json:"userCreatedAt,omitzero"`
}

func apiTokenKey(id string) string { return prefixTokensAPI + id }

// CreateAPIToken stores t, bound to its user as it is now.
func (s *Store) CreateAPIToken(ctx context.Context, t APIToken, audit AuditEvent) error {
	u, rev, err := getJSON[User](ctx, s.cli, userKey(t.User))
	if err == ErrNotFound {
		return fmt.Errorf("create API token: user %q: %w", t.User, ErrNotFound)
	}
	if err != nil {
		return err
	}
	t.UserCreatedAt = u.CreatedAt
	resp, err := s.cli.Txn(ctx).If(absent(apiTokenKey(t.ID)), unchanged(userKey(t.User), rev)).
		Then(clientv3.OpPut(apiTokenKey(t.ID), mustJSON(t)), auditPut(audit)).Commit()
	if err != nil {
		return fmt.Errorf("create API token: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("create API token: %w", ErrConflict)
	}
	return nil
}

// GetAPIToken returns one token record.
func (s *Store) GetAPIToken(ctx context.Context, id string) (*APIToken, error) {
	t, _, err := getJSON[APIToken](ctx, s.cli, apiTokenKey(id))
	if err == ErrNotFound {
		return nil, fmt.Errorf("API token %q: %w", id, ErrNotFound)
	}
	return t, err
}

// ListAPITokens returns the tokens of user ("" for all).
func (s *Store) ListAPITokens(ctx context.Context, user string) ([]APIToken, error) {
	all, _, err := listJSON[APIToken](ctx, s.cli, prefixTokensAPI)
	if err != nil || user == "" {
		return all, err
	}
	out := all[:0]
	for _, t := range all {
		if t.User == user {
			out = append(out, t)
		}
	}
	return out, nil
}

// RevokeAPIToken deletes a token; it stops working on the next request.
func (s *Store) RevokeAPIToken(ctx context.Context, id string, audit AuditEvent) error {
	resp, err := s.cli.Txn(ctx).If(present(apiTokenKey(id))).
		Then(clientv3.OpDelete(apiTokenKey(id)), auditPut(audit)).Commit()
	if err != nil {
		return fmt.Errorf("revoke API token: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("API token %q: %w", id, ErrNotFound)
	}
	return nil
}
