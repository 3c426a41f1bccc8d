package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// The secondaries' sync heals a wiped secondary; the checks here heal a
// primary. Once a zone is ACTIVE nothing else sends its node a task until
// the zone changes, so a primary whose PowerDNS database was lost, or
// restored from an older backup, would go on answering without the zone
// (or with old records) while its secondaries served their copy until it
// expired.
const (
	// primaryCheck is how often each primary checks its zones.
	primaryCheck = time.Minute
	// primaryCheckChunk bounds the zones of one check_primary_zones task,
	// which keeps its spec and result far below etcd's request limit.
	primaryCheckChunk = 10000
	// primaryCheckLost is how many check periods a node's checks may stay
	// unanswered (the node down, a task lost) before it gets new ones.
	primaryCheckLost = 10
	// healChunk bounds the zones converged again in one transaction: each
	// costs a compare, a put and an audit event.
	healChunk = 40
)

// outstandingChecks are the checks sent to one node and not yet answered.
type outstandingChecks struct {
	n  int
	at time.Time
}

// checkPrimaries sends every DNS server, once per check period, the
// serial of each primary zone it should hold as the controller last saw it
// applied. Zones with a change under way are left out: their task
// converges them anyway. A node with checks still unanswered gets no new
// ones, so that a node that is down does not pile them up.
func (c *zoneController) checkPrimaries(ctx context.Context, v *dnsView, zones []store.ZoneState) error {
	now := time.Now()
	if !c.checkDue(now) {
		return nil
	}
	c.checkedAt = now
	byNode := map[string][]*agentpb.PrimaryZoneSerial{}
	for i := range zones {
		z := &zones[i]
		if !settledZone(z) {
			continue
		}
		if _, ok := v.servers[z.Node]; ok {
			byNode[z.Node] = append(byNode[z.Node], &agentpb.PrimaryZoneSerial{Zone: z.Name, Serial: z.Serial})
		}
	}
	for _, node := range v.order {
		list := byNode[node]
		if len(list) == 0 {
			continue
		}
		if o, ok := c.checking[node]; ok && now.Sub(o.at) < primaryCheckLost*c.checkEvery() {
			continue
		}
		sent := 0
		for chunk := range slices.Chunk(list, primaryCheckChunk) {
			b := store.NewBatch()
			spec := &agentpb.Task{Action: &agentpb.Task_CheckPrimaryZones{CheckPrimaryZones: &agentpb.CheckPrimaryZonesAction{Zones: chunk}}}
			if _, err := b.Enqueue(node, spec, dnsNodeObject(node), "controller"); err != nil {
				return err
			}
			b.Audit(store.NewAuditEvent("system", c.s.id, "checkPrimaryZones", node, "ok"))
			if _, err := c.s.store.Commit(ctx, b); err != nil {
				return err
			}
			sent++
		}
		c.checking[node] = outstandingChecks{n: sent, at: now}
	}
	return nil
}

func (c *zoneController) checkEvery() time.Duration {
	if d := c.s.cfg.ZonePrimaryCheck; d > 0 {
		return d
	}
	return primaryCheck
}

func (c *zoneController) checkDue(now time.Time) bool {
	return now.Sub(c.checkedAt) >= c.checkEvery()
}

// settledZone reports whether z is served by its primary as the
// controller last applied it, with nothing under way.
func settledZone(z *store.ZoneState) bool {
	return !z.Deleted && z.Status == store.ZoneActive && z.TaskID == "" &&
		z.Generation == z.AppliedGeneration && z.AppliedGeneration > 0 && z.Serial != 0
}

func dnsNodeObject(node string) string { return "dnsnode/" + node }

// describeDrift says how a zone drifted, for the audit log.
func describeDrift(d *agentpb.ZoneDrift) string {
	switch {
	case d.Kind == "":
		return "missing"
	case d.Kind != "Master":
		return fmt.Sprintf("a %s zone at serial %d, not the primary at %d", d.Kind, d.Serial, d.WantSerial)
	}
	return fmt.Sprintf("at serial %d, not %d", d.Serial, d.WantSerial)
}

// takeChecks acts on the answered checks, then consumes their notices.
func (c *zoneController) takeChecks(ctx context.Context) error {
	done, err := c.s.store.DNSNodeDone(ctx)
	if err != nil || len(done) == 0 {
		return err
	}
	for _, d := range done {
		node, _, _ := strings.Cut(strings.TrimPrefix(d.Key, store.PrefixDoneDNSNodes), "/")
		c.checkAnswered(node)
		switch {
		case d.Task == nil:
			// Its record is gone: nothing to act on.
		case d.Task.Status != store.TaskSucceeded:
			c.s.log.Warn("zone controller: check of primary zones failed", "node", node, "err", d.Task.Error)
		default:
			res, err := d.Task.CheckPrimaryZonesResult()
			if err != nil {
				c.s.log.Warn("zone controller: check of primary zones: bad result", "node", node, "err", err)
				break
			}
			if err := c.heal(ctx, node, res.Drifted); err != nil {
				return err
			}
		}
		b := store.NewBatch()
		b.Consume(d.Key)
		if _, err := c.s.store.Commit(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (c *zoneController) checkAnswered(node string) {
	o, ok := c.checking[node]
	if !ok {
		return
	}
	if o.n--; o.n <= 0 {
		delete(c.checking, node)
		return
	}
	c.checking[node] = o
}

// heal converges again every drifted zone still as the check saw it, by
// bumping its generation: the ensure that follows reads the zone whole
// (the check made the agent forget what it had applied, or it is what the
// agent remembers) and gives it a serial above the last one, so the
// secondaries transfer it too. A zone
// changed since is left to that change. When a zone changes between the
// read and the commit, its chunk is left to the next check.
func (c *zoneController) heal(ctx context.Context, node string, drifts []*agentpb.ZoneDrift) error {
	for chunk := range slices.Chunk(drifts, healChunk) {
		b := store.NewBatch()
		var names []string
		for _, d := range chunk {
			z, rev, err := c.s.store.GetZone(ctx, strings.TrimSuffix(d.Zone, "."))
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if st := z.State(); z.Node != node || !settledZone(&st) || z.Serial != d.WantSerial {
				continue
			}
			z.Generation++
			z.UpdatedAt = b.Now()
			b.PutZone(z, rev)
			b.Audit(store.NewAuditEvent("system", c.s.id, "zone.drifted", z.Name, describeDrift(d)+" on "+node))
			names = append(names, z.Name)
		}
		if len(names) == 0 {
			continue
		}
		ok, err := c.s.store.Commit(ctx, b)
		if err != nil {
			return err
		}
		if ok {
			c.s.log.Warn("zone controller: primary zones drifted on their node; converging them again", "node", node, "zones", len(names))
			c.mark(names...)
		}
	}
	return nil
}
