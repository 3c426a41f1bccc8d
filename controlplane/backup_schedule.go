package controlplane

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// The daily schedule (leader only). Every account whose plan has a
// backup policy that is not disabled gets one backup a day, at its slot:
// the policy's hour (UTC; 01:00 by default) plus a stable offset within
// a six-hour window from a hash of the username, so a thousand accounts
// do not start at once. At most cfg.MaxPerNode scheduled backups are in
// flight on one node; the rest wait for the next pass, so a node's window
// is worked through in order of slots and one failing account holds up
// no other. A failed scheduled backup is tried again after 5m, 15m, 45m,
// ... until the next slot; an account whose last success is older than
// missedAfter is reported (log, audit, npanel_backups_missed).
//
// The schedule keeps no memory of its own: the backup records are it
// (Scheduled, CreatedAt, state), indexed in memory from the controller's
// informer, so a new leader picks up where the last one was.
const (
	backupWindow      = 6 * time.Hour
	defaultBackupHour = 1
	backupRetryBase   = 5 * time.Minute
	// maxScheduledTries bounds the attempts of one slot.
	maxScheduledTries = 6
	missedAfter       = 26 * time.Hour
	// defaultKeepDaily is the retention of a deleted account's backups
	// when the backups carry no policy.
	defaultKeepDaily = 7
)

// backupEntry is what the index keeps of a backup.
type backupEntry struct {
	id, account, accountID, node, target string
	state                                store.BackupState
	scheduled, task, deleting            bool
	createdAt, finishedAt                time.Time
	keepDaily                            int
}

func (e *backupEntry) inFlight() bool {
	return e.task || e.state == store.BackupPending || e.state == store.BackupRunning
}

func entryOfBackup(b *store.Backup) *backupEntry {
	e := &backupEntry{id: b.ID, account: b.Account, accountID: b.AccountID, node: b.Node, target: b.Target,
		state: b.Status.State, scheduled: b.Scheduled, task: b.Status.TaskID != "", deleting: b.Deleting,
		createdAt: b.CreatedAt, finishedAt: b.Status.FinishedAt, keepDaily: -1}
	if b.Retention != nil {
		e.keepDaily = b.Retention.KeepDaily
	}
	return e
}

// schedAccount is what the schedule needs of an account.
type schedAccount struct {
	id, username, plan, owner, node string
	deleted                         bool
	createdAt                       time.Time
}

// backupIndex is the controller's view of every backup and account.
type backupIndex struct {
	mu        sync.RWMutex
	backups   map[string]*backupEntry
	byAccount map[string]map[string]*backupEntry // username → id →
	accounts  map[string]*schedAccount           // by account id
}

func newBackupIndex() *backupIndex {
	x := &backupIndex{}
	x.reset()
	return x
}

func (x *backupIndex) reset() {
	x.mu.Lock()
	x.backups, x.byAccount, x.accounts = map[string]*backupEntry{}, map[string]map[string]*backupEntry{}, map[string]*schedAccount{}
	x.mu.Unlock()
}

// putBackup indexes b and returns what the index held of it before.
func (x *backupIndex) putBackup(b *store.Backup) *backupEntry {
	e := entryOfBackup(b)
	x.mu.Lock()
	defer x.mu.Unlock()
	prev := x.backups[b.ID]
	x.backups[b.ID] = e
	m := x.byAccount[b.Account]
	if m == nil {
		m = map[string]*backupEntry{}
		x.byAccount[b.Account] = m
	}
	m[b.ID] = e
	return prev
}

func (x *backupIndex) dropBackup(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e := x.backups[id]
	if e == nil {
		return
	}
	delete(x.backups, id)
	if m := x.byAccount[e.account]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(x.byAccount, e.account)
		}
	}
}

func (x *backupIndex) putAccount(a *store.Account) {
	x.mu.Lock()
	x.accounts[a.ID] = &schedAccount{id: a.ID, username: a.Username, plan: a.Plan, owner: a.Owner, node: a.Node,
		deleted: a.Deleted, createdAt: a.CreatedAt}
	x.mu.Unlock()
}

