package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The benchmarks model the cluster the architecture targets: 1,000 nodes,
// 5% not ready, 2% draining, a mix of role sets and labels, capacities and
// existing allocations varied, and half the requests carrying one of a few
// reseller selectors. Run them on one core:
//
//	go test -run '^$' -bench . -cpu 1 ./scheduler/

func benchCluster(n int, seed uint64) []Node {
	rng := rand.New(rand.NewPCG(seed, 1))
	roleSets := [][]string{
		{"web", "dns", "mail", "db"}, {"web", "dns", "mail", "db"}, {"web", "dns", "mail", "db"},
		{"web", "db"}, {"web"}, {"mail", "dns"}, {"db"}, {"backup"},
	}
	zones := []string{"eu-1", "eu-2", "us-1"}
	tiers := []string{"standard", "premium", "cheap"}
	disks := []string{"nvme", "ssd", "hdd"}
	nodes := make([]Node, n)
	for i := range nodes {
		zone := zones[rng.IntN(len(zones))]
		labels := map[string]string{
			"zone":   zone,
			"region": zone[:2],
			"tier":   tiers[rng.IntN(len(tiers))],
			"disk":   disks[rng.IntN(len(disks))],
		}
		if rng.IntN(10) < 6 {
			labels["ssd"] = ""
		}
		if rng.IntN(10) == 0 {
			labels["legacy"] = "true"
		}
		capAcc := 500 + rng.IntN(1500)
		capDisk := int64(500_000 + rng.IntN(3_500_000))
		used := rng.Float64() * 0.8
		p := rng.IntN(100)
		nodes[i] = Node{
			Name:      fmt.Sprintf("node-%04d.example.net", i),
			Ready:     p >= 5,
			Draining:  p >= 5 && p < 7,
			Roles:     roleSets[rng.IntN(len(roleSets))],
			Labels:    labels,
			Capacity:  Resources{Accounts: capAcc, DiskMB: capDisk},
			Allocated: Resources{Accounts: int(float64(capAcc) * used), DiskMB: int64(float64(capDisk) * used)},
		}
	}
	return nodes
}

var benchSelectors = []string{
	"zone=eu-1,tier!=cheap",
	"region in (eu),ssd",
	"!legacy,disk notin (hdd)",
	"zone in (eu-2,us-1),tier=premium",
}

func benchRequests(tb testing.TB, n int, seed uint64) []Request {
	rng := rand.New(rand.NewPCG(seed, 2))
	sels := make([]Selector, len(benchSelectors))
	for i, s := range benchSelectors {
		sels[i] = mustParse(tb, s)
	}
	disk := []int64{1024, 5120, 10240, 20480}
	reqs := make([]Request, n)
	for i := range reqs {
		r := Request{
			Account: fmt.Sprintf("acct%06d", i),
			Need:    Resources{Accounts: 1, DiskMB: disk[rng.IntN(len(disk))]},
		}
		switch p := rng.IntN(10); {
		case p < 7:
			r.Roles = []string{"web"}
		case p < 9:
			r.Roles = []string{"web", "mail", "db"}
		default:
			r.Roles = []string{"mail"}
		}
		if i%2 == 0 {
			r.Selector = sels[rng.IntN(len(sels))]
		}
		reqs[i] = r
	}
	return reqs
}

func benchPlace(b *testing.B, strategy Strategy) {
	snap := NewSnapshot(benchCluster(1000, 1), strategy)
	reqs := benchRequests(b, 1024, 1)
	for _, r := range reqs { // warm the selector cache, as a batch would after its first few accounts
		if _, err := snap.Place(r); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := snap.Place(reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
}

func BenchmarkPlace1000Nodes(b *testing.B)        { benchPlace(b, Spread) }
func BenchmarkPlace1000NodesBinPack(b *testing.B) { benchPlace(b, BinPack) }

// BenchmarkPlaceAndAllocate runs the controller's loop: place, allocate,
// and every 100 accounts collect the touched nodes for a commit. When the
// cluster fills up the snapshot is rebuilt off the clock.
func BenchmarkPlaceAndAllocate(b *testing.B) {
	nodes := benchCluster(1000, 2)
	reqs := benchRequests(b, 4096, 2)
	snap := NewSnapshot(nodes, Spread)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := reqs[i%len(reqs)]
		p, err := snap.Place(r)
		if err != nil {
			b.StopTimer()
			snap = NewSnapshot(nodes, Spread)
			b.StartTimer()
			continue
		}
		if err := snap.Allocate(p.Node, r.Need); err != nil {
			b.Fatal(err)
		}
		if i%100 == 99 {
			_ = snap.Touched()
			snap.ResetTouched()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
}

func BenchmarkNewSnapshot1000Nodes(b *testing.B) {
	nodes := benchCluster(1000, 3)
	b.ReportAllocs()
	for b.Loop() {
		NewSnapshot(nodes, Spread)
	}
}

func BenchmarkParseSelector(b *testing.B) {
	const s = "zone=eu-1,tier!=cheap,ssd,!legacy,region in (eu-1,eu-2),disk notin (hdd)"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSelector(s); err != nil {
			b.Fatal(err)
		}
	}
}
