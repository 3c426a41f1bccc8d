package controlplane

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/npanel/npanel/controlplane/store"
)

// zoneWriter is the API's way to change a zone's desired state
// (graph.ZoneWriter). It is the zone controller's fast path: when all the
// change needs is "send the new records", the ensure that serves them
// commits in the same transaction as the change, so an operator's record is
// served without waiting for the controller's pass (on the leader, perhaps
// another replica) to notice the write. Otherwise it writes the change
// alone and the controller converges the zone as always.
type zoneWriter struct {
	store *store.Store
	views *dnsViewCache
	// ctl is the zone controller when this replica leads, told of the
	// writes that need nothing more from it.
	ctl *atomic.Pointer[zoneController]
}

// ChangeZone applies fn to the zone and commits the result with audit,
// again from a fresh read when the zone changed meanwhile; fn's error
// aborts and writes nothing.
func (w *zoneWriter) ChangeZone(ctx context.Context, name string, audit store.AuditEvent, fn func(*store.Zone) error) (*store.Zone, error) {
	return w.ChangeZoneWith(ctx, name, audit, fn, nil)
}

// ChangeZoneWith is ChangeZone with more writes in the same transaction:
// with, called on every attempt, adds them to the batch (guarded by their
// own compares); its error aborts too.
func (w *zoneWriter) ChangeZoneWith(ctx context.Context, name string, audit store.AuditEvent, fn func(*store.Zone) error, with func(*store.Batch) error) (*store.Zone, error) {
	for {
		z, rev, err := w.store.GetZone(ctx, name)
		if err != nil {
			return nil, err
		}
		if err := fn(z); err != nil {
			return nil, err
		}
		b := store.NewBatch()
		t, err := w.fastTask(ctx, z)
		if err != nil {
			return nil, err
		}
		if t != nil {
			task, err := b.EnqueueRefreshing(z.Node, t.Spec, store.ZoneObject(z.Name), audit.Actor, t.Refresh)
			if err != nil {
				return nil, err
			}
			z.TaskID = task.ID
		}
		b.PutZone(z, rev)
		b.Audit(audit)
		if with != nil {
			if err := with(b); err != nil {
				return nil, err
			}
		}
		ok, crev, err := w.store.CommitRev(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("update zone %s: %w", name, err)
		}
		if ok {
			if c := w.ctl.Load(); c != nil && t != nil {
				// The write carries its task: the controller has nothing
				// to decide about it and skips its event.
				c.handledAt(z.Name, crev)
			}
			return z, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// fastTask is the task that converges z, just changed, on its DNS server.
// It is nil whenever the controller has more to decide than "send the new
// records" (no task can go yet, one is under way, the zone is new,
// failing, being deleted or rolling its keys). Like the controller, it
// records the servers the spec names and marks the zone PENDING.
func (w *zoneWriter) fastTask(ctx context.Context, z *store.Zone) (*zoneTask, error) {
	if z.Deleted || z.TaskID != "" || z.Node == "" || z.AppliedGeneration == 0 || z.Defaults || z.RotateStep > 0 ||
		(z.Status == store.ZoneFailed && z.Attempts >= maxTaskAttempts) {
		return nil, nil
	}
	view, err := w.views.get(ctx, w.store)
	if err != nil {
		return nil, err
	}
	if _, ok := view.servers[z.Node]; !ok {
		return nil, nil
	}
	t, err := ensureTask(z, view)
	if err != nil {
		return nil, nil // the controller records why
	}
	return t, nil
}
