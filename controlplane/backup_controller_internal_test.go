package controlplane

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// doneTask is a finished task as the store records it, with r as its
// typed result (nil: failed with errMsg).
func doneTask(t *testing.T, action string, r *agentpb.TaskResult, errMsg string) *store.Task {
	t.Helper()
	task := &store.Task{ID: "T1", Node: "web-1", Action: action, Status: store.TaskSucceeded}
	if errMsg != "" {
		task.Status, task.Error = store.TaskFailed, errMsg
		return task
	}
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	task.Result = b
	return task
}

func TestApplyBackupResult(t *testing.T) {
	now := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)
	full := &agentpb.BackupResult{
		SnapshotIds: []string{"s1", "s2"}, SizeBytes: 1000, AddedBytes: 10, FileCount: 7,
		Contents:           &agentpb.BackupContents{Files: true, Databases: []string{"alice_db"}, Zones: []string{"alice.test"}},
		ForgottenBackupIds: []string{"alice-old", "alice-this"},
	}
	partial := proto.Clone(full).(*agentpb.BackupResult)
	partial.Failed = []*agentpb.BackupItemFailure{{Item: "database:alice_pg", Error: "postgresql is not running"}}
	for _, tc := range []struct {
		name      string
		task      *store.Task
		state     store.BackupState
		forgotten []string
		errSub    string
	}{
		{"succeeded", doneTask(t, actionBackupAccount, &agentpb.TaskResult{Result: &agentpb.TaskResult_Backup{Backup: full}}, ""), store.BackupSucceeded, []string{"alice-old"}, ""},
		{"partial is never success", doneTask(t, actionBackupAccount, &agentpb.TaskResult{Result: &agentpb.TaskResult_Backup{Backup: partial}}, ""), store.BackupPartial, []string{"alice-old"}, ""},
		{"failed", doneTask(t, actionBackupAccount, nil, "restic: repository locked"), store.BackupFailed, nil, "node web-1: restic: repository locked"},
		{"lost", lostTask("T1"), store.BackupFailed, nil, "task record lost"},
		{"wrong result kind", doneTask(t, actionBackupAccount, &agentpb.TaskResult{Result: &agentpb.TaskResult_Verify{Verify: &agentpb.VerifyResult{Ok: true}}}, ""), store.BackupFailed, nil, "want BackupResult"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The zones are recorded when the backup starts (they travel in
			// the state snapshot).
			b := &store.Backup{ID: "alice-this", Account: "alice", Status: store.BackupStatus{State: store.BackupRunning, StartedAt: now.Add(-time.Minute),
				Progress: &store.BackupProgress{FilesDone: 3}, Contents: store.BackupContents{Zones: []string{"alice.test"}}}}
			got := retentionForgot(b, tc.task)
			applyBackupResult(b, tc.task, now)
			st := b.Status
			if st.State != tc.state {
				t.Fatalf("state %s, want %s", st.State, tc.state)
			}
			if !reflect.DeepEqual(got, tc.forgotten) {
				t.Fatalf("forgotten %v, want %v (never the backup itself)", got, tc.forgotten)
			}
			if !st.FinishedAt.Equal(now) || st.Progress != nil {
				t.Fatalf("finished %v progress %v", st.FinishedAt, st.Progress)
			}
			if tc.errSub != "" {
				if !strings.Contains(st.Error, tc.errSub) || lastEventKind(st.Events) != "failed" {
					t.Fatalf("error %q events %v, want %q", st.Error, st.Events, tc.errSub)
				}
				return
			}
			if st.SizeBytes != 1000 || st.AddedBytes != 10 || st.FileCount != 7 || len(st.SnapshotIDs) != 2 ||
				!st.Contents.Files || st.Contents.Databases[0] != "alice_db" || st.Contents.Zones[0] != "alice.test" {
				t.Fatalf("status %+v", st)
			}
			if tc.state == store.BackupPartial {
				if len(st.Failed) != 1 || st.Failed[0].Item != "database:alice_pg" || lastEventKind(st.Events) != "partial" {
					t.Fatalf("failed %v events %v", st.Failed, st.Events)
				}
			}
		})
	}
}

