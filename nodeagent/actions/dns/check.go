package dns

import (
	"context"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// CheckPrimaryZones reports which of the node's primary zones PowerDNS no
// longer holds as the control plane last saw them applied. It reads one
// listing of the server's zones and changes nothing on the server:
// converging a drifted zone needs its whole spec, which only the control
// plane has.
type CheckPrimaryZones struct {
	req   *agentpb.CheckPrimaryZonesAction
	zones map[string]uint32 // canonical zone → serial
}

// NewCheckPrimaryZones builds the action from its wire form.
func NewCheckPrimaryZones(req *agentpb.CheckPrimaryZonesAction) actions.Action {
	return &CheckPrimaryZones{req: req}
}

// Name implements actions.Action.
func (a *CheckPrimaryZones) Name() string { return CheckPrimaryZonesName }

// Validate implements actions.Action.
func (a *CheckPrimaryZones) Validate() (err error) {
	a.zones, err = zoneSet(a.req.GetZones(), func(_ string, z *agentpb.PrimaryZoneSerial) (uint32, error) {
		return z.GetSerial(), nil
	})
	return err
}

// Apply implements actions.Action.
func (a *CheckPrimaryZones) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	c, _, have, err := listServerZones(ctx, env, a.zones != nil, a.Validate, "check primary zones")
	if err != nil {
		return nil, err
	}
	res := &agentpb.CheckPrimaryZonesResult{}
	for name, want := range a.zones {
		cur, ok := have[name]
		switch {
		case ok && cur.Kind == kindMaster && cur.Serial == want:
			res.Matching++
			continue
		case ok:
			res.Drifted = append(res.Drifted, &agentpb.ZoneDrift{Zone: name, WantSerial: want, Serial: cur.Serial, Kind: cur.Kind})
		default:
			res.Drifted = append(res.Drifted, &agentpb.ZoneDrift{Zone: name, WantSerial: want})
		}
		forgetUnlessApplied(c, name, cur, ok)
	}
	sort.Slice(res.Drifted, func(i, j int) bool { return res.Drifted[i].Zone < res.Drifted[j].Zone })
	if len(res.Drifted) > 0 {
		env.Logger.Warn("primary zones drifted from what the control plane applied", "drifted", len(res.Drifted), "matching", res.Matching)
	}
	return res, nil
}

// forgetUnlessApplied drops what the agent remembers of a drifted zone
// unless the server holds the zone at the serial the agent itself last
// applied (a change the control plane has not recorded yet, the usual
// reason for a serial ahead of the check's). Anything else changed the zone
// behind the agent's back, and the next ensure must read it whole rather
// than patch a change onto a state the server no longer holds.
func forgetUnlessApplied(c *Client, name string, cur pdnsZone, exists bool) {
	unlock := lockZone(name)
	defer unlock()
	if st := recall(c, name, time.Now()); st != nil && exists && cur.Kind == kindMaster && cur.Serial == st.serial {
		return
	}
	forget(c, name)
}
