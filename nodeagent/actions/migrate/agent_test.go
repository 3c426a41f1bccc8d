package migrate_test

import (
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/nodeagent/actions/migrate"
	"github.com/npanel/npanel/protos/agentpb"
)

// Two agents of an in-process cluster, each with --migration-listen on
// its own loopback port: both report the endpoint in nodes { services },
// and the four actions sent through the control plane's task queue move
// a home from one to the other.
func TestMigrationThroughControlPlane(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: rsync runs as the account, a user is created")
	}
	testenv.RequireDaemon(t, "/usr/bin/rsync")
	testenv.RequireDaemon(t, "/usr/bin/ssh")
	s := testenv.StartServer(t)
	endpoint := func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) }
	src := s.StartAgent(t, "mig-src", endpoint)
	dst := s.StartAgent(t, "mig-dst", endpoint)
	ctx := testenv.Context(t)

	for _, ag := range []*testenv.Agent{src, dst} {
		var svc client.Service
		testenv.WaitFor(t, 30*time.Second, ag.Name+" reports "+migrate.ServiceName, func() bool {
			svcs, _, err := s.Admin.Services(ctx, ag.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, sv := range svcs {
				if sv.Name == migrate.ServiceName {
					svc = sv
				}
			}
			return svc.State == "RUNNING"
		})
		if !slices.Contains(svc.Listen, ag.Config.MigrationListen) {
			t.Errorf("%s: listen %v, want %s", ag.Name, svc.Listen, ag.Config.MigrationListen)
		}
	}

	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, user)
	if out, err := exec.Command("/usr/sbin/useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-U", user).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	homes := map[string]string{}
	for _, ag := range []*testenv.Agent{src, dst} {
		h := filepath.Join(ag.Config.Prefix, "home", user)
		if err := os.MkdirAll(h, 0o711); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("/usr/bin/chown", user+":"+user, h).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v: %s", err, out)
		}
		// rsync runs as the account on both nodes: it must reach its
		// home as on a real node (/home is 0755).
		for d := filepath.Dir(h); len(d) > len(os.TempDir()); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		homes[ag.Name] = h
	}
	if err := os.WriteFile(filepath.Join(homes["mig-src"], "index.html"), []byte("moved"), 0o644); err != nil {
		t.Fatal(err)
	}

	run := func(node string, task *agentpb.Task) *agentpb.TaskResult {
		t.Helper()
		tk, err := s.Store().EnqueueTask(ctx, node, task, "test", store.NewAuditEvent("test", "", "runNodeAction", node, "ok"))
		if err != nil {
			t.Fatal(err)
		}
		var done *store.Task
		testenv.WaitFor(t, 60*time.Second, "task on "+node, func() bool {
			done, _, err = s.Store().GetTask(ctx, tk.ID)
			return err == nil && (done.Status == store.TaskSucceeded || done.Status == store.TaskFailed)
		})
		if done.Status != store.TaskSucceeded {
			t.Fatalf("task on %s: %s: %s", node, done.Status, done.Error)
		}
		var res agentpb.TaskResult
		if err := proto.Unmarshal(done.Result, &res); err != nil {
			t.Fatal(err)
		}
		return &res
	}
	const id = "m-e2e"
	key := run("mig-src", &agentpb.Task{Action: &agentpb.Task_MigrationKey{MigrationKey: &agentpb.MigrationKeyAction{
		MigrationId: id, Username: user}}}).GetMigrationKey()
	uid, gid := ids(t, user)
	az := run("mig-dst", &agentpb.Task{Action: &agentpb.Task_AuthorizeMigration{AuthorizeMigration: &agentpb.AuthorizeMigrationAction{
		MigrationId: id, Username: user, PublicKey: key.GetPublicKey(), FromAddresses: []string{"127.0.0.1"},
		ExpiresUnix: time.Now().Add(time.Hour).Unix(), SourceUid: uid, SourceGid: gid}}}).GetAuthorizeMigration()
	if az.GetEndpoint() != dst.Config.MigrationListen || az.GetHostKey() == "" {
		t.Fatalf("authorize result %v", az)
	}
	// The target's agent restarts between authorize and sync: it binds
	// the same address again, with the same host key and authorization.
	dst.Stop()
	dst.Start()
	testenv.WaitFor(t, 20*time.Second, "mig-dst reconnected", dst.Connected)
	sr := run("mig-src", &agentpb.Task{Action: &agentpb.Task_SyncMigration{SyncMigration: &agentpb.SyncMigrationAction{
		MigrationId: id, Username: user, TargetEndpoint: az.GetEndpoint(), TargetHostKey: az.GetHostKey(),
		Files: true, Final: true}}}).GetSyncMigration()
	if len(sr.GetFailed()) > 0 || sr.GetFiles() != 1 || sr.GetUid() != uid {
		t.Fatalf("sync result %v", sr)
	}
	if b, err := os.ReadFile(filepath.Join(homes["mig-dst"], "index.html")); err != nil || string(b) != "moved" {
		t.Fatalf("target file %q, %v", b, err)
	}
	for _, n := range []string{"mig-src", "mig-dst"} {
		run(n, &agentpb.Task{Action: &agentpb.Task_RevokeMigration{RevokeMigration: &agentpb.RevokeMigrationAction{MigrationId: id}}})
	}
}

func ids(t *testing.T, name string) (uint32, uint32) {
	t.Helper()
	u, err := osuser.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return uint32(uid), uint32(gid)
}
