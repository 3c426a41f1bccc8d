package auth

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

func TestThrottleBackoffPerUserAndIP(t *testing.T) {
	th := newThrottle()
	now := time.Unix(1_000_000, 0)
	fail := func(user, ip string) bool {
		if !th.begin(user, ip, now) {
			return false
		}
		th.end(user, ip, false, now)
		return true
	}
	for i := range FreeFailures {
		if !fail("u", "192.0.2.1") {
			t.Fatalf("free failure %d refused", i)
		}
	}
	// Each further failure doubles the wait: 1 s, 2 s, 4 s.
	for _, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		if !fail("u", "192.0.2.1") {
			t.Fatalf("attempt after the wait refused")
		}
		if th.begin("u", "192.0.2.1", now.Add(wait-time.Millisecond)) {
			t.Fatalf("attempt within the %s backoff admitted", wait)
		}
		now = now.Add(wait)
	}
	// Another IP, and another user from this IP, are not affected.
	if !th.begin("u", "192.0.2.2", now) {
		t.Fatal("the user from another IP was refused")
	}
	th.end("u", "192.0.2.2", true, now)
	// A success resets the backoff.
	now = now.Add(MaxBackoff)
	if !th.begin("u", "192.0.2.1", now) {
		t.Fatal("refused after the backoff")
	}
	th.end("u", "192.0.2.1", true, now)
	for i := range FreeFailures {
		if !fail("u", "192.0.2.1") {
			t.Fatalf("free failure %d after a success refused: backoff not reset", i)
		}
	}
}

func TestThrottleDistributedGuessing(t *testing.T) {
	th := newThrottle()
	now := time.Unix(1_000_000, 0)
	// UserBurst failures from as many IPs spend the user's bucket.
	for i := range UserBurst {
		ip := fmt.Sprintf("198.51.%d.%d", i/200, i%200+1)
		if !th.begin("victim", ip, now) {
			t.Fatalf("first attempt from %s refused", ip)
		}
		th.end("victim", ip, false, now)
	}
	// A new attacker IP gets one guess, then waits.
	if !th.begin("victim", "203.0.113.66", now) {
		t.Fatal("first attempt from a new IP refused")
	}
	th.end("victim", "203.0.113.66", false, now)
	if th.begin("victim", "203.0.113.66", now) {
		t.Fatal("a second guess from the same IP admitted while the user is under attack")
	}
	// The real user, from an IP without failures, signs in.
	if !th.begin("victim", "192.0.2.10", now) {
		t.Fatal("the real user was locked out")
	}
}

func TestThrottleIPv6Prefix(t *testing.T) {
	th := newThrottle()
	now := time.Unix(1_000_000, 0)
	admitted := 0
	for i := range 3 * IPBurst {
		ip := fmt.Sprintf("2001:db8:1:2::%x", i+1) // one /64, many addresses
		if th.begin(fmt.Sprintf("user%d", i), ip, now) {
			admitted++
			th.end(fmt.Sprintf("user%d", i), ip, false, now)
		}
	}
	if admitted != IPBurst {
		t.Fatalf("one /64 got %d attempts, want %d", admitted, IPBurst)
	}
}

func TestClientIP(t *testing.T) {
	trusted, err := ParseTrustedProxies("10.0.0.0/8, 192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseTrustedProxies("10.0.0.0/33"); err == nil {
		t.Fatal("bad CIDR accepted")
	}
	for _, tc := range []struct{ peer, xff, want string }{
		{"203.0.113.9:4000", "1.2.3.4", "203.0.113.9"},             // untrusted peer: header ignored
		{"10.1.1.1:4000", "1.2.3.4", "1.2.3.4"},                    // trusted proxy
		{"10.1.1.1:4000", "6.6.6.6, 1.2.3.4, 10.2.2.2", "1.2.3.4"}, // forged left entry ignored
		{"192.0.2.1:4000", "garbage, 1.2.3.4", "1.2.3.4"},          // bare address as /32
		{"10.1.1.1:4000", "1.2.3.4, garbage", "10.1.1.1"},          // garbled last hop: stop at the proxy
		{"10.1.1.1:4000", "", "10.1.1.1"},                          // no header
		{"[::ffff:10.1.1.1]:4000", "2001:db8::1", "2001:db8::1"},   // mapped peer
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.peer
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := ClientIP(r, trusted); got != tc.want {
			t.Errorf("peer %s XFF %q: %s, want %s", tc.peer, tc.xff, got, tc.want)
		}
	}
}
