package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// AccountStatus is where an account is in its lifecycle:
//
//	PENDING → SCHEDULED → PROVISIONING → ACTIVE ⇄ SUSPENDED
//	any → DELETING → (gone);  any step may end in FAILED with a reason.
type AccountStatus string

const (
	AccountPending      AccountStatus = "PENDING"
	AccountScheduled    AccountStatus = "SCHEDULED"
	AccountProvisioning AccountStatus = "PROVISIONING"
	AccountActive       AccountStatus = "ACTIVE"
	AccountSuspended    AccountStatus = "SUSPENDED"
	AccountDeleting     AccountStatus = "DELETING"
	AccountFailed       AccountStatus = "FAILED"
	// AccountDeleted is never stored: it is the last event a subscriber
	// sees, when the record goes away.
	AccountDeleted AccountStatus = "DELETED"
)

// maxEvents bounds the transitions kept in the record; the audit log keeps
// the full history.
const maxEvents = 20

// AccountEvent is one lifecycle transition.
type AccountEvent struct {
	// Seq numbers an account's events, so a follower can tell which it has
	// seen even when several share a timestamp (one batch, two transitions).
	Seq    int64         `json:"seq"`
	At     time.Time     `json:"at"`
	Status AccountStatus `json:"status"`
	Reason string        `json:"reason,omitempty"`
}

// Account is a hosting account: the desired spec the API writes and the
// observed status the controller writes, in one record so that a change of
// either is one compare-and-swap.
type Account struct {
	ID       string `json:"id"`
	Username string `json:"username"`
	Domain   string `json:"domain"`
	Plan     string `json:"plan"`
	Owner    string `json:"owner"`
	// Placement inputs, fixed at creation.
	DiskMB     int64    `json:"diskMB"`
	Roles      []string `json:"roles"`
	Selector   string   `json:"selector,omitempty"`
	PinnedNode string   `json:"pinnedNode,omitempty"`

	// Desired state. Generation counts spec changes; the node reports the
	// generation it applied, so a stale result never overwrites a newer spec.
	Suspended  bool  `json:"suspended,omitempty"`
	Deleted    bool  `json:"deleted,omitempty"`
	Generation int64 `json:"generation"`
	// Migrating names the migration whose cutover holds the account: its
	// controller sends nothing to the node meanwhile (the migration
	// suspended it there for the final copy and switches it over).
	Migrating string `json:"migrating,omitempty"`
	// PlanGeneration is the plan's generation the spec was last built
	// from (UpdatePlan, ChangeAccountPlan); 0 for an account created before
	// plans changed.
	PlanGeneration int64 `json:"planGeneration,omitempty"`
	// PHPVersion is the PHP line new sites get: the plan's first.
	PHPVersion string `json:"phpVersion,omitempty"`
	// Sites are the domains the account serves, primary first.
	Sites []Site `json:"sites,omitempty"`

	// Observed state.
	Node   string        `json:"node,omitempty"`
	Status AccountStatus `json:"status"`
	Reason string        `json:"reason,omitempty"`
	// ReasonDetail is Reason with what only operators may see (the labels
	// of nodes outside the owner's pool); empty when it says no more.
	ReasonDetail      string         `json:"reasonDetail,omitempty"`
	AppliedGeneration int64          `json:"appliedGeneration,omitempty"`
	TaskID            string         `json:"taskId,omitempty"`
	Attempts          int            `json:"attempts,omitempty"`
	Events            []AccountEvent `json:"events,omitempty"`
	EventSeq          int64          `json:"eventSeq,omitempty"`
	CreatedAt         time.Time      `json:"createdAt"`
	UpdatedAt         time.Time      `json:"updatedAt"`
}

// SetStatus records a transition (no-op when nothing changes).
func (a *Account) SetStatus(st AccountStatus, reason string, now time.Time) {
	if a.Status == st && a.Reason == reason {
		return
	}
	a.Status, a.Reason, a.ReasonDetail, a.UpdatedAt = st, reason, "", now
	a.EventSeq++
	a.Events = append(a.Events, AccountEvent{Seq: a.EventSeq, At: now, Status: st, Reason: reason})
	if n := len(a.Events); n > maxEvents {
		a.Events = append([]AccountEvent(nil), a.Events[n-maxEvents:]...)
	}
}

