package controlplane

import (
	"net/netip"
	"slices"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/dnszone"
)

func addrType(ip string) string {
	if a, err := netip.ParseAddr(ip); err == nil && a.Is6() {
		return dnszone.TypeAAAA
	}
	return dnszone.TypeA
}

// defaultRecords are what an account's zone starts with: the site on the
// node's address at the apex and www, mail and webmail on the node (so that
// their certificates validate), an SPF policy that
// allows the node to send, and a DMARC policy that quarantines what fails
// it with reports to the domain's postmaster.
func defaultRecords(z *store.Zone, host string) []store.ZoneRecord {
	apex := z.Name + "."
	if host == "" {
		return nil
	}
	rs := []store.ZoneRecord{
		{Name: apex, Type: addrType(host), Content: host},
		{Name: "www." + apex, Type: dnszone.TypeCNAME, Content: apex},
		{Name: "mail." + apex, Type: addrType(host), Content: host},
		{Name: "webmail." + apex, Type: dnszone.TypeCNAME, Content: apex},
		{Name: apex, Type: dnszone.TypeMX, Content: "mail." + apex, Priority: 10},
		{Name: apex, Type: dnszone.TypeTXT, Content: `"` + defaultSPF(host) + `"`},
		{Name: "_dmarc." + apex, Type: dnszone.TypeTXT, Content: `"` + defaultDMARC(z.Name) + `"`},
	}
	for i := range rs {
		rs[i].ID = z.NewRecordID()
		rs[i].TTL = dnszone.DefaultTTL
	}
	return rs
}

// withDefaults returns a new zone's default records followed by the
// records its owner added before the controller first filled it in: the API
// accepts changes from the moment the zone exists, and an accepted record
// must not vanish. A default gives way to the owner's records at its name
// and type, to any CNAME conflict at its name, and to the zone's record
// limit (the node would refuse the whole zone).
func withDefaults(defaults, own []store.ZoneRecord) []store.ZoneRecord {
	out := make([]store.ZoneRecord, 0, len(defaults)+len(own))
	for _, d := range defaults {
		if len(out)+len(own) >= dnszone.MaxZoneRecords {
			break
		}
		if !slices.ContainsFunc(own, func(r store.ZoneRecord) bool {
			return r.Name == d.Name && (r.Type == d.Type || r.Type == dnszone.TypeCNAME || d.Type == dnszone.TypeCNAME)
		}) {
			out = append(out, d)
		}
	}
	return append(out, own...)
}

// defaultSPF is a domain's SPF policy at account creation: its MX and A
// hosts and the node's address may send; anything else soft-fails.
func defaultSPF(host string) string {
	mech := "ip4:"
	if addrType(host) == dnszone.TypeAAAA {
		mech = "ip6:"
	}
	return "v=spf1 mx a " + mech + host + " ~all"
}

// defaultDMARC is a domain's DMARC policy at account creation.
func defaultDMARC(domain string) string {
	return "v=DMARC1; p=quarantine; rua=mailto:postmaster@" + domain
}
