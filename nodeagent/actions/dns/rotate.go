package dns

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// metaRollover records a ZSK rollover in progress as zone metadata (the
// "X-" prefix marks metadata PowerDNS itself ignores): phase, the new and
// old key ids and when the phase began. Keeping it with the zone rather
// than in the agent means a restarted or replaced agent continues the same
// rollover, and the time check survives a control plane that retries.
const metaRollover = "X-NPANEL-ZSK-ROLLOVER"

// Rollover phases, as reported in ZoneResult.rotation_phase.
const (
	PhasePublished = "published"
	PhaseActive    = "active"
	PhaseDone      = "done"
)

// MaxRotateInterval bounds min_interval_seconds.
const MaxRotateInterval = 30 * 24 * 3600

// ErrTooEarly is returned for a rollover step sent before the previous
// step's interval has passed; nothing is changed.
var ErrTooEarly = actions.Fail(agentpb.ErrorReason_ERROR_REASON_TOO_EARLY, "rollover step too early")

type rollover struct {
	phase    string
	newID    int
	oldID    int
	at       time.Time
	interval time.Duration
}

func (r rollover) values() []string {
	return []string{
		"phase=" + r.phase,
		"new=" + strconv.Itoa(r.newID),
		"old=" + strconv.Itoa(r.oldID),
		"at=" + strconv.FormatInt(r.at.Unix(), 10),
		"interval=" + strconv.FormatInt(int64(r.interval/time.Second), 10),
	}
}

func parseRollover(vals []string) (rollover, bool) {
	var r rollover
	got := 0
	for _, v := range vals {
		k, val, _ := strings.Cut(v, "=")
		n, err := strconv.ParseInt(val, 10, 64)
		switch {
		case k == "phase":
			r.phase = val
			got++
		case err != nil:
			return r, false
		case k == "new":
			r.newID, got = int(n), got+1
		case k == "old":
			r.oldID, got = int(n), got+1
		case k == "at":
			r.at, got = time.Unix(n, 0), got+1
		case k == "interval":
			r.interval, got = time.Duration(n)*time.Second, got+1
		}
	}
	return r, got == 5 && (r.phase == PhasePublished || r.phase == PhaseActive)
}

// RotateZoneKeys runs one step of a pre-publish ZSK rollover.
type RotateZoneKeys struct {
	req  *agentpb.RotateZoneKeysAction
	zone string
	now  func() time.Time
}

// NewRotateZoneKeys builds the action from its wire form.
func NewRotateZoneKeys(req *agentpb.RotateZoneKeysAction) actions.Action {
	return &RotateZoneKeys{req: req, now: time.Now}
}

// Name implements actions.Action.
func (a *RotateZoneKeys) Name() string { return RotateZoneKeysName }

// Validate implements actions.Action.
func (a *RotateZoneKeys) Validate() error {
	z, err := dnszone.ZoneName(a.req.GetZone())
	if err != nil {
		return err
	}
	a.zone = z
	switch a.req.GetStep() {
	case agentpb.RotateZoneKeysAction_STEP_PUBLISH, agentpb.RotateZoneKeysAction_STEP_ACTIVATE, agentpb.RotateZoneKeysAction_STEP_RETIRE:
	default:
		return fmt.Errorf("rollover step %v: want PUBLISH, ACTIVATE or RETIRE", a.req.GetStep())
	}
	if s := a.req.GetMinIntervalSeconds(); s > MaxRotateInterval {
		return fmt.Errorf("min_interval_seconds %d exceeds %d (30 days)", s, MaxRotateInterval)
	}
	return nil
}

// Apply implements actions.Action.
func (a *RotateZoneKeys) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	c, unlock, err := openZone(env, a.Validate, &a.zone)
	if err != nil {
		return nil, err
	}
	defer unlock()
	forget(c, a.zone) // keys and serial change outside the converge
	res, err := a.step(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("rotate keys of %s: %w", a.zone, err)
	}
	if res.Changed {
		env.Logger.Info("zsk rollover step", "zone", a.zone, "phase", res.RotationPhase, "serial", res.Serial)
	}
	return res, nil
}

