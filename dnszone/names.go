// Package dnszone is the pure (no I/O) model of an nPanel DNS zone: record
// and zone validation, the BIND zone-file importer, SOA serials and reverse
// zone names. The API validates user input with it and the agent validates
// every task with it again before it talks to PowerDNS, so both refuse the
// same things with the same reasons.
//
// The rules are those under which PowerDNS accepts a record and the zone
// still works: content that PowerDNS parses, names inside the zone, a CNAME
// alone at its name, MX/NS/SRV targets that are host names (not addresses),
// TTLs in range, one TTL per rrset.
//
// Names are canonical when they are lower-case ASCII (IDNs in punycode) and
// end with a dot; every function here returns canonical names.
package dnszone

import (
	"fmt"
	"net/netip"
	"strings"
)

// MaxNameLen is the longest name in presentation form without the final dot
// (RFC 1035: 255 octets on the wire).
const MaxNameLen = 253

// nameRules says which special labels a name may hold.
type nameRules struct {
	underscore bool // "_dmarc", "_443._tcp": service labels
	wildcard   bool // "*" as the leftmost label
	minLabels  int
}

var (
	zoneRules   = nameRules{minLabels: 2}
	ownerRules  = nameRules{underscore: true, wildcard: true, minLabels: 1}
	hostRules   = nameRules{minLabels: 1}                   // MX, NS, SRV targets, SOA mname
	targetRules = nameRules{underscore: true, minLabels: 1} // CNAME, PTR targets
)

// ZoneName checks a zone name and returns it canonical ("example.com.").
func ZoneName(s string) (string, error) {
	n, err := checkName(s, zoneRules)
	if err != nil {
		return "", fmt.Errorf("zone name %s", err)
	}
	return n, nil
}

// HostName checks a host name (a nameserver, a mail exchanger) and returns it
// canonical. An IP address is refused: these fields take names.
func HostName(s string) (string, error) {
	return checkHost(s, hostRules)
}

func checkHost(s string, r nameRules) (string, error) {
	if isIP(s) {
		return "", fmt.Errorf("%q is an IP address, a host name is required", bound(s))
	}
	return checkName(s, r)
}

// OwnerName turns a record name as a user types it into the absolute owner
// name in zone: "" and "@" are the apex, a name ending in a dot or in the
// zone's name is absolute, anything else is relative to the zone (as in a
// zone file). An absolute name outside the zone is refused.
func OwnerName(zone, name string) (string, error) {
	z, err := ZoneName(zone)
	if err != nil {
		return "", err
	}
	name = strings.ToLower(strings.TrimSpace(name))
	bare := strings.TrimSuffix(z, ".")
	switch {
	case name == "" || name == "@":
		return z, nil
	case strings.HasSuffix(name, "."):
	case name == bare || strings.HasSuffix(name, "."+bare):
		name += "."
	default:
		name += "." + z
	}
	return checkOwner(z, name)
}

// checkOwner checks an absolute owner name against zone (canonical).
func checkOwner(zone, name string) (string, error) {
	n, err := checkName(name, ownerRules)
	if err != nil {
		return "", fmt.Errorf("record name %s", err)
	}
	if !InZone(zone, n) {
		return "", fmt.Errorf("record name %q is out of zone %q", n, zone)
	}
	return n, nil
}

// InZone reports whether canonical name is zone or below it.
func InZone(zone, name string) bool {
	return name == zone || strings.HasSuffix(name, "."+zone)
}

// checkName validates s as a domain name and returns it canonical. A single
// trailing dot is optional: names on the wire are always absolute.
func checkName(s string, r nameRules) (string, error) {
	if s == "" || s == "." {
		return "", fmt.Errorf("is empty")
	}
	n := strings.TrimSuffix(s, ".")
	if len(n) > MaxNameLen {
		return "", fmt.Errorf("%q is %d characters, at most %d allowed", bound(s), len(n), MaxNameLen)
	}
	n = strings.ToLower(n)
	// Labels are walked in place: names are checked for every record of a
	// zone on every change of it, and splitting allocated most of that.
	labels := strings.Count(n, ".") + 1
	if labels < r.minLabels {
		return "", fmt.Errorf("%q needs at least %d labels", bound(s), r.minLabels)
	}
	rest := n
	for i := 0; i < labels; i++ {
		l, tail, _ := strings.Cut(rest, ".")
		rest = tail
		if l == "" {
			return "", fmt.Errorf("%q has an empty label", bound(s))
		}
		if len(l) > 63 {
			return "", fmt.Errorf("%q has a label longer than 63 characters", bound(s))
		}
		if l == "*" {
			if !r.wildcard || i != 0 {
				return "", fmt.Errorf("%q: a wildcard \"*\" is allowed only as the leftmost label of a record name", bound(s))
			}
			continue
		}
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			case c == '-':
				if j == 0 || j == len(l)-1 {
					return "", fmt.Errorf("%q: label %q starts or ends with a hyphen", bound(s), bound(l))
				}
			case c == '_':
				if !r.underscore {
					return "", fmt.Errorf("%q: label %q contains '_', which only record names and CNAME/PTR targets may hold", bound(s), bound(l))
				}
			case c >= 0x80:
				return "", fmt.Errorf("%q is not ASCII; give internationalised names in punycode (xn--)", bound(s))
			default:
				return "", fmt.Errorf("%q contains %q; names hold letters, digits, '-' and '_'", bound(s), string(rune(c)))
			}
		}
	}
	if len(s) == len(n)+1 && s[:len(n)] == n {
		return s, nil // already canonical: no copy
	}
	return n + ".", nil
}

func isIP(s string) bool {
	s = strings.TrimSuffix(strings.Trim(s, "[]"), ".")
	_, err := netip.ParseAddr(s)
	return err == nil
}

// bound keeps echoed input short: errors end up in logs and API answers.
func bound(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
