package controlplane

import (
	"context"

	"github.com/npanel/npanel/controlplane/store"
)

// ZoneTask is the task that converges a zone just changed through the API
// on its DNS server, for the API to enqueue in the same transaction as the
// change: an operator's record is then served without waiting for the
// zone controller's pass. It is nil whenever the controller has more to
// decide than "send the new records" (no task can go yet, one is under
// way, the zone is new, failing, being deleted or rolling its keys); the
// controller then converges the zone as always. Like the controller, it
// records the servers the spec names and marks the zone PENDING.
func (s *Server) ZoneTask(ctx context.Context, z *store.Zone) (*store.ZoneTask, error) {
	if z.Deleted || z.TaskID != "" || z.Node == "" || z.AppliedGeneration == 0 || z.Defaults || z.RotateStep > 0 ||
		(z.Status == store.ZoneFailed && z.Attempts >= maxTaskAttempts) {
		return nil, nil
	}
	view, err := s.dnsViews.get(ctx, s.store)
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

// ZoneTaskQueued tells the zone controller that the API wrote zone at rev
// together with the task ZoneTask gave it: the controller has nothing to
// decide about that write and skips its event.
func (s *Server) ZoneTaskQueued(zone string, rev int64) {
	if c := s.zoneCtl.Load(); c != nil {
		c.handledAt(zone, rev)
	}
}
