package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// canonMasters makes the masters PowerDNS reports comparable with a spec's
// (ip:port, port 53 when none, sorted); ones it cannot read stay as they
// are, so they differ and get replaced.
func canonMasters(ms []string) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		if ap, err := netip.ParseAddrPort(m); err == nil {
			out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String())
		} else if a, err := netip.ParseAddr(m); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), 53).String())
		} else {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

// ensureSecondary makes zone a Slave of masters and, when that changed
// anything, transfers it at once rather than at the next refresh.
func ensureSecondary(ctx context.Context, c *Client, zone string, masters []string) (*agentpb.ZoneResult, error) {
	forget(c, zone) // no longer a primary here
	res := &agentpb.ZoneResult{Zone: zone, Kind: kindSlave}
	cur, err := c.zoneMeta(ctx, zone)
	switch {
	case IsNotFound(err):
		if err := c.createZone(ctx, &pdnsZone{Name: zone, Kind: kindSlave, Masters: masters}); err != nil {
			return nil, fmt.Errorf("create secondary zone %s: %w", zone, err)
		}
		res.Changed = true
	case err != nil:
		return nil, fmt.Errorf("ensure secondary zone %s: %w", zone, err)
	default:
		res.Existed, res.Serial, res.Dnssec = true, cur.Serial, cur.DNSSEC
		if cur.Kind != kindSlave || !slices.Equal(canonMasters(cur.Masters), masters) {
			if err := c.putZone(ctx, zone, &pdnsZone{Name: zone, Kind: kindSlave, Masters: masters}); err != nil {
				return nil, fmt.Errorf("ensure secondary zone %s: set masters: %w", zone, err)
			}
			res.Changed = true
		}
	}
	if res.Changed {
		// The transfer runs in the background; a master that is down now
		// is retried at the zone's refresh, so this is not an error.
		if err := c.axfrRetrieve(ctx, zone); err != nil {
			return res, fmt.Errorf("ensure secondary zone %s: start transfer: %w", zone, err)
		}
	}
	return res, nil
}

// DeleteZone removes a zone; a missing zone is success.
type DeleteZone struct {
	m    *Module
	req  *agentpb.DeleteZoneAction
	zone string
}

// NewDeleteZone builds the action from its wire form.
func (m *Module) NewDeleteZone(req *agentpb.DeleteZoneAction) actions.Action {
	return &DeleteZone{m: m, req: req}
}

// Name implements actions.Action.
func (a *DeleteZone) Name() string { return DeleteZoneName }

// Validate implements actions.Action.
func (a *DeleteZone) Validate() error {
	z, err := dnszone.ZoneName(a.req.GetZone())
	a.zone = z
	return err
}

// Apply implements actions.Action.
func (a *DeleteZone) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	c, unlock, err := a.m.openZone(env, a.Validate, &a.zone)
	if err != nil {
		return nil, err
	}
	defer unlock()
	forget(c, a.zone)
	res := &agentpb.ZoneResult{Zone: a.zone}
	err = c.deleteZone(ctx, a.zone)
	switch {
	case IsNotFound(err):
		return res, nil
	case err != nil:
		return nil, fmt.Errorf("delete zone %s: %w", a.zone, err)
	}
	res.Existed, res.Changed = true, true
	env.Logger.Info("zone deleted", "zone", a.zone)
	return res, nil
}

// SyncSecondaryZones converges the node's Slave zones: one bucket of the
// whole set, or a change (the proto message says which).
type SyncSecondaryZones struct {
	m       *Module
	req     *agentpb.SyncSecondaryZonesAction
	zones   map[string]secondaryZone
	removed map[string]bool
}

// maxSecondaryBuckets bounds a sync's bucket count: a million zones in
// buckets of a thousand.
const maxSecondaryBuckets = 1 << 10

// secondaryZone is one zone of the set: its canonical masters and the
// serial its primary last applied (0: unknown).
type secondaryZone struct {
	masters []string
	serial  uint32
}

// NewSyncSecondaryZones builds the action from its wire form.
func (m *Module) NewSyncSecondaryZones(req *agentpb.SyncSecondaryZonesAction) actions.Action {
	return &SyncSecondaryZones{m: m, req: req}
}

// Name implements actions.Action.
func (a *SyncSecondaryZones) Name() string { return SyncSecondaryZonesName }

// Validate implements actions.Action.
func (a *SyncSecondaryZones) Validate() error {
	bucket, buckets := a.req.GetBucket(), a.req.GetBuckets()
	switch {
	case buckets > maxSecondaryBuckets:
		return fmt.Errorf("%d buckets, at most %d allowed", buckets, maxSecondaryBuckets)
	case buckets > 0 && bucket >= buckets:
		return fmt.Errorf("bucket %d of %d", bucket, buckets)
	case buckets > 0 && len(a.req.GetRemoved()) > 0:
		return errors.New("a bucket's complete set names no zones to remove")
	case len(a.req.GetZones())+len(a.req.GetRemoved()) > MaxZonesPerTask:
		return fmt.Errorf("%d zones, at most %d allowed", len(a.req.GetZones())+len(a.req.GetRemoved()), MaxZonesPerTask)
	}
	zones, err := zoneSet(a.req.GetZones(), func(name string, z *agentpb.SecondaryZone) (secondaryZone, error) {
		if buckets > 0 && dnszone.Bucket(name, buckets) != bucket {
			return secondaryZone{}, fmt.Errorf("zone %s is not in bucket %d of %d", name, bucket, buckets)
		}
		if len(z.GetMasters()) == 0 {
			return secondaryZone{}, fmt.Errorf("secondary zone %s needs at least one master", name)
		}
		ms, err := mastersOf(z.GetMasters())
		if err != nil {
			return secondaryZone{}, fmt.Errorf("zone %s: %w", name, err)
		}
		return secondaryZone{masters: ms, serial: z.GetSerial()}, nil
	})
	if err != nil {
		return err
	}
	removed := make(map[string]bool, len(a.req.GetRemoved()))
	for _, r := range a.req.GetRemoved() {
		name, err := dnszone.ZoneName(r)
		if err != nil {
			return err
		}
		if _, dup := zones[name]; dup || removed[name] {
			return fmt.Errorf("zone %s is listed twice", name)
		}
		removed[name] = true
	}
	a.zones, a.removed = zones, removed
	return nil
}

