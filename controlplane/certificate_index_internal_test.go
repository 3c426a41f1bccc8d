package controlplane

import (
	"fmt"
	"slices"
	"testing"
)

func TestCertIndexByAccount(t *testing.T) {
	x := newCertIndex()
	x.put("a.example", &certEntry{account: "A"})
	x.put("b.example", &certEntry{account: "A"})
	x.put("c.example", &certEntry{account: "B"})
	if got := x.ofAccount("A"); !slices.Equal(got, []string{"a.example", "b.example"}) {
		t.Fatalf("ofAccount(A) = %v", got)
	}

	// A certificate that changes hands (a site moved to another account)
	// leaves the old account's set.
	if prev := x.put("b.example", &certEntry{account: "B"}); prev == nil || prev.account != "A" {
		t.Fatalf("put returned %+v, want the replaced entry of A", prev)
	}
	if got := x.ofAccount("A"); !slices.Equal(got, []string{"a.example"}) {
		t.Fatalf("after move, ofAccount(A) = %v", got)
	}
	if got := x.ofAccount("B"); !slices.Equal(got, []string{"b.example", "c.example"}) {
		t.Fatalf("after move, ofAccount(B) = %v", got)
	}

	x.drop("a.example")
	x.drop("a.example") // twice: nothing left to drop
	if got := x.ofAccount("A"); got != nil {
		t.Fatalf("after drop, ofAccount(A) = %v", got)
	}
	if _, ok := x.byAccount["A"]; ok {
		t.Fatal("an account without certificates keeps a set")
	}

	x.reset()
	if got := x.ofAccount("B"); got != nil || len(x.m) != 0 {
		t.Fatalf("after reset: ofAccount(B) = %v, %d entries", got, len(x.m))
	}
}

// TestCertIndexWaitingIn: a zone's event finds the certificates with a
// name in the zone (not one that only shares a suffix) that wait for it
// or may be about to (pending, not in flight), however many other
// certificates the index holds.
func TestCertIndexWaitingIn(t *testing.T) {
	x := newCertIndex()
	x.put("shop.example.com", &certEntry{account: "A", domains: []string{"shop.example.com", "www.shop.example.com"}, waitingNames: true, pending: true})
	x.put("blog.example.com", &certEntry{account: "A", domains: []string{"blog.example.com", "*.blog.example.com"}, pending: true})
	x.put("myshop.example.com", &certEntry{account: "B", domains: []string{"myshop.example.com"}, waitingNames: true, pending: true})
	x.put("busy.example.com", &certEntry{account: "B", domains: []string{"busy.example.com"}, pending: true, inFlight: true})
	x.put("done.example.com", &certEntry{account: "B", domains: []string{"done.example.com"}})
	x.put("alias.example.org", &certEntry{account: "A", domains: []string{"site.example.net", "alias.example.org"}, partial: true})
	for i := range 1000 {
		x.put(fmt.Sprintf("s%d.example.net", i), &certEntry{account: "C", domains: []string{fmt.Sprintf("s%d.example.net", i)}, pending: true})
	}
	cases := map[string][]string{
		"shop.example.com": {"shop.example.com"},
		"blog.example.com": {"blog.example.com"},
		"example.com":      {"blog.example.com", "myshop.example.com", "shop.example.com"},
		"example.org":      {"alias.example.org"},
		"s7.example.net":   {"s7.example.net"},
		"other.example":    nil,
	}
	for zone, want := range cases {
		got := x.waitingIn(zone)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("waitingIn(%s) = %v, want %v", zone, got, want)
		}
	}
	x.drop("shop.example.com")
	if got := x.waitingIn("shop.example.com"); got != nil {
		t.Errorf("after drop: %v", got)
	}
	if len(x.byDomain["example.com"]) != 4 {
		t.Errorf("example.com holds %v", x.byDomain["example.com"])
	}
}
