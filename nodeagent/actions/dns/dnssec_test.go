package dns

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/npanel/npanel/internal/testenv/pdns"
	"github.com/npanel/npanel/protos/agentpb"
)

// signedView is what a validating resolver sees of a zone at one moment.
type signedView struct {
	keys   []*mdns.DNSKEY
	a      []mdns.RR
	aSig   *mdns.RRSIG
	keySig []*mdns.RRSIG
}

func fetchSigned(t *testing.T, addr, zone string) signedView {
	t.Helper()
	var v signedView
	for _, rr := range query(t, addr, zone, mdns.TypeDNSKEY, true).Answer {
		switch x := rr.(type) {
		case *mdns.DNSKEY:
			v.keys = append(v.keys, x)
		case *mdns.RRSIG:
			v.keySig = append(v.keySig, x)
		}
	}
	for _, rr := range query(t, addr, zone, mdns.TypeA, true).Answer {
		switch x := rr.(type) {
		case *mdns.A:
			v.a = append(v.a, x)
		case *mdns.RRSIG:
			v.aSig = x
		}
	}
	return v
}

// validate checks the chain DS → KSK → DNSKEY set → A signature, with sig
// the signature over the A rrset a resolver holds (maybe an older one).
func (v signedView) validate(ds []string, sig *mdns.RRSIG) error {
	if sig == nil {
		return errors.New("A rrset has no RRSIG")
	}
	keyset := make([]mdns.RR, len(v.keys))
	for i, k := range v.keys {
		keyset[i] = k
	}
	trusted := false
	for _, d := range ds {
		rr, err := mdns.NewRR(d)
		if err != nil {
			return err
		}
		want := rr.(*mdns.DS)
		for _, k := range v.keys {
			if got := k.ToDS(want.DigestType); got != nil && strings.EqualFold(got.Digest, want.Digest) && got.KeyTag == want.KeyTag {
				for _, s := range v.keySig {
					if s.KeyTag == k.KeyTag() && s.Verify(k, keyset) == nil {
						trusted = true
					}
				}
			}
		}
	}
	if !trusted {
		return errors.New("DNSKEY set not signed by a key matching the DS")
	}
	for _, k := range v.keys {
		if k.KeyTag() == sig.KeyTag && k.Flags == 256 {
			if err := sig.Verify(k, v.a); err != nil {
				return err
			}
			if !sig.ValidityPeriod(time.Now()) {
				return errors.New("signature outside its validity period")
			}
			return nil
		}
	}
	return errors.New("A signed by a key that is not in the DNSKEY set: bogus")
}

