// Package dns implements the DNS actions of the node agent against the
// node's own PowerDNS, over its HTTP API: ensure_zone (primary or
// secondary), delete_zone, sync_secondary_zones, refresh_secondary_zone,
// check_primary_zones and rotate_zone_keys, and the Module that sets
// PowerDNS up.
//
// Every task is validated with dnszone, the same rules the API applies.
// Serials are the agent's (dnszone.NextSerial, date based and monotonic):
// zones are created with soa_edit_api off and every change PATCHes the SOA
// with the next serial in the same request, then sends NOTIFY (a PATCH does
// not notify by itself).
package dns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// Action names, as in metrics and logs.
const (
	EnsureZoneName           = "ensure_zone"
	DeleteZoneName           = "delete_zone"
	SyncSecondaryZonesName   = "sync_secondary_zones"
	RotateZoneKeysName       = "rotate_zone_keys"
	RefreshSecondaryZoneName = "refresh_secondary_zone"
	CheckPrimaryZonesName    = "check_primary_zones"
)

// PowerDNS zone kinds.
const (
	kindMaster = "Master"
	kindSlave  = "Slave"
)

// MaxServers bounds masters and secondaries of one zone.
const MaxServers = 32

// MaxZonesPerTask bounds the zones one sync_secondary_zones or
// check_primary_zones task lists.
const MaxZonesPerTask = 100000

// EnsureZone converges one zone.
type EnsureZone struct {
	m   *Module
	req *agentpb.EnsureZoneAction

	// Set by Validate.
	zone        dnszone.Zone
	secondaries []netip.AddrPort
	masters     []string
	now         func() time.Time
}

var _ actions.Action = (*EnsureZone)(nil)

// NewEnsureZone builds the action from its wire form.
func (m *Module) NewEnsureZone(req *agentpb.EnsureZoneAction) actions.Action {
	if req == nil {
		req = &agentpb.EnsureZoneAction{}
	}
	return &EnsureZone{m: m, req: req, now: time.Now}
}

// Name implements actions.Action.
func (a *EnsureZone) Name() string { return EnsureZoneName }

// Validate implements actions.Action.
func (a *EnsureZone) Validate() error {
	r := a.req
	switch r.GetKind() {
	case agentpb.ZoneKind_ZONE_KIND_PRIMARY:
		z, err := dnszone.ValidateZone(ZoneFromProto(r))
		if err != nil {
			return err
		}
		a.zone = z
		if len(r.GetMasters()) > 0 {
			return errors.New("a primary zone has no masters")
		}
		if a.secondaries, err = parseServers("secondary", r.GetSecondaries()); err != nil {
			return err
		}
	case agentpb.ZoneKind_ZONE_KIND_SECONDARY:
		name, err := dnszone.ZoneName(r.GetZone())
		if err != nil {
			return err
		}
		a.zone = dnszone.Zone{Name: name}
		if len(r.GetRecords()) > 0 || r.GetSoa() != nil || len(r.GetNameservers()) > 0 || len(r.GetSecondaries()) > 0 || r.GetDnssec() || r.GetMinSerial() != 0 {
			return errors.New("a secondary zone takes only masters: records, SOA, serial, nameservers, secondaries and DNSSEC come from its primary")
		}
		if len(r.GetMasters()) == 0 {
			return fmt.Errorf("secondary zone %s needs at least one master", name)
		}
		if a.masters, err = mastersOf(r.GetMasters()); err != nil {
			return err
		}
	default:
		return fmt.Errorf("zone kind %v: want PRIMARY or SECONDARY", r.GetKind())
	}
	return nil
}

