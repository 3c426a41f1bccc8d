package dns

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// appliedMaxAge bounds how long the agent trusts what it last wrote to a
// zone. Within it a change costs one PATCH; after it the next change reads
// the zone again and so converges edits made behind the agent's back
// (pdnsutil, a restored database).
const appliedMaxAge = 5 * time.Minute

// appliedState is a primary zone as the agent last converged it: every
// rrset the agent manages, its metadata, SOA and DNSSEC state.
type appliedState struct {
	sets   map[setKey]rrset
	meta   map[string][]string
	soa    dnszone.SOA
	serial uint32
	dnssec bool
	ds     []string
	at     time.Time
}

// applied holds the state per PowerDNS server and zone. Entries are read
// and written only under the zone's lock (lockZone).
var applied = struct {
	sync.Mutex
	m map[string]*appliedState
}{m: map[string]*appliedState{}}

func appliedKey(c *Client, zone string) string { return c.base + " " + zone }

func recall(c *Client, zone string, now time.Time) *appliedState {
	applied.Lock()
	defer applied.Unlock()
	st := applied.m[appliedKey(c, zone)]
	if st != nil && now.Sub(st.at) > appliedMaxAge {
		delete(applied.m, appliedKey(c, zone))
		return nil
	}
	return st
}

func remember(c *Client, zone string, st *appliedState) {
	applied.Lock()
	defer applied.Unlock()
	applied.m[appliedKey(c, zone)] = st
}

// forget drops what the agent knew of a zone: after any action that
// changes it other than a converge (keys rotated, kind changed, deleted)
// and after any failure.
func forget(c *Client, zone string) {
	applied.Lock()
	defer applied.Unlock()
	delete(applied.m, appliedKey(c, zone))
}

// patchApplied applies a change from the remembered state: the rrsets
// that differ and the next serial in one PATCH, then flush and NOTIFY
// together. ok is false when the remembered state cannot be used (none,
// stale, DNSSEC or metadata changed, nothing to change) or the PATCH was
// refused (the zone is gone or was changed behind the agent's back): the
// caller then converges from what the server holds. An error after the
// PATCH went through is returned as such.
func (a *EnsureZone) patchApplied(ctx context.Context, c *Client, env *actions.Env, want map[setKey]rrset, wantMeta map[string][]string) (res *agentpb.ZoneResult, ok bool, err error) {
	z := a.zone
	now := a.now()
	st := recall(c, z.Name, now)
	if st == nil || st.dnssec != a.req.GetDnssec() || !maps.EqualFunc(st.meta, wantMeta, slices.Equal) {
		return nil, false, nil
	}
	patch := diffSets(st.sets, want)
	if len(patch) == 0 && st.soa == z.SOA {
		// Nothing changed since: a repeated ensure is how drift gets
		// repaired, and nobody waits on it, so it reads the zone.
		return nil, false, nil
	}
	res = &agentpb.ZoneResult{Zone: z.Name, Kind: kindMaster, Dnssec: st.dnssec, Existed: true, Ds: st.ds}
	res.Serial = dnszone.NextSerial(st.serial, now)
	patch = append(patch, soaSet(z, res.Serial))
	if err := c.patchZone(ctx, z.Name, patch); err != nil {
		// Gone or changed behind our back: the full converge finds out.
		env.Logger.Info("zone differs from what the agent applied; reading it", "zone", z.Name, "err", err)
		forget(c, z.Name)
		return nil, false, nil
	}
	res.Changed = true
	if err := flushAndNotify(ctx, c, z.Name); err != nil {
		forget(c, z.Name)
		return nil, true, err
	}
	remember(c, z.Name, &appliedState{sets: want, meta: wantMeta, soa: z.SOA, serial: res.Serial, dnssec: st.dnssec, ds: st.ds, at: now})
	env.Logger.Info("zone updated", "zone", z.Name, "rrsets", len(patch)-1, "serial", res.Serial)
	return res, true, nil
}

// diffSets is the PATCH that turns have into want (without the SOA),
// deletions first.
func diffSets(have, want map[setKey]rrset) []pdnsRRset {
	var patch []pdnsRRset
	for k, s := range want {
		if h, ok := have[k]; !ok || !h.equal(s) {
			patch = append(patch, replaceSet(k, s))
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			patch = append(patch, pdnsRRset{Name: k.name, Type: k.typ, ChangeType: "DELETE", Records: []pdnsRecord{}})
		}
	}
	sortPatch(patch)
	return patch
}

// flushAndNotify drops the server's cached answers below zone and sends
// NOTIFY to its secondaries (see flushCache for why a PATCH needs the
// flush too). The two are independent; issued together
// they cost one round trip.
func flushAndNotify(ctx context.Context, c *Client, zone string) error {
	var wg sync.WaitGroup
	var ferr, nerr error
	wg.Go(func() { ferr = c.flushCache(ctx, zone) })
	wg.Go(func() { nerr = c.notify(ctx, zone) })
	wg.Wait()
	switch {
	case ferr != nil:
		return fmt.Errorf("flush cached answers: %w", ferr)
	case nerr != nil:
		return fmt.Errorf("notify: %w", nerr)
	}
	return nil
}
