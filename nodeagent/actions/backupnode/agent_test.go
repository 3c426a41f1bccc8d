package backupnode_test

import (
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// An agent started with --modules backup runs the sshd, reports it in
// nodes { services }, and applies EnsureBackupAccess sent through the
// control plane's task queue: the result pins a host key a listed key
// logs in against.
func TestAgentRunsBackupNode(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/sshd")
	if os.Geteuid() != 0 {
		t.Skip("needs root: the sshd runs as root and chroots")
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "backup-1", testenv.WithModules(t, "backup"))
	ctx := testenv.Context(t)

	var sftpd client.Service
	testenv.WaitFor(t, 60*time.Second, "backup-sftpd running with a version", func() bool {
		svcs, _, err := s.Admin.Services(ctx, "backup-1")
		if err != nil {
			t.Fatal(err)
		}
		for _, sv := range svcs {
			if sv.Name == "backup-sftpd" {
				sftpd = sv
			}
		}
		return sftpd.State == "RUNNING" && sftpd.Version != nil && *sftpd.Version != ""
	})
	if !slices.Contains(sftpd.Listen, ag.Config.SFTPListen) {
		t.Errorf("listen %v, want %s", sftpd.Listen, ag.Config.SFTPListen)
	}

	c := newClient(t, "web1")
	spec := &agentpb.Task{Action: &agentpb.Task_EnsureBackupAccess{EnsureBackupAccess: &agentpb.EnsureBackupAccessAction{
		Keys: []*agentpb.BackupAccessKey{c.key()}}}}
	task, err := s.Store().EnqueueTask(ctx, "backup-1", spec, "test", store.NewAuditEvent("test", "", "runNodeAction", "backup-1", "ok"))
	if err != nil {
		t.Fatal(err)
	}
	var done *store.Task
	testenv.WaitFor(t, 30*time.Second, "ensure backup access done", func() bool {
		done, _, err = s.Store().GetTask(ctx, task.ID)
		return err == nil && (done.Status == store.TaskSucceeded || done.Status == store.TaskFailed)
	})
	if done.Status != store.TaskSucceeded {
		t.Fatalf("task %s: %s", done.Status, done.Error)
	}
	var res agentpb.TaskResult
	if err := proto.Unmarshal(done.Result, &res); err != nil {
		t.Fatal(err)
	}
	acc := res.GetBackupAccess()
	if acc.GetSftpAddress() != ag.Config.SFTPListen || acc.GetSftpUser() != ag.Config.BackupUser {
		t.Fatalf("result %v", acc)
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(acc.GetHostKey()))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := ssh.Dial("tcp", acc.GetSftpAddress(), &ssh.ClientConfig{User: acc.GetSftpUser(),
		Auth: []ssh.AuthMethod{ssh.PublicKeys(c.signer)}, HostKeyCallback: ssh.FixedHostKey(pk), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("login with the listed key: %v", err)
	}
	conn.Close()
}
