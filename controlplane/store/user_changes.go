package store

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// deleteAPITokens adds the deletion of user's API tokens to t.
func (s *Store) deleteAPITokens(ctx context.Context, user string, t *txnBuilder) error {
	tokens, err := s.ListAPITokens(ctx, user)
	if err != nil {
		return err
	}
	for _, tok := range tokens {
		t.op(clientv3.OpDelete(apiTokenKey(tok.ID)))
	}
	return nil
}

// DeleteUser deletes a login and its API tokens after check approves it.
func (s *Store) DeleteUser(ctx context.Context, name string, check func(*User) error, audit AuditEvent) error {
	for attempt := 0; attempt < maxChangeRetries; attempt++ {
		u, rev, err := getJSON[User](ctx, s.cli, userKey(name))
		if err == ErrNotFound {
			return fmt.Errorf("user %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if err := check(u); err != nil {
			return err
		}
		t := &txnBuilder{}
		t.cmp(unchanged(userKey(name), rev))
		t.op(clientv3.OpDelete(userKey(name)), auditPut(audit))
		if err := s.deleteAPITokens(ctx, name, t); err != nil {
			return err
		}
		ok, err := s.commitChange(ctx, fmt.Sprintf("delete user %q", name), t)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("delete user %q: kept conflicting with other changes: %w", name, ErrConflict)
}
