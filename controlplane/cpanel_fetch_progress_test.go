package controlplane_test

import (
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// A running fetch's progress reports (the node's stream, as backups do)
// show as its bytes; a report from another node is dropped.
func TestCpanelFetchProgress(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	stream := func(name string) agentpb.AgentGateway_ConnectClient {
		tok, err := s.Admin.CreateJoinToken(ctx, name, "127.0.0.1", []string{"WEB"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := testenv.EnrollNode(ctx, enrollClient(t, s), tok.Token, name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := testenv.OpenStream(ctx, gatewayClient(t, s, cert))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	runner, other := stream("fprog-1"), stream("fprog-2")
	pw, fp := "pw-1", "SHA256:"+strings.Repeat("C", 43)
	var f *client.CpanelFetch
	testenv.WaitFor(t, 10*time.Second, "fetch accepted (the node's key known)", func() bool {
		var err error
		f, err = s.Admin.FetchCpanelBackup(ctx, client.CpanelServerInput{Node: "fprog-1", Host: "old.example.com", User: "root",
			Password: &pw, HostKeyFingerprint: &fp}, "", "/home/x.tar.gz")
		return err == nil
	})
	var taskID string
	for taskID == "" {
		m, err := runner.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if a := m.GetTask().GetFetchCpanelBackup(); a != nil && a.GetPath() == f.Path {
			taskID = m.GetTask().GetId()
		}
	}
	send := func(c agentpb.AgentGateway_ConnectClient, done uint64) {
		t.Helper()
		if err := c.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_BackupProgress{BackupProgress: &agentpb.BackupProgress{
			TaskId: taskID, BytesDone: done, TotalBytes: 10_000}}}); err != nil {
			t.Fatal(err)
		}
	}
	bytes := func() int64 {
		cur, err := s.Admin.CpanelFetch(ctx, f.ID)
		if err != nil || cur == nil {
			return -1
		}
		return cur.Bytes
	}
	// A stream's messages are handled in order: once the service report
	// sent after it shows, the other node's progress report was handled.
	barrier := func(c agentpb.AgentGateway_ConnectClient, node, version string) {
		t.Helper()
		if err := c.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_Services{Services: &agentpb.ServiceReport{
			Services: []*agentpb.ServiceStatus{{Name: "nginx", State: "running", Version: version}}}}}); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, 10*time.Second, node+"'s report handled", func() bool {
			svcs, _, err := s.Admin.Services(ctx, node)
			return err == nil && len(svcs) == 1 && svcs[0].Version != nil && *svcs[0].Version == version
		})
	}
	send(other, 9_999) // not its task: dropped
	barrier(other, "fprog-2", "barrier-1")
	if got := bytes(); got != 0 {
		t.Fatalf("bytes %d after the other node's report, want 0", got)
	}
	send(runner, 500)
	testenv.WaitFor(t, 10*time.Second, "bytes 500", func() bool { return bytes() == 500 })
	if cur, _ := s.Admin.CpanelFetch(ctx, f.ID); cur.Status == "DONE" || cur.Status == "FAILED" {
		t.Fatalf("fetch %+v", cur)
	}
}