func accountKey(id string) string          { return prefixAccounts + id }
func userNameKey(username string) string   { return prefixNames + "user/" + username }
func domainNameKey(domain string) string   { return prefixNames + "domain/" + domain }
func allocKey(node string) string          { return prefixAlloc + node }
func doneKey(kind, id, task string) string { return prefixDone + kind + "/" + id + "/" + task }

// NewAccountID returns a time-ordered unique id.
func NewAccountID(now time.Time) string {
	return ulid.MustNew(ulid.Timestamp(now), ulid.DefaultEntropy()).String()
}

// ErrQuotaExceeded means the owner's limits do not allow the change.
var ErrQuotaExceeded = errors.New("quota exceeded")

// ErrPlanChanged means the plan an account was built from changed before
// the account was written: build it again from the plan as it is now.
var ErrPlanChanged = errors.New("plan changed")

// Limits are an owner's quotas; zero values mean unlimited (admin).
type Limits struct {
	MaxAccounts int
	MaxDiskMB   int64
}

// CreateAccount writes a new PENDING account if its username and domain are
// free cluster-wide, no other account or cluster zone holds a name inside
// or above the domain (claimNames), its plan is still at planRev (the
// revision the account was built from; ErrPlanChanged otherwise) and the
// owner's usage stays within limits — all checked in the one transaction that writes it, so
// neither a race between two creations nor a crash can break uniqueness or
// over-spend a quota. On refusal nothing is written.
func (s *Store) CreateAccount(ctx context.Context, a *Account, planRev int64, lim Limits, audit AuditEvent) error {
	// Owners without limits (admins) keep no usage record: there is nothing
	// to enforce, and a shared counter would make every concurrent creation
	// of theirs conflict with every other.
	metered := lim.MaxAccounts > 0 || lim.MaxDiskMB > 0
	if metered {
		// One creation per metered owner at a time on this replica: they
		// all compare the same usage revision, and letting them race only
		// turns throughput into retries. Other replicas still race, and the
		// compare keeps that correct.
		mu := s.ownerLock(a.Owner)
		mu.Lock()
		defer mu.Unlock()
	}
	for {
		tcmps, tops, err := s.claimNames(ctx, a.ID, []string{a.Domain})
		if err != nil {
			return err
		}
		cmps := append([]clientv3.Cmp{absent(userNameKey(a.Username)), absent(domainNameKey(a.Domain)), unchanged(planKey(a.Plan), planRev)}, tcmps...)
		ops := append([]clientv3.Op{
			clientv3.OpPut(userNameKey(a.Username), a.ID),
			clientv3.OpPut(domainNameKey(a.Domain), a.ID),
			auditPut(audit),
		}, tops...)
		if metered {
			// The reseller's limits and selector are read and compared
			// here, in the loop, so that updateReseller cannot race a
			// creation checked against the old ones; and a reseller
			// deleted meanwhile gets no account: it would be nobody's,
			// and whoever takes the name next would manage it.
			res, rrev, err := getJSON[Reseller](ctx, s.cli, resellerKey(a.Owner))
			if err == ErrNotFound {
				return fmt.Errorf("reseller %q: %w", a.Owner, ErrNotFound)
			}
			if err != nil {
				return err
			}
			lim = Limits{MaxAccounts: res.MaxAccounts, MaxDiskMB: res.MaxDiskMB}
			a.Selector = res.NodeSelector
			cmps = append(cmps, unchanged(resellerKey(a.Owner), rrev))
			usage, rev, err := s.GetUsage(ctx, a.Owner)
			if err != nil {
				return err
			}
			next := Usage{Accounts: usage.Accounts + 1, DiskMB: usage.DiskMB + a.DiskMB}
			if lim.MaxAccounts > 0 && next.Accounts > lim.MaxAccounts {
				return fmt.Errorf("%w: %s may have at most %d accounts", ErrQuotaExceeded, a.Owner, lim.MaxAccounts)
			}
			if lim.MaxDiskMB > 0 && next.DiskMB > lim.MaxDiskMB {
				return fmt.Errorf("%w: %s may allocate at most %d MB of disk (%d MB in use, plan needs %d MB)",
					ErrQuotaExceeded, a.Owner, lim.MaxDiskMB, usage.DiskMB, a.DiskMB)
			}
			if rev == 0 {
				cmps = append(cmps, absent(usageKey(a.Owner)))
			} else {
				cmps = append(cmps, unchanged(usageKey(a.Owner), rev))
			}
			ops = append(ops, clientv3.OpPut(usageKey(a.Owner), mustJSON(next)))
		}
		ops = append(ops, clientv3.OpPut(accountKey(a.ID), mustJSON(a)))
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(
			clientv3.OpGet(userNameKey(a.Username), clientv3.WithCountOnly()),
			clientv3.OpGet(domainNameKey(a.Domain), clientv3.WithCountOnly()),
			clientv3.OpGet(planKey(a.Plan), clientv3.WithKeysOnly()),
		).Commit()
		if err != nil {
			return fmt.Errorf("create account %q: %w", a.Username, err)
		}
		if resp.Succeeded {
			return nil
		}
		switch {
		case resp.Responses[0].GetResponseRange().Count > 0:
			return fmt.Errorf("username %q is taken: %w", a.Username, ErrConflict)
		case resp.Responses[1].GetResponseRange().Count > 0:
			return fmt.Errorf("domain %q is hosted already: %w", a.Domain, ErrConflict)
		case resp.Responses[2].GetResponseRange().Count == 0:
			return fmt.Errorf("plan %q: %w", a.Plan, ErrNotFound)
		case resp.Responses[2].GetResponseRange().Kvs[0].ModRevision != planRev:
			return fmt.Errorf("plan %q: %w", a.Plan, ErrPlanChanged)
		}
		// Only the usage or the name tree moved under us: another replica
		// created or deleted an account of this owner, or a name near this
		// domain was taken. Re-read and re-check.
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

func (s *Store) ownerLock(owner string) *sync.Mutex {
	mu, _ := s.ownerLocks.LoadOrStore(owner, &sync.Mutex{})
	return mu.(*sync.Mutex)
}

// GetAccount returns an account and its revision.
func (s *Store) GetAccount(ctx context.Context, id string) (*Account, int64, error) {
	a, rev, err := getJSON[Account](ctx, s.cli, accountKey(id))
	if err == ErrNotFound {
		return nil, 0, fmt.Errorf("account %q: %w", id, ErrNotFound)
	}
	return a, rev, err
}

// AccountIDByUsername resolves a username to its account id.
func (s *Store) AccountIDByUsername(ctx context.Context, username string) (string, error) {
	resp, err := s.cli.Get(ctx, userNameKey(username))
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("account %q: %w", username, ErrNotFound)
	}
	return string(resp.Kvs[0].Value), nil
}

// UpdateAccount applies fn to the account and writes it back if it did not
// change meanwhile, retrying on conflict. fn returning an error aborts with
// that error and writes nothing.
func (s *Store) UpdateAccount(ctx context.Context, id string, fn func(*Account) error, extra ...Op) (*Account, error) {
	for {
		a, rev, err := s.GetAccount(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := fn(a); err != nil {
			return nil, err
		}
		resp, err := s.cli.Txn(ctx).If(unchanged(accountKey(id), rev)).
			Then(append([]clientv3.Op{clientv3.OpPut(accountKey(id), mustJSON(a))}, rawOps(extra)...)...).Commit()
		if err != nil {
			return nil, fmt.Errorf("update account %s: %w", id, err)
		}
		if resp.Succeeded {
			return a, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// AccountHead is the part of an account record that the account index and
// the controller's watch look at: decoding only it skips the record's
// sites, events and timestamps, most of the work of decoding a record
// that every account write costs each replica's index.
type AccountHead struct {
	ID                string        `json:"id"`
	Username          string        `json:"username"`
	Domain            string        `json:"domain"`
	Owner             string        `json:"owner"`
	Node              string        `json:"node,omitempty"`
	Status            AccountStatus `json:"status"`
	Suspended         bool          `json:"suspended,omitempty"`
	Deleted           bool          `json:"deleted,omitempty"`
	Generation        int64         `json:"generation"`
	AppliedGeneration int64         `json:"appliedGeneration,omitempty"`
	TaskID            string        `json:"taskId,omitempty"`
	Attempts          int           `json:"attempts,omitempty"`
	Migrating         string        `json:"migrating,omitempty"`
}

// Head returns a's AccountHead.
func (a *Account) Head() AccountHead {
	return AccountHead{ID: a.ID, Username: a.Username, Domain: a.Domain, Owner: a.Owner, Node: a.Node, Status: a.Status,
		Suspended: a.Suspended, Deleted: a.Deleted, Generation: a.Generation, AppliedGeneration: a.AppliedGeneration,
		TaskID: a.TaskID, Attempts: a.Attempts, Migrating: a.Migrating}
}

// DecodeAccountHead decodes the head of an account record.
func DecodeAccountHead(b []byte) (AccountHead, error) {
	var h AccountHead
	err := json.Unmarshal(b, &h)
	return h, err
}

// DecodeAccount decodes an account record from a watch event or range.
func DecodeAccount(b []byte) (*Account, error) {
	var a Account
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// DecodeAccountEvent is DecodeAccount of an account event, decoded once
// for all the followers of the loop that delivered it: the account is
// shared, to be read and never changed.
func DecodeAccountEvent(ev Event) (*Account, error) {
	m := ev.memo
	if m == nil {
		return DecodeAccount(ev.Value)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.account == nil && m.err == nil {
		m.account, m.err = DecodeAccount(ev.Value)
	}
	return m.account, m.err
}

// DecodeAccountHeadEvent is DecodeAccountHead of an account event. An
// event shared by followers is decoded whole, once: the head costs nearly
// as much (the whole record is scanned), and a follower of the leader's
// controllers asks for the whole account anyway.
func DecodeAccountHeadEvent(ev Event) (AccountHead, error) {
	if ev.memo == nil {
		return DecodeAccountHead(ev.Value)
	}
	a, err := DecodeAccountEvent(ev)
	if err != nil {
		return AccountHead{}, err
	}
	return a.Head(), nil
}

// AccountPage lists accounts in id order from a revision, for building caches.
func (s *Store) AccountPage(ctx context.Context, after string, limit int, rev int64) ([]*Account, int64, bool, error) {
	start := prefixAccounts
	if after != "" {
		start = accountKey(after) + "\x00"
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefixAccounts)), clientv3.WithLimit(int64(limit))}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.cli.Get(ctx, start, opts...)
	if err != nil {
		return nil, 0, false, fmt.Errorf("list accounts: %w", err)
	}
	out := make([]*Account, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		a, err := DecodeAccount(kv.Value)
		if err != nil {
			return nil, 0, false, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, a)
	}
	return out, resp.Header.Revision, resp.More, nil
}

// Alloc is what the scheduler has placed on a node.
type Alloc struct {
	Accounts int   `json:"accounts"`
	DiskMB   int64 `json:"diskMB"`
}

// Allocs returns every node's allocation with its revision (0: none yet).
func (s *Store) Allocs(ctx context.Context) (map[string]Alloc, map[string]int64, error) {
	resp, err := s.cli.Get(ctx, prefixAlloc, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, fmt.Errorf("read allocations: %w", err)
	}
	allocs, revs := map[string]Alloc{}, map[string]int64{}
	for _, kv := range resp.Kvs {
		var a Alloc
		if err := json.Unmarshal(kv.Value, &a); err != nil {
			return nil, nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		node := lastSegment(string(kv.Key))
		allocs[node], revs[node] = a, kv.ModRevision
	}
	return allocs, revs, nil
}

// AccountFilter selects accounts; empty fields match everything.
type AccountFilter struct {
	Status AccountStatus
	Node   string
	Owner  string
	Search string
	// ID restricts to one account (a user-role caller sees only its own).
	ID string
}

// GetAccounts reads accounts by id in one transaction, in the order given;
// ids that no longer exist are skipped.
func (s *Store) GetAccounts(ctx context.Context, ids []string) ([]*Account, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	out := make([]*Account, 0, len(ids))
	// Chunks stay within etcd's default --max-txn-ops (128).
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 100)]
		ids = ids[len(chunk):]
		ops := make([]clientv3.Op, len(chunk))
		for i, id := range chunk {
			ops[i] = clientv3.OpGet(accountKey(id))
		}
		resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("read accounts: %w", err)
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().Kvs {
				a, err := DecodeAccount(kv.Value)
				if err != nil {
					return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
				}
				out = append(out, a)
			}
		}
	}
	return out, nil
}
