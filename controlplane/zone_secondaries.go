package controlplane

import (
	"context"
	"slices"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/protos/agentpb"
)

// Secondary sync tuning.
const (
	// secondaryResync is how often every secondary is sent its complete
	// zone set even when nothing changed: the set is what heals a wiped
	// or drifted secondary, without anyone noticing the drift first.
	secondaryResync = 60 * time.Second
	// secondaryDebounce gathers a burst of zone changes into one sync.
	secondaryDebounce = 500 * time.Millisecond
	// maxSyncZones is about the most zones one sync task names: a
	// complete set goes in buckets of about this many and a change in
	// tasks of at most this many, so that no task nears etcd's request
	// limit (1.5 MiB by default) whatever the number of zones.
	maxSyncZones = 1000
)

// sentSet is what a secondary was last sent: each zone's master, and when
// it last had its complete set.
type sentSet struct {
	masters map[string]string
	fullAt  time.Time
}

// syncSecondaries sends every DNS node the zones it must serve as a
// secondary: every zone whose primary is another DNS node.
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

// sendSecondaries sends each secondary what changed since its last sync
// (zones added, moved or removed; a new serial alone is not a change: the
// primary's change sends the secondaries a refresh of its own), and its
// complete set, in buckets, every secondaryResync and at its first sync
// of the term.
func (c *zoneController) sendSecondaries(ctx context.Context, v *dnsView, zones []store.ZoneState) error {
	now := time.Now()
	for _, node := range v.order {
		var want []*agentpb.SecondaryZone
		for _, z := range zones {
			p, ok := v.servers[z.Node]
			if z.Deleted || !ok || z.Node == node || z.AppliedGeneration == 0 {
				continue
			}
			want = append(want, &agentpb.SecondaryZone{Zone: z.Name, Masters: []string{p.addr}, Serial: z.Serial})
		}
		last := c.sent[node]
		next := &sentSet{masters: make(map[string]string, len(want)), fullAt: now}
		for _, z := range want {
			next.masters[z.Zone] = z.Masters[0]
		}
		var specs []*agentpb.SyncSecondaryZonesAction
		if last == nil || now.Sub(last.fullAt) >= c.resyncEvery() {
			specs = completeSync(want)
		} else {
			specs, next.fullAt = changeSync(last.masters, want), last.fullAt
		}
		for _, spec := range specs {
			if _, err := c.s.store.EnqueueTask(ctx, node, &agentpb.Task{Action: &agentpb.Task_SyncSecondaryZones{SyncSecondaryZones: spec}},
				"controller", store.NewAuditEvent("system", c.s.id, "syncSecondaryZones", node, "ok")); err != nil {
				// Not remembered: the next sync sends what this one did.
				return err
			}
		}
		c.sent[node] = next
	}
	return nil
}

// completeSync is a secondary's complete set of zones, in as few buckets
// (a power of two) as keep each near maxSyncZones. Every bucket is sent,
// an empty one too: it removes what the secondary holds in it.
func completeSync(want []*agentpb.SecondaryZone) []*agentpb.SyncSecondaryZonesAction {
	buckets := uint32(1)
	for len(want) > int(buckets)*maxSyncZones {
		buckets *= 2
	}
	specs := make([]*agentpb.SyncSecondaryZonesAction, buckets)
	for i := range specs {
		specs[i] = &agentpb.SyncSecondaryZonesAction{Bucket: uint32(i), Buckets: buckets}
	}
	for _, z := range want {
		b := specs[dnszone.Bucket(z.Zone, buckets)]
		b.Zones = append(b.Zones, z)
	}
	return specs
}

// changeSync is what changed between the zones last sent (zone → master)
// and want: zones new or with another master, zones gone; in tasks of at
// most maxSyncZones names.
func changeSync(last map[string]string, want []*agentpb.SecondaryZone) []*agentpb.SyncSecondaryZonesAction {
	var specs []*agentpb.SyncSecondaryZonesAction
	spec := &agentpb.SyncSecondaryZonesAction{}
	add := func(z *agentpb.SecondaryZone, removed string) {
		if z != nil {
			spec.Zones = append(spec.Zones, z)
		} else {
			spec.Removed = append(spec.Removed, removed)
		}
		if len(spec.Zones)+len(spec.Removed) == maxSyncZones {
			specs = append(specs, spec)
			spec = &agentpb.SyncSecondaryZonesAction{}
		}
	}
	kept := make(map[string]bool, len(want))
	for _, z := range want {
		kept[z.Zone] = true
		if m, ok := last[z.Zone]; !ok || m != z.Masters[0] {
			add(z, "")
		}
	}
	var gone []string
	for name := range last {
		if !kept[name] {
			gone = append(gone, name)
		}
	}
	slices.Sort(gone)
	for _, name := range gone {
		add(nil, name)
	}
	if len(spec.Zones)+len(spec.Removed) > 0 {
		specs = append(specs, spec)
	}
	return specs
}