// prunes reports whether the sync removes a Slave zone it does not list.
func (a *SyncSecondaryZones) prunes(name string) bool {
	if _, listed := a.zones[name]; listed {
		return false
	}
	if b := a.req.GetBuckets(); b > 0 {
		return dnszone.Bucket(name, b) == a.req.GetBucket()
	}
	return a.removed[name]
}

// listServerZones validates a zone-list action unless that was done, then
// reads every zone the node's PowerDNS holds: in the server's order and by
// name.
func (m *Module) listServerZones(ctx context.Context, env *actions.Env, validated bool, validate func() error, what string) (*Client, []pdnsZone, map[string]pdnsZone, error) {
	if !validated {
		if err := validate(); err != nil {
			return nil, nil, nil, err
		}
	}
	c, err := m.clientFor(env)
	if err != nil {
		return nil, nil, nil, err
	}
	all, err := c.zones(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	have := make(map[string]pdnsZone, len(all))
	for _, z := range all {
		have[z.Name] = z
	}
	return c, all, have, nil
}

// zoneSet validates the zones a task lists (at most MaxZonesPerTask, each
// once, by its canonical name) and maps each name to what each makes of
// its entry.
func zoneSet[Z interface{ GetZone() string }, V any](zs []Z, each func(name string, z Z) (V, error)) (map[string]V, error) {
	if len(zs) > MaxZonesPerTask {
		return nil, fmt.Errorf("%d zones, at most %d allowed", len(zs), MaxZonesPerTask)
	}
	out := make(map[string]V, len(zs))
	for _, z := range zs {
		name, err := dnszone.ZoneName(z.GetZone())
		if err != nil {
			return nil, err
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("zone %s is listed twice", name)
		}
		if out[name], err = each(name, z); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Apply implements actions.Action. Zones are independent: one that fails
// does not stop the others, and the error lists every failure.
func (a *SyncSecondaryZones) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	c, all, have, err := a.m.listServerZones(ctx, env, a.zones != nil, a.Validate, "sync secondary zones")
	if err != nil {
		return nil, err
	}
	res := &agentpb.SyncSecondaryZonesResult{}
	var errs []error
	names := make([]string, 0, len(a.zones))
	for n := range a.zones {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		want := a.zones[name]
		cur, ok := have[name]
		if ok && cur.Kind != kindSlave && cur.Kind != kindMaster {
			// Hand-made (Native): a secondary list never overrides it.
			errs = append(errs, fmt.Errorf("zone %s is a %s zone on this node, not made a secondary", name, cur.Kind))
			continue
		}
		// A Master zone the list names was this node's until the
		// control plane moved its primary elsewhere (an account migrated
		// off the node): it becomes a secondary of its new primary, not
		// a stale copy answering the old records.
		if ok && cur.Kind == kindSlave && slices.Equal(canonMasters(cur.Masters), want.masters) {
			if want.serial == 0 || !dnszone.SerialLess(cur.Serial, want.serial) {
				res.Unchanged++
				continue
			}
			// Behind its primary: PowerDNS would notice only at the
			// zone's SOA refresh, hours later.
			if err := c.axfrRetrieve(ctx, name); err != nil {
				errs = append(errs, fmt.Errorf("refresh secondary zone %s: %w", name, err))
				continue
			}
			res.Refreshed = append(res.Refreshed, name)
			continue
		}
		unlock := c.lockZone(name)
		_, err := ensureSecondary(ctx, c, name, want.masters)
		unlock()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			res.Updated = append(res.Updated, name)
		} else {
			res.Added = append(res.Added, name)
		}
	}
	for _, z := range all {
		if z.Kind != kindSlave || !a.prunes(z.Name) {
			continue
		}
		unlock := c.lockZone(z.Name)
		err := c.deleteZone(ctx, z.Name)
		unlock()
		if err != nil && !IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove secondary zone %s: %w", z.Name, err))
			continue
		}
		res.Removed = append(res.Removed, z.Name)
	}
	sort.Strings(res.Removed)
	if len(res.Added)+len(res.Removed)+len(res.Updated)+len(res.Refreshed) > 0 {
		env.Logger.Info("secondary zones synced", "added", len(res.Added), "removed", len(res.Removed), "updated", len(res.Updated),
			"refreshed", len(res.Refreshed), "unchanged", res.Unchanged)
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("sync secondary zones: %w", errors.Join(errs...))
	}
	return res, nil
}
