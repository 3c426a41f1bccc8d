package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// The backup controller against a real server, with the test playing the
// node: it answers the tasks queued for a fake node with results it
// builds. This proves the control plane's side alone (the agent's
// actions are tested with real restic in the e2e test).

// backupNode answers a fake node's tasks: backup tasks through answer
// (nil: not yet), everything else as succeeded.
type backupNode struct {
	name string
	key  *ecdsa.PrivateKey

	mu     sync.Mutex
	answer func(t *agentpb.Task) *agentpb.TaskResult
	seen   []*agentpb.Task
}

func startBackupNode(t *testing.T, s *testenv.Server, name string) *backupNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.FakeNode(t, name, nil, 100, 100_000)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	st := s.Store()
	if err := st.UpdateNodeState(ctx, name, func(ns *store.NodeState) bool { ns.PublicKey = pub; return true }); err != nil {
		t.Fatal(err)
	}
	n := &backupNode{name: name, key: key}
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			tasks, _, err := st.PendingTasks(ctx, name)
			if err != nil {
				continue
			}
			for _, task := range tasks {
				res := n.respond(task)
				if res == nil {
					continue
				}
				res.TaskId = task.GetId()
				if res.Status == agentpb.TaskStatus_TASK_STATUS_UNSPECIFIED {
					res.Status = agentpb.TaskStatus_TASK_STATUS_SUCCEEDED
				}
				_, _ = st.CompleteTask(ctx, name, res, store.NewAuditEvent("node:"+name, "test", "", "", ""))
			}
		}
	}()
	return n
}

func (n *backupNode) setAnswer(f func(t *agentpb.Task) *agentpb.TaskResult) {
	n.mu.Lock()
	n.answer = f
	n.mu.Unlock()
}

func (n *backupNode) respond(task *agentpb.Task) *agentpb.TaskResult {
	n.mu.Lock()
	if !slices.ContainsFunc(n.seen, func(s *agentpb.Task) bool { return s.GetId() == task.GetId() }) {
		n.seen = append(n.seen, task)
	}
	answer := n.answer
	n.mu.Unlock()
	switch a := task.GetAction().(type) {
	case *agentpb.Task_BackupAccount, *agentpb.Task_RestoreBackup, *agentpb.Task_VerifyBackup, *agentpb.Task_ForgetBackup, *agentpb.Task_EnsureBackupAccess:
		if answer == nil {
			return nil
		}
		return answer(task)
	case *agentpb.Task_EnsureZone:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Zone{Zone: &agentpb.ZoneResult{Zone: a.EnsureZone.GetZone(), Kind: "Master", Serial: 1, Changed: true}}}
	}
	return &agentpb.TaskResult{}
}

// tasksOf returns the backup tasks the node saw, of one action.
func (n *backupNode) tasksOf(match func(*agentpb.Task) bool) []*agentpb.Task {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*agentpb.Task
	for _, t := range n.seen {
		if match(t) {
			out = append(out, t)
		}
	}
	return out
}

type backupEnv struct {
	s    *testenv.Server
	st   *store.Store
	node *backupNode
	acct *client.Account
}

func newBackupEnv(t *testing.T, opts ...testenv.ServerOption) *backupEnv {
	t.Helper()
	opts = append([]testenv.ServerOption{func(c *controlplane.Config) {
		c.Backup.SchedulePass = 200 * time.Millisecond
		c.Backup.Sweep = 500 * time.Millisecond
	}}, opts...)
	s := testenv.StartServer(t, opts...)
	e := &backupEnv{s: s, st: s.Store(), node: startBackupNode(t, s, "web-1")}
	ctx := context.Background()
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 5, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateBackupTarget(ctx, &store.BackupTarget{Name: "local", Kind: store.TargetLocal}, store.NewAuditEvent("test", "", "createBackupTarget", "local", "ok")); err != nil {
		t.Fatal(err)
	}
	a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "bkalice", Domain: "bkalice.example.com", Plan: "web"})
	if err != nil {
		t.Fatal(err)
	}
	e.acct = a
	testenv.WaitFor(t, 10*time.Second, "account placed", func() bool {
		a, _, err := e.st.GetAccount(ctx, a.ID)
		return err == nil && a.Node == "web-1"
	})
	return e
}

func (e *backupEnv) setPolicy(t *testing.T, pol *store.BackupPolicy) {
	t.Helper()
	if _, _, err := e.st.UpdatePlan(context.Background(), "web", func(p *store.Plan, _ []*store.Account) error {
		p.Backup = pol
		return nil
	}, store.NewAuditEvent("test", "", "setPlanBackup", "web", "ok")); err != nil {
		t.Fatal(err)
	}
}