func TestDNSSECAndRollover(t *testing.T) {
	srv := pdns.Start(t, pdns.Options{})
	env := envFor(t, srv)
	const zone = "signed.npanel-test.com"
	spec := primarySpec(zone)
	spec.Dnssec = true
	r := apply(t, env, testModule.NewEnsureZone(spec))
	if len(r.Ds) == 0 || !r.Dnssec {
		t.Fatalf("no DS: %+v", r)
	}
	for _, d := range r.Ds {
		if rr, err := mdns.NewRR(d); err != nil || rr.(*mdns.DS).DigestType == mdns.SHA1 {
			t.Errorf("DS %q: SHA-1 must not be published (RFC 8624) (%v)", d, err)
		}
	}
	ds := r.Ds
	v := fetchSigned(t, srv.DNSAddr, zone)
	if err := v.validate(ds, v.aSig); err != nil {
		t.Fatalf("signed zone does not validate: %v", err)
	}
	if len(v.keys) != 2 {
		t.Fatalf("DNSKEY set has %d keys, want KSK+ZSK", len(v.keys))
	}
	if again := apply(t, env, testModule.NewEnsureZone(spec)); again.Changed {
		t.Fatalf("repeat of a signed zone changed it: %+v", again)
	}

	rotate := func(step agentpb.RotateZoneKeysAction_Step) (*agentpb.ZoneResult, error) {
		a := testModule.NewRotateZoneKeys(&agentpb.RotateZoneKeysAction{Zone: zone, Step: step, MinIntervalSeconds: 3})
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
		out, err := a.Apply(context.Background(), env)
		if err != nil {
			return nil, err
		}
		return out.(*agentpb.ZoneResult), nil
	}
	oldSig := v.aSig
	res, err := rotate(agentpb.RotateZoneKeysAction_STEP_PUBLISH)
	if err != nil || res.RotationPhase != PhasePublished {
		t.Fatalf("publish: %+v %v", res, err)
	}
	// Right after the publish: the next step must wait the interval out.
	if _, err := rotate(agentpb.RotateZoneKeysAction_STEP_ACTIVATE); !errors.Is(err, ErrTooEarly) {
		t.Fatalf("early activate = %v, want ErrTooEarly", err)
	}
	waitFor(t, 40*time.Second, "new ZSK published", func() bool { return len(fetchSigned(t, srv.DNSAddr, zone).keys) == 3 })
	v = fetchSigned(t, srv.DNSAddr, zone)
	if err := v.validate(ds, v.aSig); err != nil || v.aSig.KeyTag != oldSig.KeyTag {
		t.Fatalf("after publish: %v (signed by %d, old %d)", err, v.aSig.KeyTag, oldSig.KeyTag)
	}
	if again, err := rotate(agentpb.RotateZoneKeysAction_STEP_PUBLISH); err != nil || again.Changed {
		t.Fatalf("repeated publish: %+v %v", again, err)
	}
	time.Sleep(time.Until(time.Unix(res.NextStepNotBeforeUnix, 0)) + 50*time.Millisecond)
	if res, err = rotate(agentpb.RotateZoneKeysAction_STEP_ACTIVATE); err != nil || res.RotationPhase != PhaseActive {
		t.Fatalf("activate: %+v %v", res, err)
	}
	waitFor(t, 40*time.Second, "signing with the new ZSK", func() bool {
		return fetchSigned(t, srv.DNSAddr, zone).aSig.KeyTag != oldSig.KeyTag
	})
	v = fetchSigned(t, srv.DNSAddr, zone)
	if err := v.validate(ds, v.aSig); err != nil {
		t.Fatalf("after activate: %v", err)
	}
	// A resolver that cached the old signature still validates: the old
	// key is still published. (The A rrset is unchanged.)
	if err := v.validate(ds, oldSig); err != nil {
		t.Fatalf("cached old signature after activate: %v", err)
	}
	time.Sleep(time.Until(time.Unix(res.NextStepNotBeforeUnix, 0)) + 50*time.Millisecond)
	if res, err = rotate(agentpb.RotateZoneKeysAction_STEP_RETIRE); err != nil || res.RotationPhase != PhaseDone {
		t.Fatalf("retire: %+v %v", res, err)
	}
	waitFor(t, 40*time.Second, "old ZSK removed", func() bool { return len(fetchSigned(t, srv.DNSAddr, zone).keys) == 2 })
	v = fetchSigned(t, srv.DNSAddr, zone)
	if err := v.validate(ds, v.aSig); err != nil {
		t.Fatalf("after retire: %v", err)
	}
	if again, err := rotate(agentpb.RotateZoneKeysAction_STEP_RETIRE); err != nil || again.Changed {
		t.Fatalf("repeated retire: %+v %v", again, err)
	}
	// The KSK and so the DS never changed.
	if r := apply(t, env, testModule.NewEnsureZone(spec)); strings.Join(r.Ds, ",") != strings.Join(ds, ",") {
		t.Fatalf("DS changed: %v → %v", ds, r.Ds)
	}

	// Unsigning removes the keys.
	spec.Dnssec = false
	if r := apply(t, env, testModule.NewEnsureZone(spec)); !r.Changed {
		t.Fatalf("unsign: %+v", r)
	}
	waitFor(t, 40*time.Second, "zone unsigned", func() bool { return len(fetchSigned(t, srv.DNSAddr, zone).keys) == 0 })
}
