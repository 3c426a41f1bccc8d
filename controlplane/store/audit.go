package store

import (
	"context"
	"fmt"
	"time"

	"github.com/oklog/ulid/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// AuditEvent records one mutation or one agent action: who did what to which
// object, from where, and how it ended. Events are append-only.
type AuditEvent struct {
	ID     string            `json:"id"`
	Time   time.Time         `json:"time"`
	Actor  string            `json:"actor"`  // user name, "node:<name>" or "system"
	Source string            `json:"source"` // remote address, or the replica for system actions
	Action string            `json:"action"` // e.g. "createJoinToken", "task.ping"
	Target string            `json:"target"`
	Result string            `json:"result"` // "ok", or the error code / message
	Detail map[string]string `json:"detail,omitempty"`
}

// NewAuditEvent fills the id and time.
func NewAuditEvent(actor, source, action, target, result string) AuditEvent {
	now := time.Now().UTC()
	return AuditEvent{
		ID:     ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String(),
		Time:   now,
		Actor:  actor,
		Source: source,
		Action: action,
		Target: target,
		Result: result,
	}
}

func auditPut(ev AuditEvent) clientv3.Op {
	if ev.ID == "" {
		ev = NewAuditEvent(ev.Actor, ev.Source, ev.Action, ev.Target, ev.Result)
	}
	return clientv3.OpPut(prefixAudit+ev.ID, mustJSON(ev))
}

// AppendAudit writes an event on its own, for outcomes that change nothing
// else (a refused request, a failed login).
func (s *Store) AppendAudit(ctx context.Context, ev AuditEvent) error {
	if _, err := s.cli.Txn(ctx).Then(auditPut(ev)).Commit(); err != nil {
		return fmt.Errorf("append audit event: %w", err)
	}
	return nil
}

// ListAudit returns up to limit events after the cursor (an event id), oldest first.
func (s *Store) ListAudit(ctx context.Context, after string, limit int) ([]AuditEvent, bool, error) {
	start := prefixAudit
	if after != "" {
		start = prefixAudit + after + "\x00"
	}
	out, _, err := listJSON[AuditEvent](ctx, s.cli, start,
		clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefixAudit)), clientv3.WithLimit(int64(limit+1)))
	if err != nil {
		return nil, false, err
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// AuditOp returns the operation that writes ev, for callers composing their
// own transaction.
func AuditOp(ev AuditEvent) clientv3.Op { return auditPut(ev) }