func (x *backupIndex) dropAccount(id string) {
	x.mu.Lock()
	delete(x.accounts, id)
	x.mu.Unlock()
}

// pendingOf returns username's PENDING backups without a task.
func (x *backupIndex) pendingOf(username string) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []string
	for id, e := range x.byAccount[username] {
		if e.state == store.BackupPending && !e.task {
			out = append(out, id)
		}
	}
	return out
}

// inFlightOn returns the backups with a task in flight on node.
func (x *backupIndex) inFlightOn(node string) []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []string
	for id, e := range x.backups {
		if e.node == node && e.task {
			out = append(out, id)
		}
	}
	return out
}

// scheduleSlot is the latest slot of username's daily backup at or before
// now: the window's start (hour UTC, defaultBackupHour when hour is out
// of 0..23) plus the username's offset in the window.
func scheduleSlot(now time.Time, username string, hour int) time.Time {
	if hour < 0 || hour > 23 {
		hour = defaultBackupHour
	}
	now = now.UTC()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	slot := day.Add(time.Duration(hour)*time.Hour + scheduleJitter(username))
	for slot.After(now) {
		slot = slot.Add(-24 * time.Hour)
	}
	return slot
}

// scheduleJitter is username's stable offset in the window, to the second.
func scheduleJitter(username string) time.Duration {
	h := fnv.New64a()
	h.Write([]byte(username))
	return time.Duration(h.Sum64()%uint64(backupWindow/time.Second)) * time.Second
}

// scheduleRetryDelay is the wait before the next try after n failed ones
// of a slot: 5m, 15m, 45m, ...
func scheduleRetryDelay(n int) time.Duration {
	d := backupRetryBase
	for i := 1; i < n; i++ {
		d *= 3
	}
	return d
}

// slotAttempt is a backup made at or after a slot.
type slotAttempt struct {
	scheduled  bool
	state      store.BackupState
	inFlight   bool
	finishedAt time.Time
}

// slotDue decides whether a backup is due for the slot at now, given the
// backups made since the slot began: none in flight, none succeeded, and
// the failed scheduled ones' backoff passed (within the day).
func slotDue(now, slot time.Time, attempts []slotAttempt) bool {
	failed := 0
	var last time.Time
	for _, a := range attempts {
		switch {
		case a.inFlight:
			return false
		case finishedOK(a.state):
			return false // the day's backup is done, by the schedule or a user
		case a.scheduled && a.state == store.BackupFailed:
			failed++
			if a.finishedAt.After(last) {
				last = a.finishedAt
			}
		}
	}
	if failed == 0 {
		return !now.Before(slot)
	}
	if failed >= maxScheduledTries {
		return false
	}
	next := last.Add(scheduleRetryDelay(failed))
	return !now.Before(next) && next.Before(slot.Add(24*time.Hour))
}

// dueBackup is an account the schedule backs up now.
type dueBackup struct {
	account *schedAccount
	policy  *store.BackupPolicy
	slot    time.Time
}