func TestApplyVerifyAndForgetResult(t *testing.T) {
	now := time.Now().UTC()
	b := &store.Backup{ID: "alice-1", VerifyRequested: 2, Status: store.BackupStatus{State: store.BackupSucceeded}}
	applyVerifyResult(b, doneTask(t, actionVerifyBackup, &agentpb.TaskResult{Result: &agentpb.TaskResult_Verify{Verify: &agentpb.VerifyResult{
		Ok: false, Problems: []string{"pack 3f: hash mismatch"}}}}, ""), 2, now)
	if b.Status.VerifiedGeneration != 2 || b.Status.VerifyOK || b.Status.VerifyProblems[0] != "pack 3f: hash mismatch" || !b.Status.VerifiedAt.Equal(now) {
		t.Fatalf("verify status %+v", b.Status)
	}
	if verifyDue(b) {
		t.Fatal("answered verify request still due")
	}
	if b.Status.State != store.BackupSucceeded {
		t.Fatal("a verification changed the backup's state")
	}
	b.VerifyRequested = 3
	if !verifyDue(b) {
		t.Fatal("new verify request not due")
	}
	if applyForgetResult(b, doneTask(t, actionForgetBackup, nil, "sftp: connection refused"), now) {
		t.Fatal("failed forget deletes the record")
	}
	if backupNeedsWork(&store.Backup{Deleting: true, Status: b.Status}) {
		t.Fatal("a failed forget is retried at once (the sweep retries it)")
	}
	if !applyForgetResult(b, doneTask(t, actionForgetBackup, &agentpb.TaskResult{Result: &agentpb.TaskResult_Forget{Forget: &agentpb.ForgetResult{}}}, ""), now) {
		t.Fatal("succeeded forget keeps the record")
	}
}

func TestBackupNeedsWork(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    store.Backup
		want bool
	}{
		{"pending", store.Backup{Status: store.BackupStatus{State: store.BackupPending}}, true},
		{"pending with a task", store.Backup{Status: store.BackupStatus{State: store.BackupPending, TaskID: "t"}}, false},
		{"running", store.Backup{Status: store.BackupStatus{State: store.BackupRunning, TaskID: "t"}}, false},
		{"succeeded", store.Backup{Status: store.BackupStatus{State: store.BackupSucceeded}}, false},
		{"deleting", store.Backup{Deleting: true, Status: store.BackupStatus{State: store.BackupSucceeded}}, true},
		{"verify asked", store.Backup{VerifyRequested: 1, Status: store.BackupStatus{State: store.BackupPartial}}, true},
		{"verify of a failed backup", store.Backup{VerifyRequested: 1, Status: store.BackupStatus{State: store.BackupFailed}}, false},
	} {
		if got := backupNeedsWork(&tc.b); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestBackupStateRoundTrip(t *testing.T) {
	st := &BackupState{Version: backupStateVersion,
		Account: BackupStateAccount{ID: "A1", Username: "alice", Domain: "alice.test", Plan: "basic", Owner: "admin", PHPVersion: "8.2",
			Roles: []string{"web"}, Sites: []store.Site{{Domain: "alice.test", Docroot: "public_html", HTTPSRedirect: true, Generation: 3}}},
		Zones: []BackupStateZone{{Name: "alice.test", Address: "10.0.0.1", Records: []store.ZoneRecord{
			{ID: "r1", Name: "alice.test.", Type: "A", Content: "10.0.0.1", TTL: 300},
			{ID: "r7", Name: "alice.test.", Type: "MX", Content: "mail.alice.test.", TTL: 300, Priority: 10}}}},
		Databases:    []BackupStateDatabase{{Name: "alice_db", Engine: "mariadb"}},
		DBUsers:      []BackupStateDBUser{{Name: "alice_u", Engine: "mariadb", Hosts: []string{"127.0.0.1"}, Grants: []store.DatabaseGrant{{Database: "alice_db", Privileges: []string{"ALL"}}}}},
		MailDomains:  []BackupStateMailDom{{Domain: "alice.test", Aliases: map[string][]string{"info": {"alice@alice.test"}}, CatchAll: "alice@alice.test"}},
		Mailboxes:    []BackupStateMailbox{{Address: "alice@alice.test", QuotaMB: 100, Autoresponder: &store.MailAutoresponder{Subject: "away", Body: "back soon"}}},
		Certificates: []BackupStateCertChain{{ID: "alice.test", Domains: []string{"alice.test"}, ChainPEM: "-----BEGIN CERTIFICATE-----"}},
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"sealed", "password", "privateKey", "key\""} {
		if strings.Contains(strings.ToLower(string(b)), strings.ToLower(secret)) {
			t.Fatalf("state JSON has a field like %q: %s", secret, b)
		}
	}
	got, err := decodeBackupState(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, st)
	}
	if _, err := decodeBackupState([]byte(`{"version":99}`)); err == nil {
		t.Fatal("an unknown version decodes")
	}
	if _, err := decodeBackupState([]byte(`{}`)); err == nil {
		t.Fatal("a state without version decodes")
	}
}