func (a *RotateZoneKeys) step(ctx context.Context, c *Client) (*agentpb.ZoneResult, error) {
	z, err := c.zoneMeta(ctx, a.zone)
	if err != nil {
		return nil, err
	}
	if z.Kind != kindMaster {
		return nil, fmt.Errorf("zone is of kind %s; keys are rotated on its primary", z.Kind)
	}
	keys, err := c.keys(ctx, a.zone)
	if err != nil {
		return nil, err
	}
	meta, err := c.metadata(ctx, a.zone)
	if err != nil {
		return nil, err
	}
	var ro rollover
	inProgress := false
	for _, m := range meta {
		if m.Kind == metaRollover {
			ro, inProgress = parseRollover(m.Metadata)
		}
	}
	byID := map[int]pdnsKey{}
	var activeZSK []pdnsKey
	for _, k := range keys {
		byID[k.ID] = k
		if k.KeyType == "zsk" && k.Active {
			activeZSK = append(activeZSK, k)
		}
	}
	now := a.now()
	interval := time.Duration(a.req.GetMinIntervalSeconds()) * time.Second
	res := &agentpb.ZoneResult{Zone: a.zone, Kind: kindMaster, Dnssec: z.DNSSEC, Existed: true, Serial: z.Serial}
	done := func(phase string, r rollover) *agentpb.ZoneResult {
		res.RotationPhase = phase
		if phase != PhaseDone {
			res.NextStepNotBeforeUnix = r.at.Add(r.interval).Unix()
		}
		return res
	}
	tooEarly := func(r rollover) error {
		if wait := r.at.Add(r.interval).Sub(now); wait > 0 {
			return fmt.Errorf("%w: phase %s began %s ago, wait %s more", ErrTooEarly, r.phase, now.Sub(r.at).Round(time.Second), wait.Round(time.Second))
		}
		return nil
	}

	switch a.req.GetStep() {
	case agentpb.RotateZoneKeysAction_STEP_PUBLISH:
		if inProgress {
			if ro.phase == PhasePublished {
				return done(ro.phase, ro), nil // repeated step
			}
			return nil, fmt.Errorf("a rollover is in phase %s; send RETIRE to finish it first", ro.phase)
		}
		if len(activeZSK) != 1 {
			return nil, fmt.Errorf("the zone has %d active ZSKs, a rollover needs exactly one (is DNSSEC enabled?)", len(activeZSK))
		}
		old := activeZSK[0]
		k, err := c.addKey(ctx, a.zone, pdnsKey{KeyType: "zsk", Active: false, Published: true, Algorithm: old.Algorithm})
		if err != nil {
			return nil, fmt.Errorf("add new ZSK: %w", err)
		}
		ro = rollover{phase: PhasePublished, newID: k.ID, oldID: old.ID, at: now, interval: interval}
		if err := c.putMetadata(ctx, a.zone, metaRollover, ro.values()); err != nil {
			_ = c.deleteKey(context.WithoutCancel(ctx), a.zone, k.ID)
			return nil, fmt.Errorf("record rollover: %w (new key removed again)", err)
		}
	case agentpb.RotateZoneKeysAction_STEP_ACTIVATE:
		if !inProgress {
			return nil, errors.New("no rollover in progress; send PUBLISH first")
		}
		if ro.phase == PhaseActive {
			return done(ro.phase, ro), nil
		}
		if err := tooEarly(ro); err != nil {
			return nil, err
		}
		if _, ok := byID[ro.newID]; !ok {
			return nil, fmt.Errorf("the new ZSK %d is gone; remove metadata %s to start over", ro.newID, metaRollover)
		}
		// New key signs before the old one stops: at no moment is the
		// zone without an active ZSK. The old key stays published, so
		// cached signatures made with it still verify.
		if err := c.setKey(ctx, a.zone, ro.newID, true, true); err != nil {
			return nil, fmt.Errorf("activate new ZSK: %w", err)
		}
		if _, ok := byID[ro.oldID]; ok {
			if err := c.setKey(ctx, a.zone, ro.oldID, false, true); err != nil {
				return nil, fmt.Errorf("deactivate old ZSK: %w", err)
			}
		}
		ro.phase, ro.at, ro.interval = PhaseActive, now, interval
		if err := c.putMetadata(ctx, a.zone, metaRollover, ro.values()); err != nil {
			return nil, fmt.Errorf("record rollover: %w", err)
		}
	case agentpb.RotateZoneKeysAction_STEP_RETIRE:
		if !inProgress {
			return done(PhaseDone, ro), nil // finished before, or never begun
		}
		if ro.phase != PhaseActive {
			return nil, fmt.Errorf("the rollover is in phase %s; send ACTIVATE first", ro.phase)
		}
		if err := tooEarly(ro); err != nil {
			return nil, err
		}
		if _, ok := byID[ro.oldID]; ok {
			if err := c.deleteKey(ctx, a.zone, ro.oldID); err != nil {
				return nil, fmt.Errorf("remove old ZSK: %w", err)
			}
		}
		if err := c.deleteMetadata(ctx, a.zone, metaRollover); err != nil {
			return nil, fmt.Errorf("clear rollover: %w", err)
		}
		ro.phase = PhaseDone
	}
	// The DNSKEY set changed: the secondaries must transfer it.
	serial, err := bumpSerial(ctx, c, a.zone, now)
	if err != nil {
		return nil, err
	}
	if err := c.notify(ctx, a.zone); err != nil {
		return nil, fmt.Errorf("notify: %w", err)
	}
	res.Serial, res.Changed = serial, true
	return done(ro.phase, ro), nil
}

// bumpSerial rewrites the zone's SOA with the next serial.
func bumpSerial(ctx context.Context, c *Client, zone string, now time.Time) (uint32, error) {
	z, err := c.zone(ctx, zone)
	if err != nil {
		return 0, err
	}
	for _, s := range z.RRsets {
		if s.Type != "SOA" || len(s.Records) == 0 {
			continue
		}
		soa, serial, ok := parseSOA(s.Records[0].Content)
		if !ok {
			return 0, fmt.Errorf("unreadable SOA %q", s.Records[0].Content)
		}
		next := dnszone.NextSerial(serial, now)
		set := pdnsRRset{Name: zone, Type: "SOA", TTL: s.TTL, ChangeType: "REPLACE", Records: []pdnsRecord{{Content: soa.Content(next)}}}
		if err := c.patchZone(ctx, zone, []pdnsRRset{set}); err != nil {
			return 0, fmt.Errorf("bump serial: %w", err)
		}
		return next, nil
	}
	return 0, errors.New("zone has no SOA")
}
