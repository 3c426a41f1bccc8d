package scheduler_test

import (
	"errors"
	"fmt"

	"github.com/npanel/npanel/scheduler"
)

// The controller's planning pass: one snapshot, a batch placed with Allocate
// after each placement, then the touched nodes' allocations written in one
// transaction that compares the revisions they were read at.
func Example() {
	nodes := []scheduler.Node{
		{Name: "web-1", Ready: true, Roles: []string{"web", "mail"}, Labels: map[string]string{"zone": "eu-1"},
			Capacity: scheduler.Resources{Accounts: 2, DiskMB: 10_000}},
		{Name: "web-2", Ready: true, Roles: []string{"web", "mail"}, Labels: map[string]string{"zone": "eu-2"},
			Capacity: scheduler.Resources{Accounts: 2, DiskMB: 10_000}, Allocated: scheduler.Resources{Accounts: 1, DiskMB: 2_000}},
		{Name: "web-3", Ready: false, Roles: []string{"web"}, Labels: map[string]string{"zone": "eu-1"},
			Capacity: scheduler.Resources{Accounts: 50, DiskMB: 100_000}},
	}
	snap := scheduler.NewSnapshot(nodes, scheduler.Spread)
	pool, err := scheduler.ParseSelector("zone in (eu-1,eu-2)")
	if err != nil {
		panic(err)
	}
	for _, account := range []string{"alice", "bob", "carol", "dave"} {
		need := scheduler.Resources{Accounts: 1, DiskMB: 1_000}
		p, err := snap.Place(scheduler.Request{Account: account, Roles: []string{"web"}, Need: need, Selector: pool})
		var pe *scheduler.PlacementError
		if errors.As(err, &pe) {
			fmt.Println(pe) // the account stays pending with this reason
			continue
		}
		if err := snap.Allocate(p.Node, need); err != nil {
			panic(err)
		}
		fmt.Printf("%s -> %s (score %.3f)\n", account, p.Node, p.Score)
	}
	for _, name := range snap.Touched() {
		n, _ := snap.Node(name)
		fmt.Printf("commit %s: %d accounts, %d MB\n", name, n.Allocated.Accounts, n.Allocated.DiskMB)
	}
	// Output:
	// alice -> web-1 (score 0.700)
	// bob -> web-1 (score 0.400)
	// carol -> web-2 (score 0.350)
	// no node fits account "dave" (3 nodes considered): 1 node not READY; 2 nodes with no account slots left
	// commit web-1: 2 accounts, 2000 MB
	// commit web-2: 2 accounts, 3000 MB
}
