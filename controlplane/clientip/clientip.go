// Package clientip names API clients for the per-client limits (the login
// throttle, the listener's connections, websockets, the refusal audit), so
// that every limit counts one client the same way. It imports nothing of
// the control plane: store and auth both use it.
package clientip

import (
	"net/netip"
	"sync"
)

// Key is what a per-client limit counts a client by: its IPv4 address, or
// its IPv6 address's /64, which one subscriber usually holds whole; keying
// IPv6 by address would give one client 2^64 budgets. The invalid address
// has the empty key.
func Key(ip netip.Addr) string {
	if !ip.IsValid() {
		return ""
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// KeyOf is Key of an address in text; text that is not an address is its
// own key.
func KeyOf(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	return Key(ip)
}

// Peer parses a peer address, "ip:port", "[ip]:port" or a bare ip, into its
// unmapped IP without zone; ok is false for anything else.
func Peer(addr string) (ip netip.Addr, ok bool) {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		ip = ap.Addr()
	} else if ip, err = netip.ParseAddr(addr); err != nil {
		return netip.Addr{}, false
	}
	return ip.Unmap().WithZone(""), true
}

// Limiter counts what each client holds open (connections, websockets)
// and refuses more than Max per key. The empty key, a client without an
// address, is not counted: one such client must not use up the budget of
// all of them.
type Limiter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// NewLimiter returns a Limiter allowing max per key.
func NewLimiter(max int) *Limiter { return &Limiter{max: max, n: map[string]int{}} }

// Max is the per-key bound.
func (l *Limiter) Max() int { return l.max }

// Acquire takes one place for key, or reports false when it holds Max.
func (l *Limiter) Acquire(key string) bool {
	if key == "" {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[key] >= l.max {
		return false
	}
	l.n[key]++
	return true
}

// Release gives back a place Acquire took.
func (l *Limiter) Release(key string) {
	if key == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[key]--; l.n[key] <= 0 {
		delete(l.n, key)
	}
}