// ZoneFromProto is the dnszone form of a primary zone's spec.
func ZoneFromProto(r *agentpb.EnsureZoneAction) dnszone.Zone {
	z := dnszone.Zone{Name: r.GetZone(), Nameservers: r.GetNameservers()}
	if s := r.GetSoa(); s != nil {
		z.SOA = dnszone.SOA{MName: s.GetMname(), RName: s.GetRname(), Refresh: s.GetRefresh(), Retry: s.GetRetry(), Expire: s.GetExpire(), Minimum: s.GetMinimum(), TTL: s.GetTtl()}
	}
	for _, rec := range r.GetRecords() {
		z.Records = append(z.Records, dnszone.Record{Name: rec.GetName(), Type: rec.GetType(), Content: rec.GetContent(), TTL: rec.GetTtl(), Priority: rec.GetPriority()})
	}
	return z
}

// parseServers reads "ip" or "ip:port" (port 53 by default).
func parseServers(what string, in []string) ([]netip.AddrPort, error) {
	if len(in) > MaxServers {
		return nil, fmt.Errorf("%d %ss, at most %d allowed", len(in), what, MaxServers)
	}
	var out []netip.AddrPort
	for _, s := range in {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%s %q is not an IP address or ip:port", what, bound(s))
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		if ap.Port() == 0 || ap.Addr().Zone() != "" || ap.Addr().IsUnspecified() || ap.Addr().IsMulticast() {
			return nil, fmt.Errorf("%s %q is not a usable address", what, bound(s))
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if slices.Contains(out, ap) {
			return nil, fmt.Errorf("%s %s is listed twice", what, ap)
		}
		out = append(out, ap)
	}
	return out, nil
}

// mastersOf is the canonical masters list: ip:port strings, sorted.
func mastersOf(in []string) ([]string, error) {
	aps, err := parseServers("master", in)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(aps))
	for i, ap := range aps {
		out[i] = ap.String()
	}
	sort.Strings(out)
	return out, nil
}

func bound(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// Apply implements actions.Action.
func (a *EnsureZone) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	if a.zone.Name == "" {
		if err := a.Validate(); err != nil {
			return nil, err
		}
	}
	c, err := a.m.clientFor(env)
	if err != nil {
		return nil, err
	}
	unlock := c.lockZone(a.zone.Name)
	defer unlock()
	if a.req.GetKind() == agentpb.ZoneKind_ZONE_KIND_SECONDARY {
		return ensureSecondary(ctx, c, a.zone.Name, a.masters)
	}
	return a.ensurePrimary(ctx, c, env)
}

// lockZone takes the zone's lock (zoneState.locks) and returns its unlock.
func (c *Client) lockZone(name string) func() {
	// Without a context the wait cannot fail.
	unlock, _ := c.st.locks.Lock(context.Background(), name)
	return unlock
}

// openZone validates an action on one zone (which sets *zone), then returns
// the node's PowerDNS client with that zone locked against the node's other
// actions on it; the caller calls unlock.
func (m *Module) openZone(env *actions.Env, validate func() error, zone *string) (c *Client, unlock func(), err error) {
	if err := validate(); err != nil {
		return nil, nil, err
	}
	if c, err = m.clientFor(env); err != nil {
		return nil, nil, err
	}
	return c, c.lockZone(*zone), nil
}

// Metadata kinds nPanel owns on primary zones.
const (
	metaAllowAXFR  = "ALLOW-AXFR-FROM"
	metaAlsoNotify = "ALSO-NOTIFY"
)

// managedType reports whether the agent converges rrsets of type t. SOA is
// handled apart; DNSSEC records are the signer's.
func managedType(t string) bool {
	switch t {
	case "SOA", "DNSKEY", "RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "CDS", "CDNSKEY":
		return false
	}
	return true
}

type setKey struct{ name, typ string }

type rrset struct {
	ttl      uint32
	contents []string // sorted canonical PowerDNS content
}

func (s rrset) equal(o rrset) bool { return s.ttl == o.ttl && slices.Equal(s.contents, o.contents) }

