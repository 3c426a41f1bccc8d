package controlplane

import (
	"fmt"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

func TestBackupScheduleSlot(t *testing.T) {
	day := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		hour int
		want int // window start hour
	}{
		{"default window", -1, defaultBackupHour},
		{"plan hour", 3, 3},
		{"out of range", 24, defaultBackupHour},
		{"late window wraps past midnight", 22, 22},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := scheduleJitter("alice")
			now := day.Add(36 * time.Hour) // well after any slot of day 2
			slot := scheduleSlot(now, "alice", tc.hour)
			if slot.After(now) || now.Sub(slot) >= 24*time.Hour {
				t.Fatalf("slot %v is not the latest one at or before %v", slot, now)
			}
			off := slot.Sub(slot.Truncate(24*time.Hour)) - time.Duration(tc.want)*time.Hour
			if off < 0 {
				off += 24 * time.Hour
			}
			if off != j {
				t.Fatalf("slot %v: offset %v in the window, want the username's %v", slot, off, j)
			}
			// Exactly at the slot it is that slot; a second before, the day before's.
			if got := scheduleSlot(slot, "alice", tc.hour); !got.Equal(slot) {
				t.Fatalf("at the slot: %v, want %v", got, slot)
			}
			if got := scheduleSlot(slot.Add(-time.Second), "alice", tc.hour); !got.Equal(slot.Add(-24 * time.Hour)) {
				t.Fatalf("before the slot: %v, want the day before's", got)
			}
		})
	}
}

// The offsets spread over the whole window, and each name keeps its own.
func TestBackupScheduleJitterSpreads(t *testing.T) {
	buckets := make([]int, 6)
	for i := range 1000 {
		j := scheduleJitter(fmt.Sprintf("user%d", i))
		if j < 0 || j >= backupWindow {
			t.Fatalf("jitter %v outside the window", j)
		}
		if j != scheduleJitter(fmt.Sprintf("user%d", i)) {
			t.Fatal("jitter is not stable")
		}
		buckets[j/time.Hour]++
	}
	for h, n := range buckets {
		if n < 100 || n > 250 {
			t.Fatalf("hour %d of the window holds %d of 1000 accounts: %v", h, n, buckets)
		}
	}
}

func TestBackupScheduleRetryDelay(t *testing.T) {
	for n, want := range map[int]time.Duration{1: 5 * time.Minute, 2: 15 * time.Minute, 3: 45 * time.Minute, 4: 135 * time.Minute} {
		if got := scheduleRetryDelay(n); got != want {
			t.Errorf("after %d failures: %v, want %v", n, got, want)
		}
	}
}

func TestBackupSlotDue(t *testing.T) {
	slot := time.Date(2026, 12, 6, 2, 0, 0, 0, time.UTC)
	failedAt := func(d time.Duration) slotAttempt {
		return slotAttempt{scheduled: true, state: store.BackupFailed, finishedAt: slot.Add(d)}
	}
	for _, tc := range []struct {
		name     string
		now      time.Time
		attempts []slotAttempt
		want     bool
	}{
		{"nothing yet, slot reached", slot, nil, true},
		{"nothing yet, before the slot", slot.Add(-time.Second), nil, false},
		{"one in flight", slot.Add(time.Hour), []slotAttempt{{scheduled: true, state: store.BackupRunning, inFlight: true}}, false},
		{"done", slot.Add(time.Hour), []slotAttempt{{scheduled: true, state: store.BackupSucceeded}}, false},
		{"partial counts as done", slot.Add(time.Hour), []slotAttempt{{scheduled: true, state: store.BackupPartial}}, false},
		{"a user's backup counts as done", slot.Add(time.Hour), []slotAttempt{{state: store.BackupSucceeded}}, false},
		{"a user's failed backup is no attempt", slot.Add(time.Minute), []slotAttempt{{state: store.BackupFailed, finishedAt: slot}}, true},
		{"failed once, within 5m", slot.Add(4 * time.Minute), []slotAttempt{failedAt(0)}, false},
		{"failed once, after 5m", slot.Add(5 * time.Minute), []slotAttempt{failedAt(0)}, true},
		{"failed twice, within 15m", slot.Add(20 * time.Minute), []slotAttempt{failedAt(0), failedAt(10 * time.Minute)}, false},
		{"failed twice, after 15m", slot.Add(25 * time.Minute), []slotAttempt{failedAt(0), failedAt(10 * time.Minute)}, true},
		{"too many failures", slot.Add(23 * time.Hour), []slotAttempt{failedAt(0), failedAt(1), failedAt(2), failedAt(3), failedAt(4), failedAt(5)}, false},
		{"retry would pass the next slot", slot.Add(24*time.Hour - time.Minute), []slotAttempt{failedAt(24*time.Hour - 3*time.Minute)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := slotDue(tc.now, slot, tc.attempts); got != tc.want {
				t.Fatalf("due = %v, want %v", got, tc.want)
			}
		})
	}
}

func scheduleIndex(accounts, nodes int, created time.Time) *backupIndex {
	x := newBackupIndex()
	for i := range accounts {
		a := &store.Account{ID: fmt.Sprintf("id%05d", i), Username: fmt.Sprintf("u%05d", i), Plan: "basic",
			Owner: "admin", Node: fmt.Sprintf("web-%d", i%nodes), CreatedAt: created}
		x.putAccount(a)
	}
	return x
}

