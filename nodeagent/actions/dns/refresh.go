package dns

import (
	"context"
	"errors"
	"fmt"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// RefreshSecondaryZone starts a secondary's transfer of a zone at once when
// it holds an older serial than the primary published.
type RefreshSecondaryZone struct {
	req  *agentpb.RefreshSecondaryZoneAction
	zone string
}

// NewRefreshSecondaryZone builds the action from its wire form.
func NewRefreshSecondaryZone(req *agentpb.RefreshSecondaryZoneAction) actions.Action {
	return &RefreshSecondaryZone{req: req}
}

// Name implements actions.Action.
func (a *RefreshSecondaryZone) Name() string { return RefreshSecondaryZoneName }

// Validate implements actions.Action.
func (a *RefreshSecondaryZone) Validate() error {
	z, err := dnszone.ZoneName(a.req.GetZone())
	if err != nil {
		return err
	}
	if a.req.GetSerial() == 0 {
		return errors.New("refresh needs the primary's serial")
	}
	a.zone = z
	return nil
}

// Apply implements actions.Action. It changes nothing when the zone is not a
// Slave here (this node is its primary, or the secondary sync has not
// created it yet) or is already at the serial; otherwise it asks PowerDNS
// for the transfer, which runs in the background. Asking twice is harmless.
func (a *RefreshSecondaryZone) Apply(ctx context.Context, env *actions.Env) (any, error) {
	c, unlock, err := openZone(env, a.Validate, &a.zone)
	if err != nil {
		return nil, err
	}
	defer unlock()
	res := &Result{Zone: a.zone}
	cur, err := c.zoneMeta(ctx, a.zone)
	switch {
	case IsNotFound(err):
		return res, nil
	case err != nil:
		return nil, fmt.Errorf("refresh secondary zone %s: %w", a.zone, err)
	}
	res.Existed, res.Kind, res.Serial = true, cur.Kind, cur.Serial
	if cur.Kind != kindSlave || !serialOlder(cur.Serial, a.req.GetSerial()) {
		return res, nil
	}
	if err := c.axfrRetrieve(ctx, a.zone); err != nil {
		return nil, fmt.Errorf("refresh secondary zone %s: start transfer: %w", a.zone, err)
	}
	res.Changed = true
	return res, nil
}

// serialOlder compares SOA serials in serial-number arithmetic (RFC 1982):
// a serial that wrapped past 2^32 is still newer.
func serialOlder(ours, theirs uint32) bool {
	return ours != theirs && int32(theirs-ours) > 0
}