// createBackup writes a backup as createBackup does.
func (e *backupEnv) createBackup(t *testing.T, retention *store.BackupPolicy) string {
	t.Helper()
	b := &store.Backup{ID: store.NewBackupID("bkalice", time.Now()), Account: "bkalice", AccountID: e.acct.ID, Owner: "admin",
		Node: "web-1", Target: "local", Requester: "admin", Retention: retention}
	if err := e.st.CreateBackup(context.Background(), b, store.NewAuditEvent("admin", "test", "createBackup", b.ID, "ok")); err != nil {
		t.Fatal(err)
	}
	return b.ID
}

func (e *backupEnv) waitBackup(t *testing.T, id, what string, cond func(b *store.Backup) bool) *store.Backup {
	t.Helper()
	var got *store.Backup
	testenv.WaitFor(t, 15*time.Second, id+": "+what, func() bool {
		b, err := e.st.GetBackup(context.Background(), id)
		if err != nil {
			return false
		}
		got = b
		return cond(b)
	})
	return got
}

func backupResult(r *agentpb.BackupResult) *agentpb.TaskResult {
	return &agentpb.TaskResult{Result: &agentpb.TaskResult_Backup{Backup: r}}
}

func TestBackupControllerBackupVerifyDelete(t *testing.T) {
	e := newBackupEnv(t)
	ctx := context.Background()
	e.node.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if a := task.GetBackupAccount(); a != nil {
			return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"snap-" + a.GetBackupId()}, SizeBytes: 4096, AddedBytes: 4096, FileCount: 3,
				Contents: &agentpb.BackupContents{Files: true, Zones: []string{"bkalice.example.com"}}})
		}
		return nil
	})
	id := e.createBackup(t, &store.BackupPolicy{Target: "local", KeepDaily: 7, KeepWeekly: 4, KeepMonthly: 3})
	b := e.waitBackup(t, id, "SUCCEEDED", func(b *store.Backup) bool { return b.Status.State == store.BackupSucceeded })
	if b.Status.SizeBytes != 4096 || b.Status.FileCount != 3 || !b.Status.Contents.Files || b.Status.SnapshotIDs[0] != "snap-"+id ||
		b.Status.StartedAt.IsZero() || b.Status.FinishedAt.IsZero() || b.Status.TaskID != "" {
		t.Fatalf("status %+v", b.Status)
	}
	kinds := []string{}
	for _, ev := range b.Status.Events {
		kinds = append(kinds, ev.Kind)
	}
	if strings.Join(kinds, ",") != "queued,started,succeeded" {
		t.Fatalf("events %v", kinds)
	}

	// The task: the account's repository on the LOCAL target, the
	// password sealed to the node (and only there), the state without
	// secrets, the plan's retention.
	tasks := e.node.tasksOf(func(t *agentpb.Task) bool { return t.GetBackupAccount() != nil })
	if len(tasks) != 1 {
		t.Fatalf("%d backup tasks, want 1", len(tasks))
	}
	act := tasks[0].GetBackupAccount()
	repo := act.GetRepository()
	if repo.GetKind() != agentpb.BackupTargetKind_BACKUP_TARGET_KIND_LOCAL || repo.GetUsername() != "bkalice" || repo.GetTarget() != "local" {
		t.Fatalf("repository %v", repo)
	}
	pw, err := pki.Unseal(e.node.key, repo.GetSealedPassword(), agentpb.BackupPasswordSealContext("bkalice"))
	if err != nil {
		t.Fatalf("the node cannot open the password: %v", err)
	}
	if len(pw) < 32 {
		t.Fatalf("password of %d bytes", len(pw))
	}
	if r := act.GetRetention(); r.GetDaily() != 7 || r.GetWeekly() != 4 || r.GetMonthly() != 3 {
		t.Fatalf("retention %v", r)
	}
	var state map[string]any
	if err := json.Unmarshal(act.GetStateJson(), &state); err != nil || state["version"] != float64(1) {
		t.Fatalf("state %s: %v", act.GetStateJson(), err)
	}
	if acct := state["account"].(map[string]any); acct["username"] != "bkalice" || acct["domain"] != "bkalice.example.com" {
		t.Fatalf("state account %v", acct)
	}
	// The password is nowhere in etcd in the clear.
	resp, err := e.s.RawEtcd(t).Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), string(pw)) {
			t.Fatalf("the repository password is in clear at %s", kv.Key)
		}
	}

	// A second backup's retention forgets the first: its record goes.
	// One item failed: PARTIAL, not success.
	e.node.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if a := task.GetBackupAccount(); a != nil {
			return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"s2"}, SizeBytes: 5000, AddedBytes: 10,
				Failed:             []*agentpb.BackupItemFailure{{Item: "database:bkalice_pg", Error: "postgresql is not running"}},
				ForgottenBackupIds: []string{id}})
		}
		if v := task.GetVerifyBackup(); v != nil {
			return &agentpb.TaskResult{Result: &agentpb.TaskResult_Verify{Verify: &agentpb.VerifyResult{Ok: true, FilesChecked: 3, BytesChecked: 4096}}}
		}
		if task.GetForgetBackup() != nil {
			return &agentpb.TaskResult{Result: &agentpb.TaskResult_Forget{Forget: &agentpb.ForgetResult{RemovedSnapshotIds: []string{"s2"}}}}
		}
		return nil
	})
	id2 := e.createBackup(t, nil)
	b2 := e.waitBackup(t, id2, "PARTIAL", func(b *store.Backup) bool { return b.Status.State == store.BackupPartial })
	if len(b2.Status.Failed) != 1 || b2.Status.Failed[0].Item != "database:bkalice_pg" {
		t.Fatalf("failed %v", b2.Status.Failed)
	}
	testenv.WaitFor(t, 10*time.Second, "the forgotten backup's record removed", func() bool {
		_, err := e.st.GetBackup(ctx, id)
		return err != nil
	})

	// verifyBackup.
	if _, err := e.st.UpdateBackup(ctx, id2, func(b *store.Backup) ([]*store.ObjectTask, error) {
		b.VerifyRequested++
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	b2 = e.waitBackup(t, id2, "verified", func(b *store.Backup) bool { return b.Status.VerifiedGeneration == 1 })
	if !b2.Status.VerifyOK || b2.Status.VerifiedAt.IsZero() || b2.Status.State != store.BackupPartial {
		t.Fatalf("after verify: %+v", b2.Status)
	}

	// deleteBackup: forget, then the record goes.
	if _, err := e.st.UpdateBackup(ctx, id2, func(b *store.Backup) ([]*store.ObjectTask, error) {
		b.Deleting = true
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "deleted backup's record removed", func() bool {
		_, err := e.st.GetBackup(ctx, id2)
		return err != nil
	})
	if n := len(e.node.tasksOf(func(t *agentpb.Task) bool { return t.GetForgetBackup().GetBackupId() == id2 })); n != 1 {
		t.Fatalf("%d forget tasks", n)
	}
	// Every step is in the audit log.
	events, _, _, err := e.st.ListAudit(ctx, store.AuditFilter{}, "", 500)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range events {
		if strings.HasPrefix(ev.Action, "backup.") {
			actions = append(actions, ev.Action)
		}
	}
	for _, want := range []string{"backup.started", "backup.succeeded", "backup.partial", "backup.expired", "backup.verified", "backup.deleting", "backup.deleted"} {
		if !slices.Contains(actions, want) {
			t.Errorf("no %s audit event in %v", want, actions)
		}
	}
}

func TestBackupControllerFailsClearly(t *testing.T) {
	e := newBackupEnv(t)
	ctx := context.Background()
	// A target that does not exist.
	b := &store.Backup{ID: store.NewBackupID("bkalice", time.Now()), Account: "bkalice", AccountID: e.acct.ID, Node: "web-1", Target: "nowhere"}
	if err := e.st.CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	got := e.waitBackup(t, b.ID, "FAILED", func(b *store.Backup) bool { return b.Status.State == store.BackupFailed })
	if !strings.Contains(got.Status.Error, `backup target "nowhere" does not exist`) {
		t.Fatalf("error %q", got.Status.Error)
	}
	// A NODE target whose backup node has not reported its access.
	if err := e.st.CreateBackupTarget(ctx, &store.BackupTarget{Name: "bn", Kind: store.TargetNode, Node: "web-1"}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	b = &store.Backup{ID: store.NewBackupID("bkalice", time.Now()), Account: "bkalice", AccountID: e.acct.ID, Node: "web-1", Target: "bn"}
	if err := e.st.CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	got = e.waitBackup(t, b.ID, "FAILED", func(b *store.Backup) bool { return b.Status.State == store.BackupFailed })
	if !strings.Contains(got.Status.Error, "has not reported its SFTP access") {
		t.Fatalf("error %q", got.Status.Error)
	}
}

// A backup whose node is removed while it runs fails with the reason.
func TestBackupControllerLostTask(t *testing.T) {
	e := newBackupEnv(t)
	ctx := context.Background()
	id := e.createBackup(t, nil) // the node never answers
	e.waitBackup(t, id, "RUNNING", func(b *store.Backup) bool { return b.Status.State == store.BackupRunning && b.Status.TaskID != "" })
	if err := e.st.RemoveNode(ctx, "web-1", store.NewAuditEvent("test", "", "removeNode", "web-1", "ok")); err != nil {
		t.Fatal(err)
	}
	b := e.waitBackup(t, id, "FAILED", func(b *store.Backup) bool { return b.Status.State == store.BackupFailed })
	if !strings.Contains(b.Status.Error, "lost") {
		t.Fatalf("error %q", b.Status.Error)
	}
}

func TestBackupScheduleCreatesTheDailyBackup(t *testing.T) {
	e := newBackupEnv(t)
	ctx := context.Background()
	e.node.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if task.GetBackupAccount() != nil {
			return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"s"}, SizeBytes: 1})
		}
		return nil
	})
	// The slot of the day is always at or before now: an account never
	// backed up is due at once.
	e.setPolicy(t, &store.BackupPolicy{Target: "local", Hour: -1, KeepDaily: 3})
	var got []store.Backup
	testenv.WaitFor(t, 15*time.Second, "a scheduled backup succeeded", func() bool {
		bs, _, err := e.st.ListBackups(ctx, "bkalice", "", 10)
		got = bs
		return err == nil && len(bs) > 0 && bs[0].Status.State == store.BackupSucceeded
	})
	if !got[0].Scheduled || got[0].Retention == nil || got[0].Retention.KeepDaily != 3 || got[0].Target != "local" {
		t.Fatalf("scheduled backup %+v", got[0])
	}
	// Done for the day: the next passes make no other.
	time.Sleep(time.Second)
	if bs, _, _ := e.st.ListBackups(ctx, "bkalice", "", 10); len(bs) != 1 {
		t.Fatalf("%d backups after the day's one succeeded", len(bs))
	}
}

