package web

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/npanel/npanel/validate"
)

// An account that moved to another node keeps answering on this one
// until DNS caches have expired: with WebSpec.proxy_to set, every site is
// a reverse proxy to the new node's HTTP address, the Host header kept so
// that the new node picks the same vhost. Nothing of the account is
// served from here then: no docroot, no PHP pool, no local ACME tokens
// (a certificate the new node orders is answered there).

// StateProxy is a proxied site's state in agentpb.SiteResult.state.
const StateProxy = "proxy"

// MaxProxyToLen bounds proxy_to: a hostname of 253 bytes and a port.
const MaxProxyToLen = 253 + 6

// proxyTarget checks proxy_to, "host:port" with host an IP address
// (IPv6 in brackets) or a canonical hostname and port 1-65535, and
// returns it as nginx's proxy_pass takes it after "http://". No scheme,
// path, user information or zone: the result is spliced into nginx
// configuration unquoted.
func proxyTarget(s string) (string, error) {
	if len(s) > MaxProxyToLen {
		return "", fmt.Errorf("web: proxy_to: %d bytes long; at most %d", len(s), MaxProxyToLen)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("web: proxy_to %q: want host:port: %w", s, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 || strconv.Itoa(p) != port {
		return "", fmt.Errorf("web: proxy_to %q: port must be 1 to 65535", s)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" || a.Is4In6() {
			return "", fmt.Errorf("web: proxy_to %q: an IP address without zone, IPv4 as a.b.c.d", s)
		}
		return net.JoinHostPort(a.String(), port), nil
	}
	if err := validate.CanonicalDomain(host); err != nil {
		return "", fmt.Errorf("web: proxy_to %q: host: %w", s, err)
	}
	return net.JoinHostPort(host, port), nil
}
