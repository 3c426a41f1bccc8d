package graph

import "testing"

// One read per account at a time, and a burst then one a second per user.
func TestLogReadGate(t *testing.T) {
	var g logReadGate
	done, err := g.start("alice", "a1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.start("bob", "a1"); err == nil {
		t.Fatal("a second read of the same account while one runs")
	}
	done()
	admitted := 0
	for range 20 {
		if d, err := g.start("carol", "c1"); err == nil {
			admitted++
			d()
		}
	}
	if admitted != logReadBurst {
		t.Fatalf("%d reads admitted in a burst, want %d", admitted, logReadBurst)
	}
	if _, err := g.start("dave", "d1"); err != nil {
		t.Fatalf("another user is limited by carol's reads: %v", err)
	}
}
