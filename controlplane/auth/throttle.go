package auth

import (
	"sync"
	"time"

	"github.com/npanel/npanel/controlplane/clientip"
)

// Login throttling. Three limits, none of which a stranger can use to lock
// the real user out:
//
//   - per client IP (an IPv6 client by its /64): failed attempts spend a
//     bucket of IPBurst refilled at IPPerMinute, whatever the user names
//     and however many connections the client opens: this is what stops
//     a password sprayer;
//   - per user name and client IP: after a few failures each further one
//     doubles the wait before that IP may try that user again (1 s, 2 s,
//     4 s, ... up to MaxBackoff); a success resets it;
//   - per user name, over all IPs: when the failures against one user
//     exceed UserBurst (refilled at UserPerMinute), the free failures of
//     the per-IP backoff drop to zero, so a distributed guesser gets one
//     guess per IP per backoff step. An IP that has not failed against the
//     user is never refused: the real user, at its own address, signs in.
//
// Successful attempts cost nothing, so a NAT full of people who know their
// passwords is not limited.
const (
	IPBurst       = 10
	IPPerMinute   = 10
	UserBurst     = 50
	UserPerMinute = 10
	FreeFailures  = 3
	MaxBackoff    = 15 * time.Minute
	// maxEntries bounds each table; idle entries are swept when one fills.
	maxEntries = 100_000
)

// bucket is a token bucket refilled continuously.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) refill(now time.Time, burst, perMinute float64) {
	if b.last.IsZero() {
		b.tokens, b.last = burst, now
		return
	}
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Minutes()*perMinute)
	b.last = now
}

type backoff struct {
	fails int
	until time.Time
	last  time.Time
}

type throttle struct {
	mu   sync.Mutex
	ip   map[string]*bucket
	user map[string]*bucket
	pair map[string]*backoff
}

func newThrottle() *throttle {
	return &throttle{ip: map[string]*bucket{}, user: map[string]*bucket{}, pair: map[string]*backoff{}}
}

// ipKey is the address a client is limited by, as every per-client limit
// counts it (an IPv6 client by its /64).
func ipKey(addr string) string { return clientip.KeyOf(addr) }

// begin admits an attempt of user from ip, or refuses it. An admitted
// attempt holds one token of the IP's bucket until end returns it (on
// success): concurrent attempts cannot overrun the bucket.
func (t *throttle) begin(user, ip string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	ip = ipKey(ip)
	if p := t.pair[user+"\x00"+ip]; p != nil && now.Before(p.until) {
		return false
	}
	b := entry(t.ip, ip, now, t.sweep)
	b.refill(now, IPBurst, IPPerMinute)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refund returns the IP's token of an attempt that could not be checked.
func (t *throttle) refund(ip string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b := t.ip[ipKey(ip)]; b != nil {
		b.tokens = min(IPBurst, b.tokens+1)
	}
}

// end records the outcome of an attempt begin admitted.
func (t *throttle) end(user, ip string, ok bool, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ip = ipKey(ip)
	key := user + "\x00" + ip
	if ok {
		if b := t.ip[ip]; b != nil {
			b.tokens = min(IPBurst, b.tokens+1)
		}
		delete(t.pair, key)
		return
	}
	u := entry(t.user, user, now, t.sweep)
	u.refill(now, UserBurst, UserPerMinute)
	free := FreeFailures
	if u.tokens < 1 {
		free = 0 // this user is under attack from many places
	} else {
		u.tokens--
	}
	p := entry(t.pair, key, now, t.sweep)
	p.fails++
	p.last = now
	if n := p.fails - free; n > 0 {
		d := MaxBackoff
		if n <= 20 {
			d = min(MaxBackoff, time.Second<<(n-1))
		}
		p.until = now.Add(d)
	}
}

// entry returns m's entry for key, creating it; a full table is swept first.
func entry[T any](m map[string]*T, key string, now time.Time, sweep func(time.Time)) *T {
	if v, ok := m[key]; ok {
		return v
	}
	if len(m) >= maxEntries {
		sweep(now)
		if len(m) >= maxEntries {
			clear(m) // an attack wider than the table: forget, rather than grow
		}
	}
	v := new(T)
	m[key] = v
	return v
}

// sweep drops entries that no longer limit anything: full buckets and
// backoffs that ended and saw no failure for MaxBackoff.
func (t *throttle) sweep(now time.Time) {
	for k, b := range t.ip {
		if b.refill(now, IPBurst, IPPerMinute); b.tokens >= IPBurst {
			delete(t.ip, k)
		}
	}
	for k, b := range t.user {
		if b.refill(now, UserBurst, UserPerMinute); b.tokens >= UserBurst {
			delete(t.user, k)
		}
	}
	for k, p := range t.pair {
		if now.After(p.until) && now.Sub(p.last) > MaxBackoff {
			delete(t.pair, k)
		}
	}
}