// schedulePlan is one pass of the schedule over the index: the backups to
// create now (earliest slot first, at most maxPerNode in flight per node)
// and the accounts that missed their day. policy returns a plan's backup
// policy (nil: none).
func (x *backupIndex) schedulePlan(now time.Time, policy func(plan string) *store.BackupPolicy, maxPerNode int) (due []dueBackup, missed []string, lastSuccess map[string]time.Time) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	inFlight := map[string]int{}
	for _, e := range x.backups {
		if e.inFlight() {
			inFlight[e.node]++
		}
	}
	lastSuccess = map[string]time.Time{}
	var attempts []slotAttempt
	for _, a := range x.accounts {
		if a.deleted {
			continue
		}
		var ok time.Time
		for _, e := range x.byAccount[a.username] {
			if e.accountID == a.id && finishedOK(e.state) && e.finishedAt.After(ok) {
				ok = e.finishedAt
			}
		}
		if !ok.IsZero() {
			lastSuccess[a.username] = ok
		}
		if a.node == "" {
			continue
		}
		p := policy(a.plan)
		if p == nil || p.Disabled {
			continue
		}
		slot := scheduleSlot(now, a.username, p.Hour)
		attempts = attempts[:0]
		for _, e := range x.byAccount[a.username] {
			if e.accountID != a.id {
				continue // an earlier account of the same name
			}
			if !e.createdAt.Before(slot) || e.inFlight() {
				attempts = append(attempts, slotAttempt{scheduled: e.scheduled, state: e.state, inFlight: e.inFlight(), finishedAt: e.finishedAt})
			}
		}
		if now.Sub(a.createdAt) > missedAfter && now.Sub(ok) > missedAfter {
			missed = append(missed, a.username)
		}
		if slotDue(now, slot, attempts) {
			due = append(due, dueBackup{account: a, policy: p, slot: slot})
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].slot.Equal(due[j].slot) {
			return due[i].slot.Before(due[j].slot)
		}
		return due[i].account.username < due[j].account.username
	})
	kept := due[:0]
	for _, d := range due {
		if inFlight[d.account.node] >= maxPerNode {
			continue
		}
		inFlight[d.account.node]++
		kept = append(kept, d)
	}
	slices.Sort(missed)
	return kept, missed, lastSuccess
}