func TestRestoredRecordsFollowTheAccount(t *testing.T) {
	zs := BackupStateZone{Name: "alice.test", Address: "10.0.0.1", Records: []store.ZoneRecord{
		{ID: "r1", Name: "alice.test.", Type: "A", Content: "10.0.0.1"},
		{ID: "r2", Name: "ext.alice.test.", Type: "A", Content: "192.0.2.9"},
		{ID: "r3", Name: "alice.test.", Type: "TXT", Content: "\"10.0.0.1\""},
	}}
	got := restoredRecords(zs, "10.0.0.2")
	if got[0].Content != "10.0.0.2" || got[1].Content != "192.0.2.9" || got[2].Content != "\"10.0.0.1\"" {
		t.Fatalf("records %+v", got)
	}
	if zs.Records[0].Content != "10.0.0.1" {
		t.Fatal("the state was changed")
	}
	if same := restoredRecords(zs, "10.0.0.1"); same[0].Content != "10.0.0.1" {
		t.Fatal("same node rewrote a record")
	}
}

func TestRecordRestorePartial(t *testing.T) {
	now := time.Now().UTC()
	bc := &backupController{}
	for _, tc := range []struct {
		name  string
		res   *agentpb.RestoreResult
		zones []store.BackupItemFailure
		want  store.BackupState
	}{
		{"all restored", &agentpb.RestoreResult{Restored: []string{"files", "database:alice_db"}}, nil, store.BackupSucceeded},
		{"a service missing on the node", &agentpb.RestoreResult{Restored: []string{"files"},
			Failed: []*agentpb.BackupItemFailure{{Item: "database:alice_pg", Error: "postgresql is not installed on this node"}}}, nil, store.BackupPartial},
		{"a zone not written back", &agentpb.RestoreResult{Restored: []string{"files"}},
			[]store.BackupItemFailure{{Item: "zone:alice.test", Error: "zone alice.test belongs to another account now"}}, store.BackupPartial},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &store.Restore{ID: "alice-r1", What: store.RestoreAll, Status: store.RestoreStatus{State: store.BackupRunning, Step: restoreStepRestore}}
			task := doneTask(t, actionRestoreBackup, &agentpb.TaskResult{Result: &agentpb.TaskResult_Restore{Restore: tc.res}}, "")
			bc.recordRestore(r, &restorePlan{task: task, zoneFailed: tc.zones, zonesDone: []string{"zone:other.test"}}, now)
			if r.Status.State != tc.want {
				t.Fatalf("state %s, want %s (failed %v)", r.Status.State, tc.want, r.Status.Failed)
			}
			if len(r.Status.Failed) != len(tc.res.GetFailed())+len(tc.zones) {
				t.Fatalf("failed %v", r.Status.Failed)
			}
			if !strings.Contains(strings.Join(r.Status.Restored, ","), "zone:other.test") {
				t.Fatalf("restored %v", r.Status.Restored)
			}
		})
	}
	r := &store.Restore{ID: "alice-r2", Status: store.RestoreStatus{State: store.BackupRunning}}
	bc.recordRestore(r, &restorePlan{task: doneTask(t, actionRestoreBackup, nil, "restic: wrong password")}, now)
	if r.Status.State != store.BackupFailed || r.Status.Error != "node web-1: restic: wrong password" {
		t.Fatalf("failed restore: %+v", r.Status)
	}
}