// desiredSets groups the zone's records and apex NS into rrsets.
func desiredSets(z dnszone.Zone) map[setKey]rrset {
	sets := map[setKey]rrset{}
	ns := rrset{ttl: z.SOA.TTL}
	ns.contents = append(ns.contents, z.Nameservers...)
	sort.Strings(ns.contents)
	sets[setKey{z.Name, "NS"}] = ns
	for _, r := range z.Records {
		k := setKey{r.Name, r.Type}
		s := sets[k]
		s.ttl = r.TTL
		s.contents = append(s.contents, r.PDNSContent())
		sets[k] = s
	}
	for k, s := range sets {
		sort.Strings(s.contents)
		sets[k] = s
	}
	return sets
}

// currentSets reads a zone's rrsets as the API returns them, content made
// canonical by dnszone so that it compares with the spec. Content dnszone
// refuses is kept as is: it differs from any spec and gets replaced.
func currentSets(zone string, rs []pdnsRRset) (map[setKey]rrset, string) {
	sets := map[setKey]rrset{}
	var soa string
	for _, s := range rs {
		if s.Type == "SOA" && len(s.Records) > 0 {
			soa = s.Records[0].Content
			continue
		}
		if !managedType(s.Type) {
			continue
		}
		out := rrset{ttl: s.TTL}
		for _, r := range s.Records {
			c := r.Content
			if rec, err := dnszone.FromPDNS(s.Name, s.Type, s.TTL, r.Content); err == nil {
				if v, err := dnszone.ValidateRecord(zone, rec, s.TTL); err == nil {
					c = v.PDNSContent()
				}
			}
			if r.Disabled {
				c = "disabled:" + c // never equal to a spec: re-enabled by REPLACE
			}
			out.contents = append(out.contents, c)
		}
		sort.Strings(out.contents)
		sets[setKey{strings.ToLower(s.Name), s.Type}] = out
	}
	return sets, soa
}

// parseSOA splits SOA content into its fields and serial.
func parseSOA(content string) (dnszone.SOA, uint32, bool) {
	f := strings.Fields(content)
	if len(f) != 7 {
		return dnszone.SOA{}, 0, false
	}
	var n [5]uint32
	for i := range n {
		v, err := strconv.ParseUint(f[i+2], 10, 32)
		if err != nil {
			return dnszone.SOA{}, 0, false
		}
		n[i] = uint32(v)
	}
	return dnszone.SOA{MName: strings.ToLower(f[0]), RName: strings.ToLower(f[1]), Refresh: n[1], Retry: n[2], Expire: n[3], Minimum: n[4]}, n[0], true
}

func (a *EnsureZone) ensurePrimary(ctx context.Context, c *Client, env *actions.Env) (*agentpb.ZoneResult, error) {
	z := a.zone
	want := desiredSets(z)
	wantMeta := map[string][]string{}
	for _, ap := range a.secondaries {
		wantMeta[metaAllowAXFR] = append(wantMeta[metaAllowAXFR], ap.Addr().String())
		wantMeta[metaAlsoNotify] = append(wantMeta[metaAlsoNotify], ap.String())
	}
	for k := range wantMeta {
		sort.Strings(wantMeta[k])
		wantMeta[k] = slices.Compact(wantMeta[k])
	}
	if res, ok, err := a.patchApplied(ctx, c, env, want, wantMeta); ok {
		return res, err
	}
	res, err := a.convergePrimary(ctx, c, env, want, wantMeta)
	if err != nil {
		forget(c, z.Name)
		return nil, err
	}
	remember(c, z.Name, &appliedState{sets: want, meta: wantMeta, soa: z.SOA, serial: res.Serial, dnssec: res.Dnssec, ds: res.Ds, at: a.now()})
	return res, nil
}

