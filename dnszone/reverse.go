package dnszone

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ReverseZones returns the reverse zones that cover cidr exactly. Zones fall
// on octet boundaries for IPv4 (in-addr.arpa) and nibble boundaries for IPv6
// (ip6.arpa); a prefix between boundaries expands to the zones of the next
// longer boundary (a /22 is four /24 zones). IPv4 prefixes longer than /24
// need RFC 2317 classless delegation from the /24's owner and are refused,
// as are prefixes shorter than /8 (IPv4) or /16 (IPv6). One CIDR expands to
// at most 128 zones (IPv4 /9) or 8 (IPv6).
func ReverseZones(cidr string) ([]string, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		return nil, fmt.Errorf("cidr %q: %w", bound(cidr), err)
	}
	if p.Masked() != p {
		return nil, fmt.Errorf("cidr %q has host bits set; did you mean %s?", bound(cidr), p.Masked())
	}
	addr := p.Addr()
	bits := p.Bits()
	unit := 8 // bits per label
	suffix := "in-addr.arpa."
	if addr.Is6() {
		unit, suffix = 4, "ip6.arpa."
	}
	if addr.Is4() && bits > 24 {
		return nil, fmt.Errorf("cidr %s is longer than /24: its reverse zone needs RFC 2317 classless delegation, which is not supported; add the enclosing /24 if you own it", p)
	}
	if (addr.Is4() && bits < 8) || (addr.Is6() && bits < 16) {
		return nil, fmt.Errorf("cidr %s is too short for reverse zones (at least /8 for IPv4, /16 for IPv6)", p)
	}
	labels := (bits + unit - 1) / unit
	expand := labels*unit - bits
	raw := addr.AsSlice()
	digit := func(i int) int { // the i-th label value from the left
		if unit == 8 {
			return int(raw[i])
		}
		b := raw[i/2]
		if i%2 == 0 {
			return int(b >> 4)
		}
		return int(b & 0xf)
	}
	var zones []string
	for k := 0; k < 1<<expand; k++ {
		var ls []string
		for i := 0; i < labels; i++ {
			v := digit(i)
			if i == labels-1 {
				v |= k
			}
			if unit == 8 {
				ls = append(ls, strconv.Itoa(v))
			} else {
				ls = append(ls, strconv.FormatInt(int64(v), 16))
			}
		}
		for i, j := 0, len(ls)-1; i < j; i, j = i+1, j-1 {
			ls[i], ls[j] = ls[j], ls[i]
		}
		zones = append(zones, strings.Join(ls, ".")+"."+suffix)
	}
	return zones, nil
}
