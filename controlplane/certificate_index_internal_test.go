package controlplane

import (
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