// schedulePass creates the backups due now.
func (bc *backupController) schedulePass(ctx context.Context, now time.Time) error {
	plans := map[string]*store.BackupPolicy{}
	policy := func(name string) *store.BackupPolicy {
		p, ok := plans[name]
		if !ok {
			if plan, _, err := bc.st.CachedPlan(ctx, name); err == nil {
				p = plan.Backup
			}
			plans[name] = p
		}
		return p
	}
	// The plans are read outside the index's lock: a first pass fills
	// the cache, the second plans with it.
	bc.index.mu.RLock()
	names := make([]string, 0, len(bc.index.accounts))
	for _, a := range bc.index.accounts {
		names = append(names, a.plan)
	}
	bc.index.mu.RUnlock()
	for _, n := range names {
		policy(n)
	}
	due, missed, last := bc.index.schedulePlan(now, func(n string) *store.BackupPolicy { return plans[n] }, bc.cfg.MaxPerNode)
	bc.reportMissed(ctx, missed, last)
	var errs []error
	for _, d := range due {
		// One account's failure never stops the others.
		if err := bc.createScheduled(ctx, d, now); err != nil {
			bc.s.log.Warn("scheduled backup", "account", d.account.username, "err", err)
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

func (bc *backupController) createScheduled(ctx context.Context, d dueBackup, now time.Time) error {
	a := d.account
	pol := *d.policy
	b := &store.Backup{
		ID: store.NewBackupID(a.username, now), Account: a.username, AccountID: a.id, Owner: a.owner, Node: a.node,
		Target: pol.Target, Scheduled: true, Requester: "schedule", Retention: &pol,
	}
	ev := store.NewAuditEvent("system", bc.s.id, "backup.create", b.ID, "ok: scheduled for "+d.slot.Format(time.RFC3339))
	if err := bc.st.CreateBackup(ctx, b, ev); err != nil {
		return err
	}
	bc.index.putBackup(b) // counts against the node's cap at once
	bc.ctl.Enqueue(b.ID)
	return nil
}

// reportMissed logs and audits, once each, the accounts that missed their
// day, and sets the metrics of every account's last success.
func (bc *backupController) reportMissed(ctx context.Context, missed []string, last map[string]time.Time) {
	if m := bc.s.metrics; m != nil {
		m.backupsMissed.Set(float64(len(missed)))
		for acct, at := range last {
			m.backupLastSuccess.WithLabelValues(acct).Set(float64(at.Unix()))
		}
		// Accounts gone (or no longer scheduled) leave the metric.
		for acct := range bc.labels {
			if _, ok := last[acct]; !ok {
				m.backupLastSuccess.DeleteLabelValues(acct)
			}
		}
		bc.labels = map[string]bool{}
		for acct := range last {
			bc.labels[acct] = true
		}
	}
	now := map[string]bool{}
	for _, acct := range missed {
		now[acct] = true
		if bc.missed[acct] {
			continue
		}
		bc.missed[acct] = true
		why := "no successful backup for more than 26 hours"
		if at, ok := last[acct]; ok {
			why += " (last " + at.Format(time.RFC3339) + ")"
		}
		bc.s.log.Warn("backup missed", "account", acct, "last_success", last[acct])
		_ = bc.st.AppendAudit(ctx, store.NewAuditEvent("system", bc.s.id, "backup.missed", acct, "failed: "+why))
	}
	for acct := range bc.missed {
		if !now[acct] {
			delete(bc.missed, acct)
		}
	}
}

// sweep queues the backups with a task in flight (a node removed while no
// replica led sent no event) and the deletions to retry, and expires the
// backups of deleted accounts past their retention.
func (bc *backupController) sweep(ctx context.Context, now time.Time) error {
	type acctBackups struct {
		accountID string
		newest    time.Time
		keepDaily int
		ids       []string
	}
	var queue []string
	byAcct := map[string]*acctBackups{}
	bc.index.mu.RLock()
	for id, e := range bc.index.backups {
		if e.task || e.deleting || e.state == store.BackupPending {
			queue = append(queue, id)
		}
		if _, ok := bc.index.accounts[e.accountID]; ok && !bc.index.accounts[e.accountID].deleted {
			continue
		}
		k := e.account + "/" + e.accountID
		ab := byAcct[k]
		if ab == nil {
			ab = &acctBackups{accountID: e.accountID, keepDaily: -1}
			byAcct[k] = ab
		}
		if e.createdAt.After(ab.newest) {
			ab.newest = e.createdAt
		}
		ab.keepDaily = max(ab.keepDaily, e.keepDaily)
		if !e.deleting {
			ab.ids = append(ab.ids, id)
		}
	}
	bc.index.mu.RUnlock()
	bc.ctl.Enqueue(queue...)
	for _, ab := range byAcct {
		keep := ab.keepDaily
		if keep < 0 {
			keep = defaultKeepDaily
		}
		if len(ab.ids) == 0 || now.Sub(ab.newest) < time.Duration(keep)*24*time.Hour {
			continue
		}
		// The index may not have listed every account yet: the store
		// has the last word on whether the account is gone.
		a, err := bc.accountOf(ctx, ab.accountID)
		if err != nil {
			return err
		}
		if a != nil && !a.Deleted {
			continue
		}
		for _, id := range ab.ids {
			if err := bc.expire(ctx, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// expire marks a backup of a deleted account for deletion: its snapshots
// are forgotten, then its record goes, and with the last one the
// repository password.
func (bc *backupController) expire(ctx context.Context, id string) error {
	ev := store.NewAuditEvent("system", bc.s.id, "backup.delete", id, "ok: the account was deleted and its retention passed")
	_, err := bc.st.UpdateBackup(ctx, id, func(b *store.Backup) ([]*store.ObjectTask, error) {
		if b.Deleting {
			return nil, store.ErrUnchanged
		}
		b.Deleting = true
		b.Status.AddEvent(time.Now().UTC(), "expired", "the account was deleted and its retention passed")
		return nil, nil
	}, ev)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err == nil {
		bc.ctl.Enqueue(id)
	}
	return err
}

// restoreOutcomeEvent maps a restore's done notice to its key.
func restoreOutcomeEvent(ev store.Event) (string, bool, bool) {
	return restoreKeyPfx + ev.Name, true, false
}

// targetEvent queues a target.
func targetEvent(ev store.Event) (string, bool, bool) {
	return targetKeyPfx + lastSegment(ev.Name), !ev.Deleted, false
}
