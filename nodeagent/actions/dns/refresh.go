package dns

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"google.golang.org/protobuf/proto"

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

// transferWait bounds how long a refresh waits for the transfer it started.
const transferWait = 30 * time.Second

// firstAPIRead is when awaitTransfer first reads the zone through the API.
// A transfer of an account-sized zone commits about 3 ms after it starts
// (p90 4 ms), but in about 2% of refreshes DNS keeps answering the old
// SOA after the commit, and only the API read ends that. At 10 ms those
// refreshes took 11-13 ms and were the secondary's p99; at 5 ms they take
// 6-7 ms. The API read costs PowerDNS a backend opening, so it waits
// until most transfers are seen over DNS.
const firstAPIRead = 5 * time.Millisecond

// Apply implements actions.Action. It changes nothing when the zone is
// already at the serial here, is not here, or is not a Slave here (this
// node is its primary). Otherwise it starts the transfer, waits until the
// zone holds the serial (or a newer one) and then drops the cached answers
// for the zone, as the primary does after a PATCH: PowerDNS purges its
// caches when a transfer commits, but a query that read the zone just
// before can store the old answer after that purge, and it is served for
// the cache's lifetime (20 s). Asking twice is harmless.
//
// The serial is first read by a DNS query rather than from the API: every
// API request makes PowerDNS open its backend afresh, which costs as much
// as the transfer request itself, and this runs for every change on every
// secondary. A cached answer can only show an older serial, which costs a
// transfer that was not needed.
func (a *RefreshSecondaryZone) Apply(ctx context.Context, env *actions.Env) (proto.Message, error) {
	c, unlock, err := openZone(env, a.Validate, &a.zone)
	if err != nil {
		return nil, err
	}
	defer unlock()
	want := a.req.GetSerial()
	res := &agentpb.ZoneResult{Zone: a.zone}
	if serial, ok := servedSerial(ctx, env.Profile.DNSListen, a.zone); ok {
		res.Existed, res.Serial = true, serial
		if !serialOlder(serial, want) {
			return res, nil
		}
	}
	var ae *APIError
	switch err := c.axfrRetrieve(ctx, a.zone); {
	case IsNotFound(err):
		return res, nil
	case errors.As(err, &ae) && ae.Status == http.StatusUnprocessableEntity:
		// PowerDNS refuses a transfer for a zone without masters: this
		// node is the zone's primary.
		res.Existed = true
		return res, nil
	case err != nil:
		return nil, fmt.Errorf("refresh secondary zone %s: start transfer: %w", a.zone, err)
	}
	res.Existed, res.Kind, res.Changed = true, kindSlave, true
	if res.Serial, err = awaitTransfer(ctx, c, env.Profile.DNSListen, a.zone, want); err != nil {
		return nil, fmt.Errorf("refresh secondary zone %s: %w", a.zone, err)
	}
	if err := c.flushCache(ctx, a.zone); err != nil {
		return nil, fmt.Errorf("refresh secondary zone %s: flush cached answers: %w", a.zone, err)
	}
	return res, nil
}

// awaitTransfer waits until the zone holds want or a newer serial. It
// asks PowerDNS over DNS every millisecond at first (cheap: the answer is
// cached until the commit purges it), backing off after 20 ms for large
// zones. It also reads the backend through the API, first after
// firstAPIRead and then at doubling intervals, for when a query racing the
// commit left the old SOA cached: the flush that follows then ends that at
// once.
func awaitTransfer(ctx context.Context, c *Client, listen, zone string, want uint32) (uint32, error) {
	ctx, cancel := context.WithTimeout(ctx, transferWait)
	defer cancel()
	start := time.Now()
	lastAPI, apiEvery := start, firstAPIRead
	wait := time.Millisecond
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("the transfer of serial %d did not complete: %w", want, ctx.Err())
		case <-t.C:
		}
		if serial, ok := servedSerial(ctx, listen, zone); ok && !serialOlder(serial, want) {
			return serial, nil
		}
		if time.Since(lastAPI) >= apiEvery {
			lastAPI, apiEvery = time.Now(), min(2*apiEvery, time.Second)
			cur, err := c.zoneMeta(ctx, zone)
			if err != nil {
				return 0, fmt.Errorf("read serial after transfer: %w", err)
			}
			if !serialOlder(cur.Serial, want) {
				return cur.Serial, nil
			}
		}
		if time.Since(start) > 20*time.Millisecond {
			wait = min(2*wait, 100*time.Millisecond)
		}
	}
}

// servedSerial is the serial of zone's SOA as the PowerDNS answering on
// listen serves it; ok is false when it does not answer with one (the zone
// is not served here, or the server is down: the API then decides).
func servedSerial(ctx context.Context, listen, zone string) (serial uint32, ok bool) {
	addr, err := netip.ParseAddrPort(listen)
	if err != nil {
		return 0, false
	}
	if addr.Addr().IsUnspecified() {
		lo := netip.IPv6Loopback()
		if addr.Addr().Is4() {
			lo = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		addr = netip.AddrPortFrom(lo, addr.Port())
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	q := new(mdns.Msg)
	q.SetQuestion(mdns.Fqdn(zone), mdns.TypeSOA)
	ans, _, err := new(mdns.Client).ExchangeContext(ctx, q, addr.String())
	if err != nil || ans.Rcode != mdns.RcodeSuccess || !ans.Authoritative {
		return 0, false
	}
	for _, rr := range ans.Answer {
		if soa, isSOA := rr.(*mdns.SOA); isSOA && strings.EqualFold(soa.Hdr.Name, mdns.Fqdn(zone)) {
			return soa.Serial, true
		}
	}
	return 0, false
}

// serialOlder compares SOA serials in serial-number arithmetic (RFC 1982):
// a serial that wrapped past 2^32 is still newer.
func serialOlder(ours, theirs uint32) bool {
	return ours != theirs && int32(theirs-ours) > 0
}