func TestBackupControllerRestoreZone(t *testing.T) {
	e := newBackupEnv(t)
	ctx := context.Background()
	e.node.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if a := task.GetBackupAccount(); a != nil {
			return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"s"}, SizeBytes: 1,
				Contents: &agentpb.BackupContents{Zones: []string{"bkalice.example.com"}}})
		}
		return nil
	})
	// A record the backup keeps.
	zones := e.st
	if _, err := zones.UpdateZone(ctx, "bkalice.example.com", func(z *store.Zone) error {
		z.Records = append(z.Records, store.ZoneRecord{ID: z.NewRecordID(), Name: "keep.bkalice.example.com.", Type: "TXT", Content: "\"kept\"", TTL: 300})
		z.Generation++
		return nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	id := e.createBackup(t, nil)
	e.waitBackup(t, id, "SUCCEEDED", func(b *store.Backup) bool { return b.Status.State == store.BackupSucceeded })
	backupTask := e.node.tasksOf(func(t *agentpb.Task) bool { return t.GetBackupAccount() != nil })[0].GetBackupAccount()
	stateJSON, zoneFiles := backupTask.GetStateJson(), backupTask.GetZoneFiles()
	// The record travels once: in the zone's file, with its id, not in
	// the state.
	if len(zoneFiles) != 1 || !strings.Contains(zoneFiles[0].GetText(), "keep.bkalice.example.com. 300 IN TXT \"kept\" ; id=r") ||
		strings.Contains(string(stateJSON), "keep.bkalice.example.com.") || !strings.Contains(string(stateJSON), `"recordsInFile":true`) {
		t.Fatalf("the zone's record: files %v, state %s", zoneFiles, stateJSON)
	}
	// The record is deleted, then the zone restored from the backup:
	// the node answers with the state the backup holds.
	if _, err := zones.UpdateZone(ctx, "bkalice.example.com", func(z *store.Zone) error {
		z.Records = slices.DeleteFunc(z.Records, func(r store.ZoneRecord) bool { return r.Name == "keep.bkalice.example.com." })
		z.Generation++
		return nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	// A node that could not read the zone's file: the zone fails, and
	// keeps its records rather than being emptied.
	before, _, err := e.st.GetZone(ctx, "bkalice.example.com")
	if err != nil {
		t.Fatal(err)
	}
	e.node.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if r := task.GetRestoreBackup(); r != nil && r.GetWhat() == agentpb.RestoreWhat_RESTORE_WHAT_ZONE {
			return &agentpb.TaskResult{Result: &agentpb.TaskResult_Restore{Restore: &agentpb.RestoreResult{StateJson: stateJSON,
				Failed: []*agentpb.BackupItemFailure{{Item: "zone:bkalice.example.com", Error: "restic: pack unreadable"}}}}}
		}
		return nil
	})
	unread := &store.Restore{ID: store.NewRestoreID("bkalice", time.Now()), Backup: id, Account: "bkalice", AccountID: e.acct.ID,
		Owner: "admin", What: store.RestoreZone, InPlace: true, Node: "web-1", Requester: "admin"}
	if err := e.st.CreateRestore(ctx, unread, store.NewAuditEvent("admin", "test", "restoreBackup", unread.ID, "ok")); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "the restore of an unreadable zone file finished", func() bool {
		rr, _, err := e.st.GetRestoreRev(ctx, unread.ID)
		return err == nil && rr.Status.State == store.BackupPartial && len(rr.Status.Failed) == 1 && rr.Status.Failed[0].Item == "zone:bkalice.example.com"
	})
	if z, _, err := e.st.GetZone(ctx, "bkalice.example.com"); err != nil || !reflect.DeepEqual(z.Records, before.Records) {
		t.Fatalf("the zone after a restore without its file: %+v, %v (was %+v)", z.Records, err, before.Records)
	}
	e.node.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if r := task.GetRestoreBackup(); r != nil && r.GetWhat() == agentpb.RestoreWhat_RESTORE_WHAT_ZONE {
			return &agentpb.TaskResult{Result: &agentpb.TaskResult_Restore{Restore: &agentpb.RestoreResult{StateJson: stateJSON, ZoneFiles: zoneFiles}}}
		}
		return nil
	})
	r := &store.Restore{ID: store.NewRestoreID("bkalice", time.Now()), Backup: id, Account: "bkalice", AccountID: e.acct.ID,
		Owner: "admin", What: store.RestoreZone, InPlace: true, Node: "web-1", Requester: "admin"}
	if err := e.st.CreateRestore(ctx, r, store.NewAuditEvent("admin", "test", "restoreBackup", r.ID, "ok")); err != nil {
		t.Fatal(err)
	}
	var got *store.Restore
	testenv.WaitFor(t, 15*time.Second, "restore finished", func() bool {
		rr, _, err := e.st.GetRestoreRev(ctx, r.ID)
		got = rr
		return err == nil && (rr.Status.State == store.BackupSucceeded || rr.Status.State == store.BackupFailed || rr.Status.State == store.BackupPartial)
	})
	if got.Status.State != store.BackupSucceeded || !slices.Contains(got.Status.Restored, "zone:bkalice.example.com") {
		t.Fatalf("restore %+v", got.Status)
	}
	z, _, err := e.st.GetZone(ctx, "bkalice.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(z.Records, func(r store.ZoneRecord) bool { return r.Name == "keep.bkalice.example.com." && r.Content == "\"kept\"" }) {
		t.Fatalf("the record is not back: %+v", z.Records)
	}
	// The completion is audited just after the record is written.
	testenv.WaitFor(t, 5*time.Second, "backup.restore audit event", func() bool {
		events, _, _, err := e.st.ListAudit(ctx, store.AuditFilter{}, "", 1000)
		return err == nil && slices.ContainsFunc(events, func(ev store.AuditEvent) bool {
			return ev.Action == "backup.restore" && ev.Target == r.ID && strings.HasPrefix(ev.Result, "ok")
		})
	})
}