func TestProgressLimiter(t *testing.T) {
	l := newProgressLimiter(time.Second)
	t0 := time.Unix(1000, 0)
	if !l.allow("a", t0) || l.allow("a", t0.Add(500*time.Millisecond)) || !l.allow("b", t0.Add(500*time.Millisecond)) {
		t.Fatal("one write per task per second, tasks apart")
	}
	if !l.allow("a", t0.Add(time.Second)) {
		t.Fatal("a second later the next one goes")
	}
	for i := range 2000 {
		l.allow(string(rune('A'+i%50))+time.Duration(i).String(), t0.Add(2*time.Minute))
	}
	if _, ok := l.last["a"]; ok {
		t.Fatal("old tasks are never forgotten")
	}
}

func TestBackupAccessKeys(t *testing.T) {
	nodes := []store.NodeView{
		{Node: store.Node{Name: "backup-1"}, State: store.NodeState{Facts: store.NodeFacts{BackupSSHPublicKey: "ssh-ed25519 B"}}},
		{Node: store.Node{Name: "web-2"}, State: store.NodeState{Facts: store.NodeFacts{BackupSSHPublicKey: "ssh-ed25519 W2"}}},
		{Node: store.Node{Name: "web-1"}, State: store.NodeState{Facts: store.NodeFacts{BackupSSHPublicKey: "ssh-ed25519 W1"}}},
		{Node: store.Node{Name: "web-3"}}, // no key reported (yet)
	}
	want := wantedAccessKeys(nodes, "backup-1")
	if !reflect.DeepEqual(want, map[string]string{"web-1": "ssh-ed25519 W1", "web-2": "ssh-ed25519 W2"}) {
		t.Fatalf("keys %v", want)
	}
	spec := accessTask(want)
	wire, _ := proto.Marshal(spec)
	keys := spec.GetEnsureBackupAccess().GetKeys()
	if len(keys) != 2 || keys[0].GetNode() != "web-1" {
		t.Fatalf("task keys not in node order: %v", keys)
	}
	task := &store.Task{ID: "T", Node: "backup-1", Status: store.TaskSucceeded, Spec: wire}
	res, _ := proto.Marshal(&agentpb.TaskResult{Result: &agentpb.TaskResult_BackupAccess{BackupAccess: &agentpb.BackupAccessResult{
		HostKey: "ssh-ed25519 HOST", SftpAddress: "127.0.0.1:2222", SftpUser: "npanel-backup"}}})
	task.Result = res
	tg := &store.BackupTarget{Name: "bn", Kind: store.TargetNode, Node: "backup-1", AccessErr: "earlier"}
	if applyAccessResult(tg, task) {
		t.Fatal("a succeeded access task counted as failed")
	}
	if tg.HostKey != "ssh-ed25519 HOST" || tg.SFTPAddress != "127.0.0.1:2222" || tg.SFTPUser != "npanel-backup" || tg.AccessErr != "" ||
		!reflect.DeepEqual(tg.AccessKeys, want) {
		t.Fatalf("target %+v", tg)
	}
	if !applyAccessResult(tg, &store.Task{ID: "T2", Node: "backup-1", Status: store.TaskFailed, Error: "sshd: no such file"}) ||
		tg.AccessErr != "node backup-1: sshd: no such file" || tg.HostKey == "" {
		t.Fatalf("a failed access task: %+v (the last good access stays)", tg)
	}
}
