package auth

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/npanel/npanel/controlplane/clientip"
)

type sourceKey struct{}

// Source returns the client address the request came from (see
// SourceMiddleware), for the audit log and, through clientip.KeyOf, the
// per-client limits. It names a client, not a connection.
func Source(ctx context.Context) string {
	s, _ := ctx.Value(sourceKey{}).(string)
	return s
}

// WithSource returns ctx carrying the client address.
func WithSource(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, sourceKey{}, addr)
}

// ParseTrustedProxies parses "CIDR,CIDR,..." (a bare address is a /32 or
// /128).
func ParseTrustedProxies(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR", f)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %v", f, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ClientIP is the address of the client behind r: the peer's IP, or, when
// the peer is one of the trusted proxies, the right-most address of
// X-Forwarded-For that is not a trusted proxy (the left-most entries are
// whatever the client wrote, so they are never believed). A peer that is
// not trusted cannot choose its address by sending the header.
func ClientIP(r *http.Request, trusted []netip.Prefix) string {
	peer, ok := clientip.Peer(r.RemoteAddr)
	if !ok {
		return r.RemoteAddr // not IP (a unix socket): its own key
	}
	if !isTrusted(peer, trusted) {
		return peer.String()
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := clientip.Peer(strings.TrimSpace(hops[i]))
		if !ok {
			break // a garbled hop: stop at the last address we could trust
		}
		client = a
		if !isTrusted(client, trusted) {
			break
		}
	}
	return client.String()
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// SourceMiddleware records the client's address (ClientIP) in the request's
// context.
func SourceMiddleware(trusted []netip.Prefix, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(WithSource(r.Context(), ClientIP(r, trusted))))
	})
}
