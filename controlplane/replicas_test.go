package controlplane_test

import (
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent"
)

// Two replicas share one external etcd: both serve, exactly one leads, and
// when the leader dies the other takes over the controllers.
func TestTwoReplicasFailover(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	a := testenv.StartServer(t, testenv.WithEtcd(etcd))
	b := testenv.StartServer(t, testenv.WithEtcd(etcd))
	ctx := testenv.Context(t)

	if a.CA().RootFingerprint() != b.CA().RootFingerprint() {
		t.Fatal("replicas run different CAs")
	}
	testenv.WaitFor(t, 10*time.Second, "one leader", func() bool { return a.IsLeader() != b.IsLeader() })
	leader, follower := a, b
	if b.IsLeader() {
		leader, follower = b, a
	}

	// An agent that knows both replicas connects to the follower first.
	ag := follower.StartAgent(t, "node-a", func(c *nodeagent.Config) {
		c.Servers = []string{follower.Config.AgentListen, leader.Config.AgentListen}
	})
	testenv.WaitFor(t, 10*time.Second, "READY via the leader's controller", func() bool {
		n, err := leader.Admin.Node(ctx, "node-a")
		return err == nil && n != nil && n.Status == "READY"
	})
	var out struct {
		Replicas []struct {
			ID     string
			Leader bool
		}
	}
	if err := follower.Admin.Do(ctx, `{replicas{id leader}}`, nil, &out); err != nil {
		t.Fatal(err)
	}
	leaders := 0
	for _, r := range out.Replicas {
		if r.Leader {
			leaders++
			if r.ID != leader.ID() {
				t.Fatalf("replicas query names %s as leader, want %s", r.ID, leader.ID())
			}
		}
	}
	if len(out.Replicas) != 2 || leaders != 1 {
		t.Fatalf("replicas = %+v", out.Replicas)
	}

	leader.Stop()
	testenv.WaitFor(t, 10*time.Second, "follower takes over", follower.IsLeader)

	// The new leader's controllers work: a killed agent turns DOWN, and
	// tasks still flow through the surviving replica.
	if task, err := follower.Admin.Ping(ctx, "node-a", "after failover", 10); err != nil || task.Status != "SUCCEEDED" {
		t.Fatalf("ping after failover: %+v, %v", task, err)
	}
	ag.Stop()
	testenv.WaitFor(t, 10*time.Second, "DOWN seen by the new leader", func() bool {
		n, err := follower.Admin.Node(ctx, "node-a")
		return err == nil && n != nil && n.Status == "DOWN"
	})
}
