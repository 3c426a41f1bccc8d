package controlplane

import (
	"context"
	"fmt"
	"time"

	"github.com/npanel/npanel/controlplane/store"
)

// Default retention of history (Config.AuditRetention, TaskRetention).
const (
	DefaultAuditRetention = 90 * 24 * time.Hour
	DefaultTaskRetention  = 7 * 24 * time.Hour
)

// pruneChunk is how much one prune call deletes: small enough that one
// transaction never holds etcd up, and a pass continues chunk by chunk.
const pruneChunk = 1000

// runPruner deletes, on the leader, the audit events and finished tasks
// that outlived their retention (see store.PruneAudit, store.PruneTasks):
// without it every account, change and agent action would grow etcd until
// its space quota stops all writes.
func (s *Server) runPruner(ctx context.Context) {
	t := time.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		if err := s.prune(ctx, time.Now()); err != nil && ctx.Err() == nil {
			s.log.Warn("prune history", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// prune deletes what outlived its retention at now and records how much
// in one audit event.
func (s *Server) prune(ctx context.Context, now time.Time) error {
	var events, tasks int
	var err error
	if r := s.cfg.AuditRetention; r > 0 {
		events, err = pruneAll(ctx, func(ctx context.Context) (int, error) {
			return s.store.PruneAudit(ctx, now.Add(-r), pruneChunk)
		})
		s.metrics.pruned.WithLabelValues("audit").Add(float64(events))
	}
	if r := s.cfg.TaskRetention; r > 0 && err == nil {
		tasks, err = pruneAll(ctx, func(ctx context.Context) (int, error) {
			return s.store.PruneTasks(ctx, now.Add(-r), pruneChunk)
		})
		s.metrics.pruned.WithLabelValues("task").Add(float64(tasks))
	}
	if events+tasks > 0 {
		s.log.Info("pruned history", "audit_events", events, "tasks", tasks)
		ev := store.NewAuditEvent("controller", "leader", "pruneHistory", "audit+tasks",
			fmt.Sprintf("ok: %d audit events older than %s, %d tasks finished before %s", events, s.cfg.AuditRetention, tasks, s.cfg.TaskRetention))
		if aerr := s.store.AppendAudit(ctx, ev); aerr != nil && err == nil {
			err = aerr
		}
	}
	return err
}

// pruneAll calls prune until a call deletes less than a chunk.
func pruneAll(ctx context.Context, prune func(context.Context) (int, error)) (int, error) {
	total := 0
	for {
		n, err := prune(ctx)
		total += n
		if err != nil || n < pruneChunk {
			return total, err
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}