// Disaster recovery: the account's node is removed, and the whole account
// is restored onto another node: the account is placed there through the
// normal lifecycle, its zone follows it, then the node restores the data.
func TestBackupControllerRestoreAllOntoAnotherNode(t *testing.T) {
	s := testenv.StartServer(t, func(c *controlplane.Config) { c.Backup.Sweep = 500 * time.Millisecond })
	st := s.Store()
	ctx := context.Background()
	n1, n2 := startBackupNode(t, s, "web-1"), startBackupNode(t, s, "web-2")
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 5, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateBackupTarget(ctx, &store.BackupTarget{Name: "s3", Kind: store.TargetS3, Endpoint: "http://127.0.0.1:9", Bucket: "b"}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "bkdr", Domain: "bkdr.example.com", Plan: "web", Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "account active on web-1", func() bool {
		a, _, err := st.GetAccount(ctx, acct.ID)
		return err == nil && a.Node == "web-1" && a.Status == store.AccountActive
	})
	if _, err := st.UpdateZone(ctx, "bkdr.example.com", func(z *store.Zone) error {
		z.Records = append(z.Records, store.ZoneRecord{ID: z.NewRecordID(), Name: "keep.bkdr.example.com.", Type: "TXT", Content: "\"dr\"", TTL: 300})
		z.Generation++
		return nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	// A database and its user (generation 0: no controller acts on them
	// on web-1, which never answers for databases here).
	if err := st.ChangeDatabases(ctx, acct.ID, "test", func(set *store.DatabaseSet) (*store.DatabaseChange, error) {
		return &store.DatabaseChange{
			Databases: []*store.Database{{Account: acct.ID, Name: "bkdr_shop", Owner: "bkdr", Engine: "mariadb", Node: "web-1"}},
			Users: []*store.DatabaseUser{{Account: acct.ID, Name: "bkdr_app", Owner: "bkdr", Engine: "mariadb", Node: "web-1",
				Grants: []store.DatabaseGrant{{Database: "bkdr_shop", Privileges: []string{"SELECT"}}}}},
		}, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	var stateJSON []byte
	n1.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if a := task.GetBackupAccount(); a != nil {
			return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"s"}, SizeBytes: 1})
		}
		return nil
	})
	b := &store.Backup{ID: store.NewBackupID("bkdr", time.Now()), Account: "bkdr", AccountID: acct.ID, Owner: "admin", Node: "web-1", Target: "s3"}
	if err := st.CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "backup succeeded", func() bool {
		got, err := st.GetBackup(ctx, b.ID)
		return err == nil && got.Status.State == store.BackupSucceeded
	})
	backupTask := n1.tasksOf(func(t *agentpb.Task) bool { return t.GetBackupAccount() != nil })[0].GetBackupAccount()
	stateJSON = backupTask.GetStateJson()

	// web-1 is gone.
	if err := st.RemoveNode(ctx, "web-1", store.NewAuditEvent("test", "", "removeNode", "web-1", "ok")); err != nil {
		t.Fatal(err)
	}
	n2.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if r := task.GetRestoreBackup(); r != nil {
			res := &agentpb.RestoreResult{StateJson: stateJSON, ZoneFiles: backupTask.GetZoneFiles()}
			if r.GetWhat() == agentpb.RestoreWhat_RESTORE_WHAT_ALL {
				if !r.GetInPlace() {
					return &agentpb.TaskResult{Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "ALL must be in place"}
				}
				res.Restored = []string{"files", "state"}
			}
			return &agentpb.TaskResult{Result: &agentpb.TaskResult_Restore{Restore: res}}
		}
		return nil
	})
	r := &store.Restore{ID: store.NewRestoreID("bkdr", time.Now()), Backup: b.ID, Account: "bkdr", AccountID: acct.ID, Owner: "admin",
		What: store.RestoreAll, InPlace: true, Node: "web-2", Requester: "admin"}
	if err := st.CreateRestore(ctx, r, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	var got *store.Restore
	deadline := time.Now().Add(30 * time.Second)
	for {
		rr, _, err := st.GetRestoreRev(ctx, r.ID)
		if err == nil && restoreDone(rr.Status.State) {
			got = rr
			break
		}
		if time.Now().After(deadline) {
			a, _, _ := st.GetAccount(ctx, acct.ID)
			dbs, _ := st.GetDatabases(ctx, acct.ID)
			var objs []string
			if dbs != nil {
				for _, d := range dbs.Databases {
					s, why := d.State()
					objs = append(objs, d.Name+"="+string(s)+":"+why)
				}
				for _, u := range dbs.Users {
					s, why := u.State()
					objs = append(objs, u.Name+"="+string(s)+":"+why)
				}
			}
			t.Fatalf("restore not finished: %+v\naccount %s %s gen %d/%d\ndatabases %v", rr.Status, a.Node, a.Status, a.AppliedGeneration, a.Generation, objs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got.Status.State != store.BackupSucceeded || got.Status.Step != "restore" {
		t.Fatalf("restore: %+v", got.Status)
	}
	a, _, err := st.GetAccount(ctx, acct.ID)
	if err != nil || a.Node != "web-2" || a.PinnedNode != "web-2" {
		t.Fatalf("account after the restore: %+v %v", a, err)
	}
	z, _, err := st.GetZone(ctx, "bkdr.example.com")
	if err != nil || z.Node != "web-2" {
		t.Fatalf("zone: %+v %v", z, err)
	}
	if !slices.ContainsFunc(z.Records, func(r store.ZoneRecord) bool { return r.Name == "keep.bkdr.example.com." }) {
		t.Fatalf("the zone's records did not come back: %+v", z.Records)
	}
	// The database and user are back on web-2, the user with a password
	// only web-2 can open (the node's restore puts the original hash back).
	dbs, err := st.GetDatabases(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	d, u := dbs.Databases["bkdr_shop"], dbs.Users["bkdr_app"]
	if d == nil || d.Node != "web-2" || u == nil || u.Node != "web-2" || u.Grants[0].Database != "bkdr_shop" {
		t.Fatalf("databases after the restore: %+v %+v", d, u)
	}
	if _, err := pki.Unseal(n2.key, u.SealedPassword, agentpb.DatabasePasswordSealContext("bkdr_app")); err != nil {
		t.Fatalf("web-2 cannot open the user's new password: %v", err)
	}
	// The node saw the state read first, then the whole restore in place.
	var whats []string
	for _, task := range n2.tasksOf(func(t *agentpb.Task) bool { return t.GetRestoreBackup() != nil }) {
		whats = append(whats, task.GetRestoreBackup().GetWhat().String())
	}
	if strings.Join(whats, ",") != "RESTORE_WHAT_ZONE,RESTORE_WHAT_ALL" {
		t.Fatalf("restore tasks on web-2: %v", whats)
	}
}

func restoreDone(s store.BackupState) bool {
	return s == store.BackupSucceeded || s == store.BackupFailed || s == store.BackupPartial
}

// A deleted account's backups stay (with the repository password) until
// the retention they were made with has passed; then their snapshots are
// forgotten, their records removed, and with the last the password.
func TestBackupDeletedAccountExpires(t *testing.T) {
	e := newBackupEnv(t)
	ctx := context.Background()
	e.node.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		switch {
		case task.GetBackupAccount() != nil:
			return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"s"}, SizeBytes: 1})
		case task.GetForgetBackup() != nil:
			return &agentpb.TaskResult{Result: &agentpb.TaskResult_Forget{Forget: &agentpb.ForgetResult{}}}
		}
		return nil
	})
	keep := e.createBackup(t, &store.BackupPolicy{Target: "local", KeepDaily: 7})
	e.waitBackup(t, keep, "SUCCEEDED", func(b *store.Backup) bool { return b.Status.State == store.BackupSucceeded })
	if _, err := e.s.Admin.AccountAction(ctx, "deleteAccount", e.acct.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "account deleted", func() bool {
		_, _, err := e.st.GetAccount(ctx, e.acct.ID)
		return err != nil
	})
	// Within its retention: kept, with its password.
	time.Sleep(1500 * time.Millisecond) // three sweeps
	if _, err := e.st.GetBackup(ctx, keep); err != nil {
		t.Fatalf("a backup within its retention went with the account: %v", err)
	}
	keyKey := "/npanel/backup-keys/bkalice"
	if resp, err := e.s.RawEtcd(t).Get(ctx, keyKey); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("the repository password went with the account: %v", err)
	}
	// Past it (made with a retention of 0 days): forgotten, then gone,
	// and the password with the last one.
	if _, err := e.st.UpdateBackup(ctx, keep, func(b *store.Backup) ([]*store.ObjectTask, error) {
		b.Retention.KeepDaily = 0
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "expired backup removed", func() bool {
		_, err := e.st.GetBackup(ctx, keep)
		return err != nil
	})
	if len(e.node.tasksOf(func(t *agentpb.Task) bool { return t.GetForgetBackup().GetBackupId() == keep })) != 1 {
		t.Fatal("the snapshots were not forgotten first")
	}
	testenv.WaitFor(t, 5*time.Second, "password removed", func() bool {
		resp, err := e.s.RawEtcd(t).Get(ctx, keyKey)
		return err == nil && len(resp.Kvs) == 0
	})
}

