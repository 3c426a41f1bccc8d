package clientip

import (
	"net/netip"
	"testing"
)

func TestKey(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"},
		{"fe80::1%eth0", "fe80::/64"},
		{"not-an-ip", "not-an-ip"},
		{"", ""},
	} {
		if got := KeyOf(tc.in); got != tc.want {
			t.Errorf("KeyOf(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if Key(netip.Addr{}) != "" {
		t.Error("the invalid address has a key")
	}
}

func TestPeer(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		ok   bool
	}{
		{"192.0.2.7:443", "192.0.2.7", true},
		{"[::ffff:10.1.1.1]:4000", "10.1.1.1", true},
		{"[2001:db8::1]:80", "2001:db8::1", true},
		{"[fe80::1%eth0]:80", "fe80::1", true},
		{"2001:db8::1", "2001:db8::1", true},
		{"@", "", false},
		{"example.com:80", "", false},
	} {
		ip, ok := Peer(tc.in)
		if ok != tc.ok || ok && ip.String() != tc.want {
			t.Errorf("Peer(%q) = %v %v, want %s %v", tc.in, ip, ok, tc.want, tc.ok)
		}
	}
}

func TestLimiter(t *testing.T) {
	l := NewLimiter(2)
	a, b := KeyOf("2001:db8:1:2::1"), KeyOf("2001:db8:1:2::2") // one /64
	if !l.Acquire(a) || !l.Acquire(b) {
		t.Fatal("refused under the limit")
	}
	if l.Acquire(KeyOf("2001:db8:1:2::3")) {
		t.Fatal("a third address of the /64 admitted, limit 2")
	}
	if !l.Acquire(KeyOf("2001:db8:1:3::1")) {
		t.Fatal("another /64 refused")
	}
	l.Release(a)
	if !l.Acquire(a) {
		t.Fatal("refused after a release")
	}
	for range 10 {
		if !l.Acquire("") {
			t.Fatal("the empty key was limited")
		}
	}
	l.Release("")
	l.Release(a)
	l.Release(b)
	l.Release(KeyOf("2001:db8:1:3::1"))
	if len(l.n) != 0 {
		t.Fatalf("entries left after every release: %v", l.n)
	}
}

// FuzzPeer: any peer text parses without panic into an address whose key
// is that of its /64 (IPv6) or itself (IPv4), and the key does not depend
// on the port or the IPv4-mapped form.
func FuzzPeer(f *testing.F) {
	for _, s := range []string{"192.0.2.1:443", "[2001:db8::1]:80", "2001:db8::1", "[fe80::1%eth0]:1", "::ffff:192.0.2.1", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, ok := Peer(s)
		if !ok {
			return
		}
		if ip.Zone() != "" || ip.Is4In6() {
			t.Fatalf("Peer(%q) = %v: zone or mapped form kept", s, ip)
		}
		k := Key(ip)
		if k == "" || KeyOf(ip.String()) != k {
			t.Fatalf("Peer(%q) = %v: key %q, KeyOf %q", s, ip, k, KeyOf(ip.String()))
		}
		if ip.Is6() {
			p, _ := ip.Prefix(64)
			if Key(p.Addr()) != k {
				t.Fatalf("%v and its /64 keyed apart", ip)
			}
		}
	})
}