// convergePrimary reads the zone as the server holds it and converges it
// to the spec, creating it when missing.
func (a *EnsureZone) convergePrimary(ctx context.Context, c *Client, env *actions.Env, want map[setKey]rrset, wantMeta map[string][]string) (*agentpb.ZoneResult, error) {
	z := a.zone
	res := &agentpb.ZoneResult{Zone: z.Name, Kind: kindMaster, Dnssec: a.req.GetDnssec()}

	// The three reads are independent; issued together they cost one
	// round trip, which keeps a record change close to a bare PATCH.
	var (
		cur            *pdnsZone
		meta           []pdnsMeta
		keys           []pdnsKey
		zerr, mer, ker error
		wg             sync.WaitGroup
	)
	wg.Add(2)
	go func() { defer wg.Done(); cur, zerr = c.zone(ctx, z.Name) }()
	go func() { defer wg.Done(); meta, mer = c.metadata(ctx, z.Name) }()
	if a.req.GetDnssec() {
		wg.Add(1)
		go func() { defer wg.Done(); keys, ker = c.keys(ctx, z.Name) }()
	}
	wg.Wait()
	if zerr != nil && !IsNotFound(zerr) {
		return nil, fmt.Errorf("ensure zone %s: %w", z.Name, zerr)
	}
	if zerr != nil {
		return a.createPrimary(ctx, c, env, want, wantMeta, res)
	}
	if mer != nil {
		return nil, fmt.Errorf("ensure zone %s: %w", z.Name, mer)
	}
	if ker != nil && !IsNotFound(ker) {
		return nil, fmt.Errorf("ensure zone %s: %w", z.Name, ker)
	}
	res.Existed = true

	// Kind: a zone that was a secondary (the node became its primary) or
	// native is turned into a master first; its records are replaced below.
	if cur.Kind != kindMaster || len(cur.Masters) > 0 || cur.SOAEditAPI == nil || *cur.SOAEditAPI != "" {
		if err := c.putZone(ctx, z.Name, &pdnsZone{Name: z.Name, Kind: kindMaster, Masters: []string{}, SOAEditAPI: ptr(""), APIRectify: ptr(true)}); err != nil {
			return nil, fmt.Errorf("ensure zone %s: set kind: %w", z.Name, err)
		}
		res.Changed = true
	}

	have, soaContent := currentSets(z.Name, cur.RRsets)
	patch := diffSets(have, want)
	curSOA, serial, soaOK := parseSOA(soaContent)
	soaTTL := uint32(0)
	for _, s := range cur.RRsets {
		if s.Type == "SOA" {
			soaTTL = s.TTL
		}
	}
	wantSOA := z.SOA
	wantSOA.TTL = 0
	soaChanged := !soaOK || curSOA != wantSOA || soaTTL != z.SOA.TTL

	// DNSSEC first: a change of keys changes the zone's DNSKEY set, which
	// the serial bump below carries to the secondaries.
	keysChanged, err := ensureKeys(ctx, c, z.Name, a.req.GetDnssec(), keys, cur.DNSSEC)
	if err != nil {
		return nil, fmt.Errorf("ensure zone %s: %w", z.Name, err)
	}

	// Below the serial the zone last had (a database restored from an
	// older backup), the secondaries would keep their copy: the zone goes
	// above it even when its content is right.
	below := dnszone.SerialLess(serial, a.req.GetMinSerial())
	if below {
		serial = a.req.GetMinSerial()
	}
	res.Serial = serial
	if len(patch) > 0 || soaChanged || keysChanged || below {
		res.Serial = dnszone.NextSerial(serial, a.now())
		patch = append(patch, soaSet(z, res.Serial))
		if err := c.patchZone(ctx, z.Name, patch); err != nil {
			return nil, fmt.Errorf("ensure zone %s: update records: %w", z.Name, err)
		}
		res.Changed = true
		env.Logger.Info("zone updated", "zone", z.Name, "rrsets", len(patch)-1, "serial", res.Serial)
	}

	metaChanged, err := ensureMeta(ctx, c, z.Name, meta, wantMeta)
	if err != nil {
		return nil, fmt.Errorf("ensure zone %s: %w", z.Name, err)
	}
	res.Changed = res.Changed || metaChanged
	if res.Changed {
		if err := flushAndNotify(ctx, c, z.Name); err != nil {
			return nil, fmt.Errorf("ensure zone %s: %w", z.Name, err)
		}
	}
	if a.req.GetDnssec() {
		if res.Ds, err = dsOf(ctx, c, z.Name); err != nil {
			return nil, fmt.Errorf("ensure zone %s: %w", z.Name, err)
		}
	}
	return res, nil
}