// Progress reports from the node running a backup reach its record, at
// most one a second; a report naming another node's task is dropped.
func TestBackupProgressFromTheAgent(t *testing.T) {
	s := testenv.StartServer(t)
	st := s.Store()
	ctx := testenv.Context(t)
	stream := func(name string) agentpb.AgentGateway_ConnectClient {
		tok, err := s.Admin.CreateJoinToken(ctx, name, "127.0.0.1", []string{"WEB", "DNS", "MAIL"}, nil)
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
		// The stream's hello reports no disk: give the scheduler some.
		if _, err := st.UpdateNode(ctx, name, func(n *store.Node) error { n.DiskMB = 100_000; return nil }, store.AuditEvent{}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	runner, other := stream("prog-1"), stream("prog-2")
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 5, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateBackupTarget(ctx, &store.BackupTarget{Name: "local", Kind: store.TargetLocal}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "bkprog", Domain: "bkprog.example.com", Plan: "web", Node: "prog-1"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "account placed", func() bool {
		a, _, err := st.GetAccount(ctx, acct.ID)
		return err == nil && a.Node == "prog-1"
	})
	b := &store.Backup{ID: store.NewBackupID("bkprog", time.Now()), Account: "bkprog", AccountID: acct.ID, Node: "prog-1", Target: "local"}
	if err := st.CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	var taskID string
	for taskID == "" {
		m, err := runner.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if a := m.GetTask().GetBackupAccount(); a != nil && a.GetBackupId() == b.ID {
			taskID = m.GetTask().GetId()
		}
	}
	send := func(c agentpb.AgentGateway_ConnectClient, files uint64) {
		t.Helper()
		if err := c.Send(&agentpb.AgentMessage{Msg: &agentpb.AgentMessage_BackupProgress{BackupProgress: &agentpb.BackupProgress{
			TaskId: taskID, FilesDone: files, BytesDone: files * 100, TotalFiles: 100, TotalBytes: 10_000}}}); err != nil {
			t.Fatal(err)
		}
	}
	progress := func() uint64 {
		got, err := st.GetBackup(ctx, b.ID)
		if err != nil || got.Status.Progress == nil {
			return 0
		}
		return got.Status.Progress.FilesDone
	}
	send(runner, 5)
	testenv.WaitFor(t, 10*time.Second, "progress 5", func() bool { return progress() == 5 })
	send(runner, 6) // within the second: dropped
	send(other, 99) // not its task: dropped
	time.Sleep(300 * time.Millisecond)
	if p := progress(); p != 5 {
		t.Fatalf("progress %d, want 5 (one write a second, only from the running node)", p)
	}
	time.Sleep(time.Second)
	send(other, 98)
	send(runner, 7)
	testenv.WaitFor(t, 10*time.Second, "progress 7", func() bool { return progress() == 7 })
	got, _ := st.GetBackup(ctx, b.ID)
	if pr := got.Status.Progress; pr.TotalFiles != 100 || pr.BytesDone != 700 || pr.At.IsZero() {
		t.Fatalf("progress %+v", pr)
	}
}

// An S3 target's secret key reaches the node only sealed to it, and is in
// etcd only sealed under the KEK.
func TestBackupS3SecretSealedToTheNode(t *testing.T) {
	e := newBackupEnv(t)
	ctx := context.Background()
	kekFile := e.s.Config.KEKFile
	if kekFile == "" {
		kekFile = filepath.Join(e.s.Config.DataDir, "kek")
	}
	kek, err := pki.LoadKEK(kekFile)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "s3-secret-0123456789-abcdefghij"
	sealed, err := store.SealBackupTargetSecret(kek, "s3", []byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.CreateBackupTarget(ctx, &store.BackupTarget{Name: "s3", Kind: store.TargetS3, Endpoint: "http://127.0.0.1:9000",
		Bucket: "backups", Prefix: "np", Region: "us-east-1", AccessKeyID: "AKIDTEST", SecretKey: sealed}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	e.node.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if task.GetBackupAccount() != nil {
			return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"s"}, SizeBytes: 1})
		}
		return nil
	})
	b := &store.Backup{ID: store.NewBackupID("bkalice", time.Now()), Account: "bkalice", AccountID: e.acct.ID, Node: "web-1", Target: "s3"}
	if err := e.st.CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	e.waitBackup(t, b.ID, "SUCCEEDED", func(b *store.Backup) bool { return b.Status.State == store.BackupSucceeded })
	repo := e.node.tasksOf(func(t *agentpb.Task) bool { return t.GetBackupAccount() != nil })[0].GetBackupAccount().GetRepository()
	if repo.GetKind() != agentpb.BackupTargetKind_BACKUP_TARGET_KIND_S3 || repo.GetS3Endpoint() != "http://127.0.0.1:9000" || repo.GetS3Bucket() != "backups" ||
		repo.GetS3Prefix() != "np" || repo.GetS3Region() != "us-east-1" || repo.GetS3AccessKeyId() != "AKIDTEST" {
		t.Fatalf("repository %v", repo)
	}
	got, err := pki.Unseal(e.node.key, repo.GetSealedS3SecretKey(), agentpb.BackupS3SecretSealContext("s3"))
	if err != nil || string(got) != secret {
		t.Fatalf("the node opens %q, %v", got, err)
	}
	if strings.Contains(repo.String(), secret) {
		t.Fatal("the secret travels in clear")
	}
	resp, err := e.s.RawEtcd(t).Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), secret) {
			t.Fatalf("the S3 secret is in clear at %s", kv.Key)
		}
	}
}

