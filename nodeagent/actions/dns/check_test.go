package dns

import (
	"context"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/dnszone"
	"github.com/npanel/npanel/internal/testenv/pdns"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

func check(t *testing.T, env *actions.Env, zones map[string]uint32) *agentpb.CheckPrimaryZonesResult {
	t.Helper()
	req := &agentpb.CheckPrimaryZonesAction{}
	for z, s := range zones {
		req.Zones = append(req.Zones, &agentpb.PrimaryZoneSerial{Zone: z, Serial: s})
	}
	a := NewCheckPrimaryZones(req)
	if err := a.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	out, err := a.Apply(context.Background(), env)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return out.(*agentpb.CheckPrimaryZonesResult)
}

// A primary zone wiped from PowerDNS, restored below its serial or turned
// into another kind is reported; ensure_zone with min_serial brings it
// back above the serial the secondaries hold.
func TestCheckPrimaryZonesAndHeal(t *testing.T) {
	srv := pdns.Start(t, pdns.Options{IP: "127.0.0.1"})
	env := envFor(t, srv)
	c := NewClient(srv.APIAddr, srv.APIKey)
	ctx := context.Background()
	wiped, restored, intact := "wiped.npanel-test.com", "restored.npanel-test.com", "intact.npanel-test.com"
	serials := map[string]uint32{}
	for _, z := range []string{wiped, restored, intact} {
		serials[z+"."] = apply(t, env, NewEnsureZone(primarySpec(z))).Serial
	}
	// Later changes move the serials the control plane knows.
	for _, z := range []string{wiped, restored} {
		spec := primarySpec(z)
		spec.Records[0].Content = "192.0.2.99"
		serials[z+"."] = apply(t, env, NewEnsureZone(spec)).Serial
	}

	if r := check(t, env, serials); len(r.Drifted) != 0 || r.Matching != 3 {
		t.Fatalf("check of an intact server: %+v", r)
	}
	// A change the agent applied after the control plane listed the
	// serials: reported (the control plane sorts that out), but the agent
	// keeps what it applied, so the next change still costs one PATCH.
	spec := primarySpec(intact)
	spec.Records[0].Content = "192.0.2.98"
	ahead := apply(t, env, NewEnsureZone(spec)).Serial
	r := check(t, env, serials)
	if len(r.Drifted) != 1 || !proto.Equal(r.Drifted[0], &agentpb.ZoneDrift{Zone: intact + ".", WantSerial: serials[intact+"."], Serial: ahead, Kind: "Master"}) {
		t.Fatalf("check with a change since: %+v", r)
	}
	if recall(c, intact+".", time.Now()) == nil {
		t.Error("the check made the agent forget a zone it had applied itself")
	}
	serials[intact+"."] = ahead

	if err := c.deleteZone(ctx, wiped+"."); err != nil {
		t.Fatal(err)
	}
	// An older backup: the first version of the zone, at its first serial.
	old := serials[restored+"."] - 1
	first, err := dnszone.ValidateZone(ZoneFromProto(primarySpec(restored)))
	if err != nil {
		t.Fatal(err)
	}
	a := setKey{restored + ".", "A"}
	if err := c.patchZone(ctx, restored+".", []pdnsRRset{replaceSet(a, desiredSets(first)[a]), soaSet(first, old)}); err != nil {
		t.Fatal(err)
	}
	r = check(t, env, serials)
	want := []*agentpb.ZoneDrift{
		{Zone: restored + ".", WantSerial: serials[restored+"."], Serial: old, Kind: "Master"},
		{Zone: wiped + ".", WantSerial: serials[wiped+"."]},
	}
	if r.Matching != 1 || len(r.Drifted) != 2 || !proto.Equal(r.Drifted[0], want[0]) || !proto.Equal(r.Drifted[1], want[1]) {
		t.Fatalf("check after wipe and restore: %+v, want drifted %+v", r, want)
	}

	// The agent still remembers both zones as it applied them, so a change
	// would be patched onto that: min_serial must make it read them again.
	for _, z := range []string{wiped, restored} {
		spec := primarySpec(z)
		spec.Records[0].Content = "192.0.2.99"
		spec.Records = append(spec.Records, rec("new."+z, "TXT", "healed", 300, 0))
		spec.MinSerial = serials[z+"."]
		res := apply(t, env, NewEnsureZone(spec))
		if !res.Changed || !(res.Serial > spec.MinSerial) {
			t.Errorf("%s healed: %+v, want a serial above %d", z, res, spec.MinSerial)
		}
		if got := serialAt(t, srv.DNSAddr, z); got != res.Serial {
			t.Errorf("%s served at serial %d, want %d", z, got, res.Serial)
		}
		if got := answers(query(t, srv.DNSAddr, z, mdns.TypeA, false)); len(got) != 1 || got[0] != "192.0.2.99" {
			t.Errorf("%s A = %q after the heal", z, got)
		}
		serials[z+"."] = res.Serial
	}
	if r := check(t, env, serials); len(r.Drifted) != 0 || r.Matching != 3 {
		t.Fatalf("check after the heal: %+v", r)
	}
}

func TestCheckPrimaryZonesValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		zones []*agentpb.PrimaryZoneSerial
		err   string
	}{
		{"bad name", []*agentpb.PrimaryZoneSerial{{Zone: "bad..name", Serial: 1}}, "zone name"},
		{"twice", []*agentpb.PrimaryZoneSerial{{Zone: "a.npanel-test.com", Serial: 1}, {Zone: "A.npanel-test.com.", Serial: 2}}, "listed twice"},
		{"too many", make([]*agentpb.PrimaryZoneSerial, MaxZonesPerTask+1), "at most"},
	} {
		err := NewCheckPrimaryZones(&agentpb.CheckPrimaryZonesAction{Zones: tc.zones}).Validate()
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.err)
		}
	}
	if err := NewCheckPrimaryZones(&agentpb.CheckPrimaryZonesAction{}).Validate(); err != nil {
		t.Errorf("no zones: %v", err)
	}
}
