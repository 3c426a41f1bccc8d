package controlplane_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/protos/agentpb"
)

func nodeStatus(t *testing.T, s *testenv.Server, name string) string {
	t.Helper()
	n, err := s.Admin.Node(context.Background(), name)
	if err != nil {
		t.Fatalf("node %s: %v", name, err)
	}
	if n == nil {
		return ""
	}
	return n.Status
}

func TestEnrolStreamPing(t *testing.T) {
	s := testenv.StartServer(t)
	a := s.StartAgent(t, "node-a")
	b := s.StartAgent(t, "node-b")
	ctx := testenv.Context(t)

	for _, ag := range []*testenv.Agent{a, b} {
		testenv.WaitFor(t, 10*time.Second, ag.Name+" READY", func() bool { return nodeStatus(t, s, ag.Name) == "READY" })
	}
	n, err := s.Admin.Node(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	if n.AgentVersion == nil || *n.AgentVersion != "test" || n.Capacity.CPUs < 1 || n.Capacity.MemoryBytes <= 0 || n.EnrolledAt == nil || n.OS == nil {
		t.Fatalf("node facts not reported: %+v", n)
	}

	task, err := s.Admin.Ping(ctx, "node-a", "hello", 10)
	if err != nil {
		t.Fatalf("ping: %v", err)
	}
	if task.Status != "SUCCEEDED" || task.Result == nil {
		t.Fatalf("ping task = %+v", task)
	}
	var res struct {
		Payload string `json:"payload"`
		Node    string `json:"node"`
	}
	if err := json.Unmarshal([]byte(*task.Result), &res); err != nil {
		t.Fatalf("result %q: %v", *task.Result, err)
	}
	if res.Payload != "hello" || res.Node != "node-a" {
		t.Fatalf("ping answered by %q with %q", res.Node, res.Payload)
	}

	// Restarting the agent needs no token: the identity is in its data dir.
	a.Stop()
	a.Start()
	testenv.WaitFor(t, 10*time.Second, "node-a reconnected", a.Connected)
	if task, err := s.Admin.Ping(ctx, "node-a", "again", 10); err != nil || task.Status != "SUCCEEDED" {
		t.Fatalf("ping after agent restart: %+v, %v", task, err)
	}
}

// A server restart while tasks are queued and in flight loses none of them
// and has the agent run none twice: queued tasks survive in etcd, results
// lost with the old stream are answered again from the agent's journal.
func TestServerRestartLosesNoTask(t *testing.T) {
	s := testenv.StartServer(t)
	a := s.StartAgent(t, "node-a", func(c *nodeagent.Config) { c.Concurrency = 4 })
	ctx := testenv.Context(t)

	const n = 60
	ids := make([]string, 0, n)
	for i := 0; i < n; i++ {
		spec := &agentpb.Task{Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: "x", DelayMs: 40}}}
		task, err := s.Store().EnqueueTask(ctx, "node-a", spec, "test", store.NewAuditEvent("test", "", "runNodeAction", "node-a", "ok"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, task.ID)
	}
	testenv.WaitFor(t, 20*time.Second, "some tasks done", func() bool { return a.Executed() >= 8 })
	s.Restart()
	done := func() bool {
		for _, id := range ids {
			task, _, err := s.Store().GetTask(ctx, id)
			if err != nil || task.Status != store.TaskSucceeded {
				return false
			}
		}
		return true
	}
	testenv.WaitFor(t, 60*time.Second, "all tasks succeeded after restart", done)
	if got := a.Executed(); got != n {
		t.Fatalf("agent executed %v tasks, want exactly %d", got, n)
	}
	if q, err := s.Store().QueueLen(ctx, "node-a"); err != nil || q != 0 {
		t.Fatalf("queue length %d, %v; want 0", q, err)
	}
}

func TestAgentKillGoesDownAndComesBack(t *testing.T) {
	s := testenv.StartServer(t)
	a := s.StartAgent(t, "node-a")
	testenv.WaitFor(t, 10*time.Second, "READY", func() bool { return nodeStatus(t, s, "node-a") == "READY" })

	killed := time.Now()
	a.Stop()
	testenv.WaitFor(t, 10*time.Second, "SUSPECT or DOWN within 10s", func() bool {
		st := nodeStatus(t, s, "node-a")
		return st == "SUSPECT" || st == "DOWN"
	})
	t.Logf("node left READY %s after the kill", time.Since(killed).Round(time.Millisecond))
	testenv.WaitFor(t, 10*time.Second, "DOWN within 10s", func() bool { return nodeStatus(t, s, "node-a") == "DOWN" })
	t.Logf("node DOWN %s after the kill", time.Since(killed).Round(time.Millisecond))

	a.Start()
	testenv.WaitFor(t, 15*time.Second, "READY again", func() bool { return nodeStatus(t, s, "node-a") == "READY" })
}

func TestCertificateRenewal(t *testing.T) {
	s := testenv.StartServer(t, testenv.WithCertLifetime(6*time.Second))
	a := s.StartAgent(t, "node-a")
	ctx := testenv.Context(t)
	st, _, err := s.Store().GetNodeState(ctx, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	first := st.CertSerials[0]
	testenv.WaitFor(t, 15*time.Second, "certificate renewed", func() bool {
		st, _, err := s.Store().GetNodeState(ctx, "node-a")
		return err == nil && len(st.CertSerials) == 2 && st.CertSerials[0] == first
	})
	// Past the first certificate's expiry the node still works: new streams
	// and tasks use the renewed certificate.
	time.Sleep(7 * time.Second)
	a.Stop()
	a.Start()
	testenv.WaitFor(t, 10*time.Second, "reconnected on renewed cert", a.Connected)
	if task, err := s.Admin.Ping(ctx, "node-a", "", 10); err != nil || task.Status != "SUCCEEDED" {
		t.Fatalf("ping after renewal: %+v, %v", task, err)
	}
}