// TestBackupMetrics: a successful backup sets the account's
// npanel_backup_last_success_timestamp_seconds to its finish time and
// counts in npanel_backups_total{result="succeeded"}; a failed one counts
// in npanel_backups_total{result="failed"} and leaves the last success
// where it was.
func TestBackupMetrics(t *testing.T) {
	e := newBackupEnv(t)
	fail := false
	var mu sync.Mutex
	e.node.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		a := task.GetBackupAccount()
		if a == nil {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return &agentpb.TaskResult{Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "restic: repository unreachable"}
		}
		return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"snap-" + a.GetBackupId()}, SizeBytes: 1, FileCount: 1,
			Contents: &agentpb.BackupContents{Files: true}})
	})
	// metric returns the value of the sample named exactly series, or -1.
	metric := func(series string) float64 {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.s.URL()+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+e.s.Admin.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(readAll(t, resp), "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return f
			}
		}
		return -1
	}
	const (
		lastSuccess = `npanel_backup_last_success_timestamp_seconds{account="bkalice"}`
		succeeded   = `npanel_backups_total{result="succeeded"}`
		failed      = `npanel_backups_total{result="failed"}`
	)
	if v := metric(lastSuccess); v != -1 {
		t.Fatalf("last success before any backup: %v", v)
	}

	id := e.createBackup(t, nil)
	b := e.waitBackup(t, id, "SUCCEEDED", func(b *store.Backup) bool { return b.Status.State == store.BackupSucceeded })
	want := float64(b.Status.FinishedAt.Unix())
	testenv.WaitFor(t, 10*time.Second, "last success = the backup's finish", func() bool {
		return metric(lastSuccess) == want && metric(succeeded) == 1
	})

	mu.Lock()
	fail = true
	mu.Unlock()
	id = e.createBackup(t, nil)
	e.waitBackup(t, id, "FAILED", func(b *store.Backup) bool { return b.Status.State == store.BackupFailed })
	testenv.WaitFor(t, 10*time.Second, "the failure counted", func() bool { return metric(failed) == 1 })
	if v := metric(lastSuccess); v != want {
		t.Fatalf("last success after a failed backup: %v, want %v", v, want)
	}
	if v := metric(succeeded); v != 1 {
		t.Fatalf("succeeded after a failed backup: %v", v)
	}
}