// createPrimary creates the zone with all its rrsets in one request; if a
// later step fails the zone is deleted again, so a failed create leaves
// nothing behind.
func (a *EnsureZone) createPrimary(ctx context.Context, c *Client, env *actions.Env, want map[setKey]rrset, wantMeta map[string][]string, res *agentpb.ZoneResult) (*agentpb.ZoneResult, error) {
	z := a.zone
	res.Serial = dnszone.NextSerial(a.req.GetMinSerial(), a.now())
	body := &pdnsZone{Name: z.Name, Kind: kindMaster, Masters: []string{}, SOAEditAPI: ptr(""), APIRectify: ptr(true)}
	keys := make([]setKey, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	for _, k := range keys {
		s := replaceSet(k, want[k])
		s.ChangeType = ""
		body.RRsets = append(body.RRsets, s)
	}
	sortPatch(body.RRsets)
	soa := soaSet(z, res.Serial)
	soa.ChangeType = ""
	body.RRsets = append(body.RRsets, soa)
	if err := c.createZone(ctx, body); err != nil {
		return nil, fmt.Errorf("create zone %s: %w", z.Name, err)
	}
	rollback := func(err error) (*agentpb.ZoneResult, error) {
		// A fresh context: the task's may be what failed.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if derr := c.deleteZone(rctx, z.Name); derr != nil && !IsNotFound(derr) {
			return nil, fmt.Errorf("create zone %s: %w (and removing it again failed: %v)", z.Name, err, derr)
		}
		return nil, fmt.Errorf("create zone %s: %w (zone removed again)", z.Name, err)
	}
	if _, err := ensureMeta(ctx, c, z.Name, nil, wantMeta); err != nil {
		return rollback(err)
	}
	if a.req.GetDnssec() {
		if _, err := ensureKeys(ctx, c, z.Name, true, nil, false); err != nil {
			return rollback(err)
		}
		ds, err := dsOf(ctx, c, z.Name)
		if err != nil {
			return rollback(err)
		}
		res.Ds = ds
	}
	// Answers given while the zone did not exist here (REFUSED, or an
	// NXDOMAIN from a zone of the same name deleted before) may be cached.
	if err := flushAndNotify(ctx, c, z.Name); err != nil {
		return rollback(err)
	}
	res.Changed = true
	env.Logger.Info("zone created", "zone", z.Name, "rrsets", len(body.RRsets), "serial", res.Serial, "dnssec", a.req.GetDnssec())
	return res, nil
}

func ptr[T any](v T) *T { return &v }

func replaceSet(k setKey, s rrset) pdnsRRset {
	out := pdnsRRset{Name: k.name, Type: k.typ, TTL: s.ttl, ChangeType: "REPLACE"}
	for _, c := range s.contents {
		out.Records = append(out.Records, pdnsRecord{Content: c})
	}
	return out
}

func soaSet(z dnszone.Zone, serial uint32) pdnsRRset {
	return pdnsRRset{Name: z.Name, Type: "SOA", TTL: z.SOA.TTL, ChangeType: "REPLACE", Records: []pdnsRecord{{Content: z.SOA.Content(serial)}}}
}

