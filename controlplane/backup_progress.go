package controlplane

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// Progress of running backups and restores, as agents report it
// (AgentMessage.backup_progress), written into the record's
// Status.Progress at most once a second per task: a restic run reports
// several times a second, and each write is an etcd revision that every
// watcher of backups pays for.
const progressEvery = time.Second

// progressLimiter admits one write per key per interval.
type progressLimiter struct {
	mu    sync.Mutex
	every time.Duration
	last  map[string]time.Time
}

func newProgressLimiter(every time.Duration) *progressLimiter {
	return &progressLimiter{every: every, last: map[string]time.Time{}}
}

// allow reports whether key may be written at now, and if so counts it.
func (l *progressLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if at, ok := l.last[key]; ok && now.Sub(at) < l.every {
		return false
	}
	l.last[key] = now
	if len(l.last) > 1024 {
		// Finished tasks report no more: forget what is long past.
		for k, at := range l.last {
			if now.Sub(at) > time.Minute {
				delete(l.last, k)
			}
		}
	}
	return true
}

// recordBackupProgress stores a progress report of node's. The task must
// be node's and the one its backup or restore has in flight; anything
// else is dropped. A failure only loses one report.
func (g *gateway) recordBackupProgress(ctx context.Context, node string, p *agentpb.BackupProgress) {
	// Paced per node and task: another node naming the task spends its
	// own allowance, not the running node's.
	if p.GetTaskId() == "" || !g.progress.allow(node+"/"+p.GetTaskId(), time.Now()) {
		return
	}
	t, _, err := g.store.GetTask(ctx, p.GetTaskId())
	if err != nil || t.Node != node || t.Status != store.TaskPending {
		return
	}
	prog := &store.BackupProgress{FilesDone: p.GetFilesDone(), BytesDone: p.GetBytesDone(),
		TotalFiles: p.GetTotalFiles(), TotalBytes: p.GetTotalBytes(), At: time.Now().UTC()}
	kind, id, _ := strings.Cut(t.Object, "/")
	switch kind + "/" {
	case store.BackupObject(""):
		_, err = g.store.UpdateBackup(ctx, id, func(b *store.Backup) ([]*store.ObjectTask, error) {
			if b.Status.TaskID != t.ID {
				return nil, store.ErrUnchanged
			}
			b.Status.Progress = prog
			return nil, nil
		}, store.AuditEvent{})
	case store.RestoreObject(""):
		_, err = g.store.UpdateRestore(ctx, id, func(r *store.Restore) ([]*store.ObjectTask, error) {
			if r.Status.TaskID != t.ID {
				return nil, store.ErrUnchanged
			}
			r.Status.Progress = prog
			return nil, nil
		}, store.AuditEvent{})
	case store.FetchObject(""):
		// A cPanel fetch reports the bytes downloaded so far.
		_, err = g.store.UpdateFetch(ctx, id, func(f *store.Fetch) error {
			if f.TaskID != t.ID || f.Status.Finished() {
				return store.ErrUnchanged
			}
			f.Bytes = p.GetBytesDone()
			return nil
		}, store.AuditEvent{})
	default:
		return
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		g.log.Warn("store backup progress", "node", node, "task", t.ID, "err", err)
	}
}
