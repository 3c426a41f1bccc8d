package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"

	"github.com/npanel/npanel/controlplane/clientip"
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

// AuditFilter selects audit events; zero fields match everything.
type AuditFilter struct {
	Actor, Action, Target string
	FailedOnly            bool
	Since                 time.Time
}

func (f AuditFilter) match(ev *AuditEvent) bool {
	return (f.Actor == "" || ev.Actor == f.Actor) &&
		(f.Action == "" || ev.Action == f.Action) &&
		(f.Target == "" || strings.Contains(ev.Target, f.Target)) &&
		(!f.FailedOnly || ev.Result != "ok") &&
		(f.Since.IsZero() || !ev.Time.Before(f.Since))
}

// auditScanLimit bounds how many events one filtered page may read, so a
// filter that matches little cannot make one request walk the whole log; the
// page then ends early with a cursor to continue from.
const auditScanLimit = 20_000

// ListAudit returns up to limit events matching f after the cursor (an event
// id), oldest first, the cursor to continue from, and whether there may be
// more.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter, after string, limit int) ([]AuditEvent, string, bool, error) {
	start := prefixAudit
	if after != "" {
		start = prefixAudit + after + "\x00"
	} else if !f.Since.IsZero() {
		// Ids are ULIDs: their first ten characters encode the time.
		start = prefixAudit + ulid.MustNew(ulid.Timestamp(f.Since), zeroEntropy{}).String()
	}
	var out []AuditEvent
	cursor := after
	for scanned := 0; scanned < auditScanLimit; {
		page, _, err := listJSON[AuditEvent](ctx, s.cli, start,
			clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefixAudit)), clientv3.WithLimit(1000))
		if err != nil {
			return nil, "", false, err
		}
		for i := range page {
			scanned++
			cursor = page[i].ID
			if f.match(&page[i]) {
				out = append(out, page[i])
				if len(out) == limit {
					return out, cursor, true, nil
				}
			}
		}
		if len(page) < 1000 {
			return out, cursor, false, nil
		}
		start = prefixAudit + cursor + "\x00"
	}
	return out, cursor, true, nil
}

type zeroEntropy struct{}

func (zeroEntropy) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Op is a write committed with a store update (UpdateAccount,
// UpdateNodeState, UpdateZone ...) in its transaction.
type Op struct{ op clientv3.Op }

// AuditOp writes ev with the update that it records.
func AuditOp(ev AuditEvent) Op { return Op{auditPut(ev)} }

func rawOps(extra []Op) []clientv3.Op {
	out := make([]clientv3.Op, len(extra))
	for i, o := range extra {
		out[i] = o.op
	}
	return out
}

// Refusal kinds RefusalAudit limits separately.
const (
	RefusedRead      = "refusedRead"      // another tenant's object, or an admin-only query
	RefusedToken     = "badToken"         // a bearer token that does not verify
	RefusedWebsocket = "refusedWebsocket" // an upgrade over the per-IP cap, or no sign-in in connection_init
	RefusedGET       = "getMutation"      // a mutation or subscription sent by GET
	RefusedMutation  = "refusedMutation"  // a tenant's mutation refused before it changed anything
)

// RefusalAudit writes audit events for refused requests that change
// nothing (a probe of another tenant's objects, a bad token) under a token
// bucket per client, kind and action and a global one, so that an attack
// cannot turn into a flood of etcd writes: what the buckets drop is counted
// (OnSuppressed), not written. The client is clientip.KeyOf(ev.Source), as
// for every per-client limit; the action is in the key so that a flood of
// one refusal does not hide a different one from the same client.
type RefusalAudit struct {
	st *Store
	// OnSuppressed, when set, counts an event not written, by kind.
	OnSuppressed func(kind string)
	// Per client, kind and action: a burst of PerSourceBurst, then one
	// every PerSourceEvery; over all: GlobalBurst, then GlobalPerSecond.
	PerSourceBurst  int
	PerSourceEvery  time.Duration
	GlobalBurst     int
	GlobalPerSecond float64

	mu     sync.Mutex
	per    map[string]*rate.Limiter
	global *rate.Limiter
}

// NewRefusalAudit returns a limiter writing through st with the defaults:
// 5 events per client, kind and action then one a minute, 50 overall then
// 5 a second.
func NewRefusalAudit(st *Store, onSuppressed func(kind string)) *RefusalAudit {
	return &RefusalAudit{st: st, OnSuppressed: onSuppressed, PerSourceBurst: 5, PerSourceEvery: time.Minute,
		GlobalBurst: 50, GlobalPerSecond: 5, per: map[string]*rate.Limiter{}}
}

// Record writes ev unless the bucket of its client, kind and action or the
// global one is empty. It reports whether it wrote.
func (a *RefusalAudit) Record(ctx context.Context, kind string, ev AuditEvent) bool {
	if !a.allow(refusalKey(kind, ev)) {
		if a.OnSuppressed != nil {
			a.OnSuppressed(kind)
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return a.st.AppendAudit(ctx, ev) == nil
}

// refusalKey names ev's bucket: its client, kind and action.
func refusalKey(kind string, ev AuditEvent) string {
	return kind + "\x00" + ev.Action + "\x00" + clientip.KeyOf(ev.Source)
}

func (a *RefusalAudit) allow(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.global == nil {
		a.global = rate.NewLimiter(rate.Limit(a.GlobalPerSecond), a.GlobalBurst)
	}
	l, ok := a.per[key]
	if !ok {
		if len(a.per) >= 100_000 {
			clear(a.per) // wider than the table: forget rather than grow; the global bucket still holds
		}
		l = rate.NewLimiter(rate.Every(a.PerSourceEvery), a.PerSourceBurst)
		a.per[key] = l
	}
	// The per-source token is spent only when the global one is there too,
	// so a source the global cap silenced is not also starved later.
	r := l.Reserve()
	if r.Delay() > 0 {
		r.Cancel()
		return false
	}
	if !a.global.Allow() {
		r.Cancel()
		return false
	}
	return true
}