// sortPatch orders a PATCH deterministically, deletions first so that a
// CNAME replacing an A at one name never meets it inside the transaction.
func sortPatch(p []pdnsRRset) {
	sort.SliceStable(p, func(i, j int) bool {
		if (p[i].ChangeType == "DELETE") != (p[j].ChangeType == "DELETE") {
			return p[i].ChangeType == "DELETE"
		}
		if p[i].Name != p[j].Name {
			return p[i].Name < p[j].Name
		}
		return p[i].Type < p[j].Type
	})
}

// ensureMeta converges the metadata kinds nPanel owns.
func ensureMeta(ctx context.Context, c *Client, zone string, have []pdnsMeta, want map[string][]string) (bool, error) {
	cur := map[string][]string{}
	for _, m := range have {
		v := slices.Clone(m.Metadata)
		sort.Strings(v)
		cur[m.Kind] = v
	}
	changed := false
	for _, kind := range []string{metaAllowAXFR, metaAlsoNotify} {
		w := want[kind]
		if slices.Equal(cur[kind], w) {
			continue
		}
		var err error
		if len(w) == 0 {
			err = c.deleteMetadata(ctx, zone, kind)
		} else {
			err = c.putMetadata(ctx, zone, kind, w)
		}
		if err != nil {
			return changed, fmt.Errorf("set %s: %w", kind, err)
		}
		changed = true
	}
	return changed, nil
}

// Key algorithm of new keys: ECDSA P-256 (algorithm 13), the one every
// validator supports with small signatures.
const keyAlgorithm = "ecdsap256sha256"

// ensureKeys signs (want) or unsigns the zone. A signed zone keeps its keys
// as they are: rotate_zone_keys changes them. signed says whether the
// zone had keys, keys are its keys when known.
func ensureKeys(ctx context.Context, c *Client, zone string, want bool, keys []pdnsKey, signed bool) (bool, error) {
	if want {
		hasKSK, hasZSK := false, false
		for _, k := range keys {
			if !k.Active {
				continue
			}
			switch k.KeyType {
			case "ksk":
				hasKSK = true
			case "zsk":
				hasZSK = true
			case "csk":
				hasKSK, hasZSK = true, true
			}
		}
		if hasKSK && hasZSK {
			return false, nil
		}
		if !hasKSK {
			if _, err := c.addKey(ctx, zone, pdnsKey{KeyType: "ksk", Active: true, Published: true, Algorithm: keyAlgorithm}); err != nil {
				return false, fmt.Errorf("add KSK: %w", err)
			}
		}
		if !hasZSK {
			if _, err := c.addKey(ctx, zone, pdnsKey{KeyType: "zsk", Active: true, Published: true, Algorithm: keyAlgorithm}); err != nil {
				return false, fmt.Errorf("add ZSK: %w", err)
			}
		}
		if err := c.rectify(ctx, zone); err != nil {
			return true, fmt.Errorf("rectify: %w", err)
		}
		return true, nil
	}
	if !signed {
		return false, nil
	}
	ks, err := c.keys(ctx, zone)
	if err != nil {
		return false, fmt.Errorf("list keys: %w", err)
	}
	for _, k := range ks {
		if err := c.deleteKey(ctx, zone, k.ID); err != nil {
			return true, fmt.Errorf("remove key %d: %w", k.ID, err)
		}
	}
	_ = c.deleteMetadata(ctx, zone, metaRollover)
	if err := c.rectify(ctx, zone); err != nil {
		return true, fmt.Errorf("rectify: %w", err)
	}
	return len(ks) > 0, nil
}

// dsOf returns the DS records of the zone's active KSKs (and CSKs) that a
// registrar should publish.
func dsOf(ctx context.Context, c *Client, zone string) ([]string, error) {
	ks, err := c.keys(ctx, zone)
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	var ds []string
	for _, k := range ks {
		if k.Active && (k.KeyType == "ksk" || k.KeyType == "csk") {
			for _, d := range k.DS {
				ds = append(ds, zone+" IN DS "+d)
			}
		}
	}
	return dnszone.PublishableDS(ds), nil
}
