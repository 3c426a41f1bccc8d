package backup

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/npanel/npanel/protos/agentpb"
)

// backupAt is one backup (all snapshots carrying its id) and its time:
// that of its files snapshot, else its earliest snapshot.
type backupAt struct {
	id    string
	at    time.Time
	snaps []string
}

// groupBackups groups snapshots by backup id; snapshots without one
// (made by hand) are left out, so retention never removes them.
func groupBackups(snaps []snapshot) []backupAt {
	by := map[string]*backupAt{}
	for _, s := range snaps {
		id := s.tag(tagBackup)
		if id == "" {
			continue
		}
		b := by[id]
		if b == nil {
			b = &backupAt{id: id, at: s.Time}
			by[id] = b
		}
		b.snaps = append(b.snaps, s.ID)
		if s.tag(tagKind) == kindFiles || s.Time.Before(b.at) {
			b.at = s.Time
		}
	}
	out := make([]backupAt, 0, len(by))
	for _, b := range by {
		out = append(out, *b)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].at.Equal(out[j].at) {
			return out[i].at.After(out[j].at)
		}
		return out[i].id > out[j].id
	})
	return out
}

// keepBackups applies the policy to backups (newest first) the way restic
// forget's --keep-daily/weekly/monthly do, but counting backups rather
// than snapshots: the newest backup of each of the last N days (UTC) with
// a backup, M ISO weeks, K months is kept; so is current, the backup just
// made. A policy of all zeros keeps everything.
func keepBackups(backups []backupAt, p *agentpb.BackupRetention, current string) map[string]bool {
	keep := map[string]bool{current: true}
	if p.GetDaily() == 0 && p.GetWeekly() == 0 && p.GetMonthly() == 0 {
		for _, b := range backups {
			keep[b.id] = true
		}
		return keep
	}
	bucketers := []struct {
		n   uint32
		key func(time.Time) string
	}{
		{p.GetDaily(), func(t time.Time) string { return t.UTC().Format("2006-01-02") }},
		{p.GetWeekly(), func(t time.Time) string {
			y, w := t.UTC().ISOWeek()
			return strconv.Itoa(y) + "-W" + strconv.Itoa(w)
		}},
		{p.GetMonthly(), func(t time.Time) string { return t.UTC().Format("2006-01") }},
	}
	for _, bk := range bucketers {
		seen := map[string]bool{}
		for _, b := range backups {
			if uint32(len(seen)) >= bk.n {
				break
			}
			k := bk.key(b.at)
			if !seen[k] {
				seen[k] = true
				keep[b.id] = true
			}
		}
	}
	return keep
}

// applyRetention forgets the backups the policy does not keep, all their
// snapshots together, and prunes. It returns the forgotten backups' ids.
func (m *Module) applyRetention(ctx context.Context, rr *resticRun, p *agentpb.BackupRetention, current string, unlocked *bool) ([]string, error) {
	snaps, err := rr.snapshots(ctx)
	if err != nil {
		return nil, err
	}
	backups := groupBackups(snaps)
	keep := keepBackups(backups, p, current)
	var ids, gone []string
	for _, b := range backups {
		if !keep[b.id] {
			ids = append(ids, b.snaps...)
			gone = append(gone, b.id)
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	if err := rr.forgetPrune(ctx, unlocked, ids); err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	slices.Sort(gone)
	return gone, nil
}

// forgetPrune forgets snapshots ids and prunes the data only they held.
func (rr *resticRun) forgetPrune(ctx context.Context, unlocked *bool, ids []string) error {
	args := append([]string{"forget"}, ids...)
	if err := rr.withUnlockRetry(ctx, unlocked, func() error {
		_, err := rr.run(ctx, nil, args...)
		return err
	}); err != nil {
		return err
	}
	return rr.withUnlockRetry(ctx, unlocked, func() error {
		_, err := rr.run(ctx, nil, "prune")
		return err
	})
}
