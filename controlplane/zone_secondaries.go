package controlplane

import (
	"context"
	"crypto/sha256"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// Secondary sync tuning.
const (
	// secondaryResync is how often every secondary is sent its full zone
	// set even when nothing changed: the set is what heals a wiped or
	// drifted secondary, without anyone noticing the drift first.
	secondaryResync = 60 * time.Second
	// secondaryDebounce gathers a burst of zone changes into one sync.
	secondaryDebounce = 500 * time.Millisecond
)

type sentSync struct {
	hash [32]byte
	at   time.Time
}

// syncSecondaries sends every DNS node the complete set of zones it must
// serve as a secondary: every zone whose primary is another DNS node. A
// set equal to the last one sent is sent again only every secondaryResync.
func (c *zoneController) syncSecondaries(ctx context.Context) error {
	v, err := c.dnsView(ctx)
	if err != nil {
		return err
	}
	if len(v.order) < 2 {
		return nil
	}
	zones, _, err := c.s.store.ListZoneStates(ctx)
	if err != nil {
		return err
	}
	return c.sendSecondaries(ctx, v, zones)
}

func (c *zoneController) sendSecondaries(ctx context.Context, v *dnsView, zones []store.ZoneState) error {
	now := time.Now()
	for _, node := range v.order {
		spec := &agentpb.SyncSecondaryZonesAction{}
		for _, z := range zones {
			p, ok := v.servers[z.Node]
			if z.Deleted || !ok || z.Node == node || z.AppliedGeneration == 0 {
				continue
			}
			spec.Zones = append(spec.Zones, &agentpb.SecondaryZone{Zone: z.Name, Masters: []string{p.addr}, Serial: z.Serial})
		}
		h := syncHash(spec)
		if last, ok := c.sent[node]; ok && last.hash == h && now.Sub(last.at) < c.resyncEvery() {
			continue
		}
		if _, err := c.s.store.EnqueueTask(ctx, node, &agentpb.Task{Action: &agentpb.Task_SyncSecondaryZones{SyncSecondaryZones: spec}},
			"controller", store.NewAuditEvent("system", c.s.id, "syncSecondaryZones", node, "ok")); err != nil {
			return err
		}
		c.sent[node] = sentSync{hash: h, at: now}
	}
	return nil
}

// syncHash identifies the zones and masters a sync names, not their
// serials. A secondary behind a serial is caught up by the periodic sync;
// every change already sends the secondaries a refresh of its own, and
// sending each of them its whole zone set after every change would cost
// far more.
func syncHash(spec *agentpb.SyncSecondaryZonesAction) [32]byte {
	h := sha256.New()
	for _, z := range spec.Zones {
		h.Write([]byte(z.Zone))
		for _, m := range z.Masters {
			h.Write([]byte{0})
			h.Write([]byte(m))
		}
		h.Write([]byte{'\n'})
	}
	var out [32]byte
	h.Sum(out[:0])
	return out
}