func TestBackupSchedulePlanCapsEachNode(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC) // after every slot of the day (01:00-07:00)
	x := scheduleIndex(20, 2, now.Add(-time.Hour))
	pol := &store.BackupPolicy{Target: "local", Hour: -1, KeepDaily: 7}
	policy := func(string) *store.BackupPolicy { return pol }
	due, missed, _ := x.schedulePlan(now, policy, 2)
	if len(due) != 4 {
		t.Fatalf("%d due, want 2 per node on 2 nodes", len(due))
	}
	if len(missed) != 0 {
		t.Fatalf("new accounts reported missed: %v", missed)
	}
	per := map[string]int{}
	for i, d := range due {
		per[d.account.node]++
		if i > 0 && d.slot.Before(due[i-1].slot) {
			t.Fatal("not in slot order")
		}
	}
	if per["web-0"] != 2 || per["web-1"] != 2 {
		t.Fatalf("per node: %v", per)
	}
	// The ones started count against the cap; once they finish, the
	// window goes on with the next accounts.
	for _, d := range due {
		x.putBackup(&store.Backup{ID: d.account.username + "-x", Account: d.account.username, AccountID: d.account.id,
			Node: d.account.node, Scheduled: true, CreatedAt: now, Status: store.BackupStatus{State: store.BackupRunning}})
	}
	if due2, _, _ := x.schedulePlan(now, policy, 2); len(due2) != 0 {
		t.Fatalf("%d due while the cap is spent", len(due2))
	}
	for _, d := range due {
		// One failed account does not hold up the rest.
		state := store.BackupSucceeded
		if d.account.username == due[0].account.username {
			state = store.BackupFailed
		}
		x.putBackup(&store.Backup{ID: d.account.username + "-x", Account: d.account.username, AccountID: d.account.id,
			Node: d.account.node, Scheduled: true, CreatedAt: now, Status: store.BackupStatus{State: state, FinishedAt: now}})
	}
	due3, _, _ := x.schedulePlan(now, policy, 2)
	if len(due3) != 4 {
		t.Fatalf("%d due after the first ones finished, want 4", len(due3))
	}
	for _, d := range due3 {
		for _, old := range due {
			if d.account.username == old.account.username {
				t.Fatalf("%s scheduled again", d.account.username)
			}
		}
	}
}

func TestBackupSchedulePlanPolicyAndMissed(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	x := scheduleIndex(3, 1, now.Add(-72*time.Hour))
	x.putAccount(&store.Account{ID: "gone", Username: "gone", Plan: "basic", Node: "web-0", Deleted: true, CreatedAt: now.Add(-72 * time.Hour)})
	x.putAccount(&store.Account{ID: "off", Username: "off", Plan: "nobackup", Node: "web-0", CreatedAt: now.Add(-72 * time.Hour)})
	// u00000 succeeded yesterday (too long ago), u00001 an hour ago.
	x.putBackup(&store.Backup{ID: "u00000-a", Account: "u00000", AccountID: "id00000", Node: "web-0", CreatedAt: now.Add(-30 * time.Hour),
		Status: store.BackupStatus{State: store.BackupSucceeded, FinishedAt: now.Add(-30 * time.Hour)}})
	x.putBackup(&store.Backup{ID: "u00001-a", Account: "u00001", AccountID: "id00001", Node: "web-0", CreatedAt: now.Add(-time.Hour),
		Status: store.BackupStatus{State: store.BackupSucceeded, FinishedAt: now.Add(-time.Hour)}})
	policy := func(plan string) *store.BackupPolicy {
		if plan == "basic" {
			return &store.BackupPolicy{Target: "local", Hour: -1}
		}
		return nil
	}
	due, missed, last := x.schedulePlan(now, policy, 10)
	var names []string
	for _, d := range due {
		names = append(names, d.account.username)
	}
	if fmt.Sprint(names) != "[u00000 u00002]" && fmt.Sprint(names) != "[u00002 u00000]" {
		t.Fatalf("due %v, want u00000 and u00002 (not the deleted, the disabled or the one done today)", names)
	}
	if fmt.Sprint(missed) != "[u00000 u00002]" {
		t.Fatalf("missed %v, want u00000 and u00002", missed)
	}
	if !last["u00001"].Equal(now.Add(-time.Hour)) {
		t.Fatalf("last success of u00001: %v", last["u00001"])
	}
	// A disabled policy schedules nothing.
	if due, _, _ := x.schedulePlan(now, func(string) *store.BackupPolicy { return &store.BackupPolicy{Disabled: true} }, 10); len(due) != 0 {
		t.Fatalf("disabled policy scheduled %d", len(due))
	}
}

// BenchmarkBackupSchedulePass10k is one pass of the schedule over 10,000
// accounts on 100 nodes with a week of backups each.
func BenchmarkBackupSchedulePass10k(b *testing.B) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	x := scheduleIndex(10000, 100, now.Add(-30*24*time.Hour))
	x.mu.RLock()
	accts := make([]*schedAccount, 0, len(x.accounts))
	for _, a := range x.accounts {
		accts = append(accts, a)
	}
	x.mu.RUnlock()
	for _, a := range accts {
		for d := 1; d <= 7; d++ {
			at := now.Add(-time.Duration(d) * 24 * time.Hour)
			x.putBackup(&store.Backup{ID: fmt.Sprintf("%s-%d", a.username, d), Account: a.username, AccountID: a.id, Node: a.node,
				Scheduled: true, CreatedAt: at, Status: store.BackupStatus{State: store.BackupSucceeded, FinishedAt: at.Add(time.Minute)}})
		}
	}
	pol := &store.BackupPolicy{Target: "local", Hour: -1}
	policy := func(string) *store.BackupPolicy { return pol }
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		due, _, _ := x.schedulePlan(now, policy, 2)
		if len(due) != 200 {
			b.Fatalf("%d due, want 2 on each of 100 nodes", len(due))
		}
	}
}
