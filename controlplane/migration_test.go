package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// The migration controller against a real server and etcd, with the test
// playing the nodes: fake nodes answer the migration's tasks with the
// typed results the agents give. The agent's side (rsync, the SSH
// endpoint, hashes) is tested with real daemons in its own packages.

// migNode answers a fake node's tasks; hold makes it keep the tasks of
// one action unanswered until released.
type migNode struct {
	name string

	mu    sync.Mutex
	st    *store.Store
	hold  map[string]bool
	fail  map[string]bool
	seen  []*agentpb.Task
	count map[string]int
	kill  func()
	// restoreFrom is the backup a restore reads: its state and zone
	// files, as the node stored them.
	restoreFrom *agentpb.BackupAccountAction
}

func startMigNode(t testing.TB, s *testenv.Server, name string, accounts int, diskMB int64) *migNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.FakeNode(t, name, nil, accounts, diskMB)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err := s.Store().UpdateNodeState(ctx, name, func(ns *store.NodeState) bool { ns.PublicKey = pub; return true }); err != nil {
		t.Fatal(err)
	}
	n := &migNode{name: name, st: s.Store(), hold: map[string]bool{}, fail: map[string]bool{}, count: map[string]int{}}
	// Its liveness on a short lease of the test's, which kill lets expire.
	lease, err := s.Store().GrantLease(ctx, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	aliveCtx, stopAlive := context.WithCancel(ctx)
	n.kill = stopAlive
	if _, err := s.Store().KeepAlive(aliveCtx, lease); err != nil {
		t.Fatal(err)
	}
	if err := s.Store().MarkAlive(ctx, name, "test", lease); err != nil {
		t.Fatal(err)
	}
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			n.mu.Lock()
			st := n.st
			n.mu.Unlock()
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

func (n *migNode) setStore(st *store.Store) { n.mu.Lock(); n.st = st; n.mu.Unlock() }

func (n *migNode) setHold(action string, on bool) {
	n.mu.Lock()
	n.hold[action] = on
	n.mu.Unlock()
}

func (n *migNode) setFail(action string, on bool) {
	n.mu.Lock()
	n.fail[action] = on
	n.mu.Unlock()
}

// actionOf is a task's action as the store names it.
func actionOf(task *agentpb.Task) string {
	m := task.ProtoReflect()
	if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("action")); fd != nil {
		return fd.JSONName()
	}
	return ""
}

func (n *migNode) respond(task *agentpb.Task) *agentpb.TaskResult {
	action := actionOf(task)
	n.mu.Lock()
	if !slices.ContainsFunc(n.seen, func(s *agentpb.Task) bool { return s.GetId() == task.GetId() }) {
		n.seen = append(n.seen, task)
		n.count[action]++
	}
	hold, fail := n.hold[action], n.fail[action]
	partial := n.fail[action+"-partial"]
	if task.GetSyncMigration().GetFinal() {
		// "syncMigration-final": the final pass alone.
		hold, fail = hold || n.hold[action+"-final"], fail || n.fail[action+"-final"]
	}
	n.mu.Unlock()
	if hold {
		return nil
	}
	if fail {
		return &agentpb.TaskResult{Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "test: " + action + " fails"}
	}
	switch a := task.GetAction().(type) {
	case *agentpb.Task_EnsureAccount:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Account{Account: &agentpb.AccountResult{Username: a.EnsureAccount.GetUsername(), Uid: 2001, Gid: 2001}}}
	case *agentpb.Task_DeleteAccount:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Account{Account: &agentpb.AccountResult{Username: a.DeleteAccount.GetUsername()}}}
	case *agentpb.Task_EnsureZone:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Zone{Zone: &agentpb.ZoneResult{Zone: a.EnsureZone.GetZone(), Kind: "Master", Serial: 1, Changed: true}}}
	case *agentpb.Task_MigrationKey:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_MigrationKey{MigrationKey: &agentpb.MigrationKeyResult{PublicKey: "ssh-ed25519 AAAAtest " + n.name}}}
	case *agentpb.Task_AuthorizeMigration:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_AuthorizeMigration{AuthorizeMigration: &agentpb.AuthorizeMigrationResult{HostKey: "ssh-ed25519 AAAAhost", Endpoint: "127.0.0.1:2222"}}}
	case *agentpb.Task_SyncMigration:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_SyncMigration{SyncMigration: &agentpb.SyncMigrationResult{Files: 3, FileBytes: 1000, DatabaseBytes: 24, Uid: 2001, Gid: 2001}}}
	case *agentpb.Task_ExportCredentials:
		r := &agentpb.ExportCredentialsResult{}
		for _, mb := range a.ExportCredentials.GetMailboxes() {
			if partial {
				r.Failed = append(r.Failed, &agentpb.BackupItemFailure{Item: "mailbox:" + mb, Error: "no hash"})
				continue
			}
			r.Mailboxes = append(r.Mailboxes, &agentpb.SealedHash{Name: mb, SealedHash: []byte("sealed:" + mb)})
		}
		for _, u := range a.ExportCredentials.GetDatabaseUsers() {
			r.DatabaseUsers = append(r.DatabaseUsers, &agentpb.SealedHash{Name: u.GetName(), SealedHash: []byte("sealed:" + u.GetName())})
		}
		for _, c := range a.ExportCredentials.GetCertificates() {
			if partial {
				r.Failed = append(r.Failed, &agentpb.BackupItemFailure{Item: "certificate:" + c.GetId(), Error: "the served key does not match"})
				continue
			}
			r.Certificates = append(r.Certificates, &agentpb.SealedCertificateKey{Id: c.GetId(), SealedPrivateKey: []byte("sealed-key:" + c.GetId())})
		}
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_ExportCredentials{ExportCredentials: r}}
	case *agentpb.Task_InstallCertificate:
		leaf, err := parseLeaf(a.InstallCertificate.GetChainPem())
		if err != nil {
			return &agentpb.TaskResult{Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: err.Error()}
		}
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Certificate{Certificate: &agentpb.CertificateResult{
			ChainPem: a.InstallCertificate.GetChainPem(), Serial: leaf.SerialNumber.Text(16), Issuer: leaf.Issuer.CommonName,
			NotBeforeUnix: leaf.NotBefore.Unix(), NotAfterUnix: leaf.NotAfter.Unix(), Domains: leaf.DNSNames}}}
	case *agentpb.Task_RevokeMigration:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_RevokeMigration{RevokeMigration: &agentpb.RevokeMigrationResult{}}}
	case *agentpb.Task_BackupAccount:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Backup{Backup: &agentpb.BackupResult{SnapshotIds: []string{"s"}, SizeBytes: 1}}}
	case *agentpb.Task_RestoreBackup:
		n.mu.Lock()
		res := &agentpb.RestoreResult{StateJson: n.restoreFrom.GetStateJson(), ZoneFiles: n.restoreFrom.GetZoneFiles()}
		n.mu.Unlock()
		if a.RestoreBackup.GetWhat() == agentpb.RestoreWhat_RESTORE_WHAT_ALL {
			res.Restored = []string{"files", "state"}
		}
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Restore{Restore: res}}
	}
	return &agentpb.TaskResult{}
}

// tasks returns the tasks of action the node saw.
func (n *migNode) tasks(action string) []*agentpb.Task {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*agentpb.Task
	for _, t := range n.seen {
		if actionOf(t) == action {
			out = append(out, t)
		}
	}
	return out
}

// all returns every task the node saw, in order.
func (n *migNode) all() []*agentpb.Task {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.seen)
}

type migEnv struct {
	s      *testenv.Server
	st     *store.Store
	n1, n2 *migNode
	clock  *fakeClock
}

type fakeClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *fakeClock) advance(d time.Duration) { c.mu.Lock(); c.off += d; c.mu.Unlock() }

// newMigEnv starts a server with fake nodes web-1 (where accounts are
// placed) and web-2, and accounts named prefix0..prefixN-1.
func newMigEnv(t *testing.T, accounts int, opts ...testenv.ServerOption) (*migEnv, []*client.Account) {
	t.Helper()
	clock := &fakeClock{}
	opts = append([]testenv.ServerOption{func(c *controlplane.Config) {
		c.Migration.Poll = 50 * time.Millisecond
		c.Migration.Sweep = 200 * time.Millisecond
		c.Migration.Grace = time.Hour
		c.Migration.Now = clock.now
	}}, opts...)
	s := testenv.StartServer(t, opts...)
	e := &migEnv{s: s, st: s.Store(), clock: clock}
	e.n1 = startMigNode(t, s, "web-1", 100, 100_000)
	ctx := context.Background()
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 5, Mailboxes: 5, Databases: 5, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	var accts []*client.Account
	for i := range accounts {
		u := fmt.Sprintf("mig%d", i)
		a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: "web"})
		if err != nil {
			t.Fatal(err)
		}
		accts = append(accts, a)
	}
	testenv.WaitFor(t, 30*time.Second, "accounts active on web-1", func() bool {
		for _, a := range accts {
			got, _, err := e.st.GetAccount(ctx, a.ID)
			if err != nil || got.Node != "web-1" || got.Status != store.AccountActive {
				return false
			}
		}
		return true
	})
	e.n2 = startMigNode(t, s, "web-2", 100, 100_000)
	// Its own address, so that a zone's move shows.
	if _, err := e.st.UpdateNode(ctx, "web-2", func(n *store.Node) error { n.Address = "127.0.0.2"; return nil }, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	return e, accts
}

func (e *migEnv) create(t *testing.T, a *client.Account, to string) string {
	t.Helper()
	m := &store.Migration{ID: store.NewMigrationID(a.Username, time.Now()), Account: a.ID, Username: a.Username, Owner: "admin",
		FromNode: "web-1", ToNode: to, Requester: "admin"}
	if err := e.st.CreateMigration(context.Background(), m, store.NewAuditEvent("admin", "test", "migrateAccount", m.ID, "ok")); err != nil {
		t.Fatal(err)
	}
	return m.ID
}

func (e *migEnv) wait(t *testing.T, id, what string, cond func(m *store.Migration) bool) *store.Migration {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := e.st.GetMigration(context.Background(), id)
		if err == nil && cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			if m != nil {
				for _, s := range m.Steps {
					t.Logf("step %s: %s %s (task %s, %d tries)", s.Name, s.Status, s.Error, s.TaskID, s.Attempts)
				}
				t.Fatalf("%s: waiting for %s: status %s, error %q", id, what, m.Status, m.Error)
			}
			t.Fatalf("%s: waiting for %s: %v", id, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *migEnv) request(t *testing.T, id string, fn func(m *store.Migration)) {
	t.Helper()
	if _, err := e.st.UpdateMigration(context.Background(), id, func(m *store.Migration) ([]*store.ObjectTask, error) {
		fn(m)
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
}

func stepNames(m *store.Migration, only store.StepStatus) []string {
	var out []string
	for _, s := range m.Steps {
		if only == "" || s.Status == only {
			out = append(out, s.Name)
		}
	}
	return out
}

func migStatus(want store.MigrationStatus) func(m *store.Migration) bool {
	return func(m *store.Migration) bool { return m.Status == want }
}

func TestMigrationHappyPath(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	id := e.create(t, a, "web-2")
	m := e.wait(t, id, "DONE", migStatus(store.MigrationDone))

	want := []string{"inspect", "prepare", "key", "authorize", "presync", "suspend", "final-sync", "credentials",
		"revoke-target", "revoke-source", "switch", "activate", "proxy", "verify"}
	if got := stepNames(m, ""); !slices.Equal(got, want) {
		t.Fatalf("steps %v, want %v", got, want)
	}
	for _, s := range m.Steps {
		if s.Status != store.StepDone && !(s.Name == "credentials" && s.Status == store.StepSkipped) {
			t.Errorf("step %s: %s (%s)", s.Name, s.Status, s.Error)
		}
		if s.StartedAt.IsZero() || s.FinishedAt.Before(s.StartedAt) {
			t.Errorf("step %s: started %v finished %v", s.Name, s.StartedAt, s.FinishedAt)
		}
	}
	if m.Step("presync").Bytes != 1024 || m.Step("presync").TaskID == "" {
		t.Errorf("presync step %+v", m.Step("presync"))
	}
	if !m.CutOver || m.SuspendedAt.IsZero() || m.DowntimeMs < 0 || m.FinalizeAfter.IsZero() || m.SourcePublicKey == "" || m.TargetEndpoint == "" {
		t.Errorf("record %+v", m)
	}
	got, _, err := e.st.GetAccount(ctx, a.ID)
	if err != nil || got.Node != "web-2" {
		t.Fatalf("account on %q (%v), want web-2", got.Node, err)
	}
	// No node serves DNS here: the zone stays where it is, its address
	// and the records that pointed at the source point at the target.
	z, _, err := e.st.GetZone(ctx, a.Domain)
	if err != nil || z.Address != "127.0.0.2" {
		t.Fatalf("zone address %q (%v), want the target's", z.Address, err)
	}
	for _, r := range z.Records {
		if r.Type == "A" && r.Content == "127.0.0.1" {
			t.Errorf("record %+v still points at the source", r)
		}
	}
	// The allocation moved with the account.
	allocs, _, err := e.st.Allocs(ctx)
	if err != nil || allocs["web-1"].Accounts != 0 || allocs["web-2"].Accounts != 1 {
		t.Errorf("allocations %+v (%v), want the account on web-2", allocs, err)
	}
	// The target was prepared suspended, with the source's uid; the
	// source keeps its copy, proxying to the target.
	prep := e.n2.tasks("ensureAccount")
	if len(prep) == 0 || !prep[0].GetEnsureAccount().GetSuspended() {
		t.Errorf("target's first ensure %v, want suspended", prep)
	}
	auth := e.n2.tasks("authorizeMigration")
	if len(auth) != 1 || auth[0].GetAuthorizeMigration().GetSourceUid() != 2001 || auth[0].GetAuthorizeMigration().GetPublicKey() == "" {
		t.Errorf("authorize %v", auth)
	}
	src := e.n1.tasks("ensureAccount")
	if last := src[len(src)-1].GetEnsureAccount(); last.GetWeb().GetProxyTo() == "" || last.GetSuspended() {
		t.Errorf("source's last ensure %v, want proxying", last)
	}
	// HTTPS to the target's HTTPS (no nginx reported: 443), so that a
	// site redirecting HTTP to HTTPS there does not loop back here.
	if last := src[len(src)-1].GetEnsureAccount().GetWeb(); last.GetProxyTo() != "127.0.0.2:80" || last.GetProxyToHttps() != "127.0.0.2:443" {
		t.Errorf("source proxies to %q and %q, want the target's HTTP and HTTPS", last.GetProxyTo(), last.GetProxyToHttps())
	}
	if n := len(e.n1.tasks("deleteAccount")); n != 0 {
		t.Errorf("source got %d deletes before finalize", n)
	}
	syncs := e.n1.tasks("syncMigration")
	if len(syncs) != 2 || syncs[0].GetSyncMigration().GetFinal() || !syncs[1].GetSyncMigration().GetFinal() {
		t.Errorf("syncs %v, want a presync and a final", syncs)
	}
	// One migration per account at a time.
	m2 := &store.Migration{ID: store.NewMigrationID(a.Username, time.Now()), Account: a.ID, Username: a.Username, FromNode: "web-2", ToNode: "web-1"}
	if err := e.st.CreateMigration(ctx, m2, store.AuditEvent{}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second migration: %v, want a conflict", err)
	}

	// Finalize: the source's copy is removed; the account is free again.
	e.request(t, id, func(m *store.Migration) { m.FinalizeRequested = true })
	m = e.wait(t, id, "finalized", func(m *store.Migration) bool { return !m.FinalizedAt.IsZero() })
	if m.Status != store.MigrationDone || m.Step("finalize").Status != store.StepDone {
		t.Fatalf("after finalize: %s %+v", m.Status, m.Step("finalize"))
	}
	if del := e.n1.tasks("deleteAccount"); len(del) != 1 || del[0].GetDeleteAccount().GetUsername() != a.Username {
		t.Fatalf("source deletes %v", del)
	}
	// After finalize nothing proxies: the source's last task removed the
	// account, and the target never proxied.
	if seen := e.n1.all(); actionOf(seen[len(seen)-1]) != "deleteAccount" {
		t.Errorf("source's last task after finalize: %v", seen[len(seen)-1])
	}
	for _, task := range e.n2.tasks("ensureAccount") {
		if w := task.GetEnsureAccount().GetWeb(); w.GetProxyTo() != "" || w.GetProxyToHttps() != "" {
			t.Errorf("target told to proxy: %v", task)
		}
	}
	if holder, err := e.st.MigrationOfAccount(ctx, a.ID); err != nil || holder != "" {
		t.Fatalf("account still held by %q (%v)", holder, err)
	}
}

func TestMigrationMovesDatabasesAndMailWithSealedHashes(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	db, err := e.s.Admin.CreateDatabase(ctx, a.ID, "shop", "")
	if err != nil {
		t.Fatal(err)
	}
	up, err := e.s.Admin.CreateDatabaseUser(ctx, a.ID, "app", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Admin.CreateMailbox(ctx, a.ID, "info@"+a.Domain, "", 0); err != nil {
		t.Fatal(err)
	}
	dbName, userName := db.Name, up.User.Name
	id := e.create(t, a, "web-2")
	m := e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	for _, n := range []string{"prepare-db:" + dbName, "prepare-mail:" + a.Domain, "credentials", "suspend-mail:" + a.Domain} {
		if s := m.Step(n); s == nil || s.Status != store.StepDone {
			t.Errorf("step %s: %+v", n, s)
		}
	}
	// From the suspension on, the source defers the domain's mail.
	if src := e.n1.tasks("ensureMailDomain"); len(src) == 0 || !src[len(src)-1].GetEnsureMailDomain().GetSuspended() {
		t.Errorf("the source's mail domain was not suspended for the cutover: %v", src)
	}
	dbs, err := e.st.GetDatabases(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	u := dbs.Users[userName]
	if u == nil || u.Node != "web-2" || string(u.SealedPasswordHash) != "sealed:"+userName || u.SealedPassword != nil {
		t.Fatalf("database user after the move: %+v", u)
	}
	if d := dbs.Databases[dbName]; d == nil || d.Node != "web-2" {
		t.Fatalf("database after the move: %+v", d)
	}
	mail, err := e.st.GetMail(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if mb := mail.Mailboxes["info@"+a.Domain]; mb == nil || mb.Node != "web-2" || string(mb.SealedPasswordHash) != "sealed:info@"+a.Domain {
		t.Fatalf("mailbox after the move: %+v", mb)
	}
}

func TestMigrationResumesAfterServerRestart(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	e.n1.setHold("syncMigration", true)
	id := e.create(t, accts[0], "web-2")
	e.wait(t, id, "presync sent", func(m *store.Migration) bool {
		s := m.Step("presync")
		return s != nil && s.TaskID != ""
	})
	e.s.Restart()
	e.st = e.s.Store()
	e.n1.setStore(e.st)
	e.n2.setStore(e.st)
	e.n1.setHold("syncMigration", false)
	m := e.wait(t, id, "DONE after the restart", migStatus(store.MigrationDone))
	// Nothing finished before the restart was sent again.
	for _, action := range []string{"migrationKey"} {
		if n := len(e.n1.tasks(action)); n != 1 {
			t.Errorf("%s sent %d times, want once", action, n)
		}
	}
	if n := len(e.n2.tasks("authorizeMigration")); n != 1 {
		t.Errorf("authorize sent %d times, want once", n)
	}
	if n := len(e.n1.tasks("syncMigration")); n != 2 {
		t.Errorf("%d syncs, want the presync (its task kept across the restart) and the final", n)
	}
	if m.Step("presync").Attempts != 1 {
		t.Errorf("presync attempts %d, want 1", m.Step("presync").Attempts)
	}
}

func TestMigrationCancelBeforeCutover(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	e.n1.setHold("syncMigration", true)
	id := e.create(t, accts[0], "web-2")
	e.wait(t, id, "presync sent", func(m *store.Migration) bool { s := m.Step("presync"); return s != nil && s.TaskID != "" })
	e.request(t, id, func(m *store.Migration) { m.CancelRequested = true })
	e.n1.setHold("syncMigration", false)
	m := e.wait(t, id, "CANCELLED", migStatus(store.MigrationCancelled))
	if m.Step("suspend").Status != store.StepSkipped || m.Step("cancel-remove-target").Status != store.StepDone {
		t.Fatalf("steps %+v", m.Steps)
	}
	if del := e.n2.tasks("deleteAccount"); len(del) != 1 {
		t.Errorf("target copy removals %d, want 1", len(del))
	}
	if n := len(e.n1.tasks("revokeMigration")) + len(e.n2.tasks("revokeMigration")); n != 2 {
		t.Errorf("%d revokes, want one on each side", n)
	}
	if len(e.n1.tasks("deleteAccount")) != 0 {
		t.Error("the source copy was removed")
	}
	got, _, err := e.st.GetAccount(ctx, accts[0].ID)
	if err != nil || got.Node != "web-1" {
		t.Fatalf("account on %q (%v), want web-1", got.Node, err)
	}
	if holder, _ := e.st.MigrationOfAccount(ctx, accts[0].ID); holder != "" {
		t.Fatalf("account still held by %s", holder)
	}
}

func TestMigrationFailureBeforeCutoverUndoes(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	e.n1.setFail("syncMigration", true)
	id := e.create(t, accts[0], "web-2")
	m := e.wait(t, id, "FAILED", migStatus(store.MigrationFailed))
	if m.Step("presync").Status != store.StepFailed || m.Step("presync").Attempts != 3 || m.Error == "" {
		t.Fatalf("presync %+v, error %q", m.Step("presync"), m.Error)
	}
	if m.Step("cancel-remove-target").Status != store.StepDone {
		t.Fatalf("the target copy was not removed: %+v", m.Steps)
	}
}

func TestMigrationRollbackAfterCutover(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	e.request(t, id, func(m *store.Migration) { m.RollbackRequested = true })
	m := e.wait(t, id, "ROLLED_BACK", migStatus(store.MigrationRolledBack))
	for _, n := range []string{"rollback-switch", "rollback-activate", "rollback-remove-target"} {
		if s := m.Step(n); s == nil || s.Status != store.StepDone {
			t.Errorf("step %s: %+v", n, s)
		}
	}
	got, _, err := e.st.GetAccount(ctx, a.ID)
	if err != nil || got.Node != "web-1" {
		t.Fatalf("account on %q (%v), want web-1", got.Node, err)
	}
	z, _, _ := e.st.GetZone(ctx, a.Domain)
	if z.Address != "127.0.0.1" {
		t.Fatalf("zone address %s, want the source's", z.Address)
	}
	// The source serves again without a proxy; the target's copy went.
	src := e.n1.tasks("ensureAccount")
	if last := src[len(src)-1].GetEnsureAccount(); last.GetWeb().GetProxyTo() != "" || last.GetWeb().GetProxyToHttps() != "" {
		t.Errorf("source still proxies: %v", last)
	}
	if len(e.n2.tasks("deleteAccount")) != 1 || len(e.n1.tasks("deleteAccount")) != 0 {
		t.Errorf("deletes: target %d source %d", len(e.n2.tasks("deleteAccount")), len(e.n1.tasks("deleteAccount")))
	}
}

func TestMigrationAutoFinalizeAfterGrace(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	id := e.create(t, accts[0], "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	time.Sleep(300 * time.Millisecond)
	if len(e.n1.tasks("deleteAccount")) != 0 {
		t.Fatal("finalized before the grace period ran out")
	}
	e.clock.advance(2 * time.Hour)
	m := e.wait(t, id, "finalized", func(m *store.Migration) bool { return !m.FinalizedAt.IsZero() })
	if !m.FinalizeRequested || len(e.n1.tasks("deleteAccount")) != 1 {
		t.Fatalf("auto finalize: %+v, %d deletes", m, len(e.n1.tasks("deleteAccount")))
	}
}

func TestMigrationPicksTargetWithScheduler(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	id := e.create(t, accts[0], "")
	m := e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	if m.ToNode != "web-2" {
		t.Fatalf("target %q, want web-2 (the only other node)", m.ToNode)
	}
}

func TestMigrationNoTargetFails(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	if _, err := e.st.UpdateNode(ctx, "web-2", func(n *store.Node) error { n.Draining = true; return nil }, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	id := e.create(t, accts[0], "")
	m := e.wait(t, id, "FAILED", migStatus(store.MigrationFailed))
	if m.Error == "" || len(m.Steps) != 0 {
		t.Fatalf("%+v", m)
	}
}

func TestMigrationDrainParallel(t *testing.T) {
	e, accts := newMigEnv(t, 20)
	ctx := context.Background()
	e.startMigNode3(t)
	// Through the API, as npanel ctl node drain web-1 --migrate --parallel 4.
	if err := e.s.Admin.DrainNodeMigrate(ctx, "web-1", 4); err != nil {
		t.Fatal(err)
	}
	ms, _, err := e.s.Admin.Migrations(ctx, client.MigrationFilter{Drain: "web-1"}, 100, "")
	if err != nil || len(ms) != len(accts) {
		t.Fatalf("%d migrations for the drain (%v), want %d", len(ms), err, len(accts))
	}
	ids := make([]string, 0, len(ms))
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	peak := 0
	// A liveness bound, generous for a loaded CI machine; what was left
	// is named when it runs out.
	var left []string
	logged := ""
	testenv.WaitFor(t, 4*time.Minute, "all 20 moved", func() bool {
		ms, err := e.st.ListMigrations(ctx)
		if err != nil {
			return false
		}
		running, done := 0, 0
		left = left[:0]
		for _, m := range ms {
			switch m.Status {
			case store.MigrationPresync, store.MigrationCutover, store.MigrationVerifying:
				running++
			case store.MigrationDone:
				done++
				continue
			}
			step := ""
			if n := len(m.Steps); n > 0 {
				step = m.Steps[n-1].Name + " " + string(m.Steps[n-1].Status)
			}
			left = append(left, fmt.Sprintf("%s %s (%s) %s", m.Account, m.Status, step, m.Error))
		}
		peak = max(peak, running)
		if now := fmt.Sprint(left); done != len(ids) && now != logged {
			t.Logf("not moved yet: %s", now)
			logged = now
		}
		return done == len(ids)
	})
	if peak > 4 {
		t.Fatalf("%d migrations ran at once, want at most 4", peak)
	}
	on := map[string]int{}
	for _, a := range accts {
		got, _, err := e.st.GetAccount(ctx, a.ID)
		if err != nil {
			t.Fatal(err)
		}
		on[got.Node]++
	}
	// The scheduler spread them (spread strategy, allocations moved
	// with each account).
	if on["web-1"] != 0 || on["web-2"]+on["web-3"] != 20 || on["web-2"] == 0 || on["web-3"] == 0 {
		t.Fatalf("accounts per node %v", on)
	}
	if n, err := e.st.GetNode(ctx, "web-1"); err != nil || !n.Draining {
		t.Fatalf("web-1 not draining: %v", err)
	}
}

func (e *migEnv) startMigNode3(t *testing.T) { startMigNode(t, e.s, "web-3", 100, 100_000) }

func TestMigrationSourceDownRestoresBackup(t *testing.T) {
	e, accts := newMigEnv(t, 1, func(c *controlplane.Config) {
		c.Backup.SchedulePass = 200 * time.Millisecond
		c.Backup.Sweep = 500 * time.Millisecond
	})
	ctx := context.Background()
	a := accts[0]
	// Its backups go off the node (S3), so they outlive it.
	if err := e.st.CreateBackupTarget(ctx, &store.BackupTarget{Name: "s3", Kind: store.TargetS3, Endpoint: "http://127.0.0.1:9", Bucket: "b"}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	b := &store.Backup{ID: store.NewBackupID(a.Username, time.Now()), Account: a.Username, AccountID: a.ID, Owner: "admin", Node: "web-1", Target: "s3"}
	if err := e.st.CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "backup succeeded", func() bool {
		got, err := e.st.GetBackup(ctx, b.ID)
		return err == nil && got.Status.State == store.BackupSucceeded
	})
	e.n2.mu.Lock()
	e.n2.restoreFrom = e.n1.tasks("backupAccount")[0].GetBackupAccount()
	e.n2.mu.Unlock()
	// web-1 goes DOWN: its liveness key is gone.
	e.n1.kill()
	testenv.WaitFor(t, 20*time.Second, "web-1 DOWN", func() bool {
		v, err := e.st.GetNode(ctx, "web-1")
		return err == nil && v.State.Status == store.NodeDown
	})
	id := e.create(t, a, "web-2")
	m := e.wait(t, id, "restore created", func(m *store.Migration) bool { return m.RestoreID != "" })
	if !m.Restore || m.BackupID != b.ID {
		t.Fatalf("restore path: %+v", m)
	}
	testenv.WaitFor(t, 20*time.Second, "the restore exists", func() bool {
		r, _, err := e.st.GetRestoreRev(ctx, m.RestoreID)
		return err == nil && r.What == store.RestoreAll && r.Node == "web-2" && r.Backup == b.ID
	})
	if got := stepNames(m, ""); !slices.Equal(got, []string{"backup", "switch", "restore", "activate", "verify"}) {
		t.Fatalf("steps %v", got)
	}
	if len(e.n1.tasks("syncMigration")) != 0 {
		t.Fatal("rsync from a down node")
	}
	// The restore (the backup controller's, onto web-2) finishes the
	// migration.
	m = e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	r, _, err := e.st.GetRestoreRev(ctx, m.RestoreID)
	if err != nil || r.Status.State != store.BackupSucceeded {
		t.Fatalf("restore %+v, %v", r, err)
	}
	got, _, err := e.st.GetAccount(ctx, a.ID)
	if err != nil || got.Node != "web-2" {
		t.Fatalf("account on %q (%v), want web-2", got.Node, err)
	}
	var whats []string
	for _, task := range e.n2.tasks("restoreBackup") {
		whats = append(whats, task.GetRestoreBackup().GetWhat().String())
	}
	if !slices.Contains(whats, "RESTORE_WHAT_ALL") {
		t.Fatalf("restore tasks on web-2: %v", whats)
	}
}

func TestMigrationCutoverHoldsTheAccount(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	e.n1.setHold("syncMigration-final", true) // the final sync waits
	id := e.create(t, a, "web-2")
	e.wait(t, id, "final sync sent", func(m *store.Migration) bool {
		s := m.Step("final-sync")
		return s != nil && s.TaskID != ""
	})
	got, _, err := e.st.GetAccount(ctx, a.ID)
	if err != nil || got.Migrating != id {
		t.Fatalf("account during the cutover: migrating %q (%v)", got.Migrating, err)
	}
	// A spec change meanwhile is not sent to the suspended source.
	before := len(e.n1.tasks("ensureAccount"))
	if _, err := e.st.UpdateAccount(ctx, a.ID, func(a *store.Account) error { a.Generation++; return nil }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if n := len(e.n1.tasks("ensureAccount")); n != before {
		t.Fatalf("the account controller sent %d ensures to the source during the cutover", n-before)
	}
	e.n1.setHold("syncMigration-final", false)
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	got, _, _ = e.st.GetAccount(ctx, a.ID)
	if got.Migrating != "" || got.Node != "web-2" || got.AppliedGeneration != got.Generation {
		t.Fatalf("account after: %+v", got)
	}
}

func TestMigrationFailureAfterSuspendGivesTheSourceBack(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	if _, err := e.s.Admin.CreateMailbox(ctx, a.ID, "info@"+a.Domain, "", 0); err != nil {
		t.Fatal(err)
	}
	e.n1.setFail("syncMigration-final", true) // the final sync fails
	id := e.create(t, a, "web-2")
	m := e.wait(t, id, "FAILED", migStatus(store.MigrationFailed))
	if s := m.Step("cancel-mail:" + a.Domain); s == nil || s.Status != store.StepDone {
		t.Fatalf("the source's mail domain was not resumed: %+v", m.Steps)
	}
	if src := e.n1.tasks("ensureMailDomain"); len(src) == 0 || src[len(src)-1].GetEnsureMailDomain().GetSuspended() {
		t.Fatalf("the source's mail domain stays suspended: %v", src)
	}
	if m.Step("final-sync").Status != store.StepFailed || m.Step("cancel-source").Status != store.StepDone ||
		m.Step("cancel-remove-target").Status != store.StepDone || m.SuspendedAt.IsZero() {
		t.Fatalf("steps %+v", m.Steps)
	}
	// The source is ensured again as its spec says (not suspended).
	testenv.WaitFor(t, 15*time.Second, "source re-ensured", func() bool {
		got, _, err := e.st.GetAccount(ctx, a.ID)
		return err == nil && got.Migrating == "" && got.Node == "web-1" && got.AppliedGeneration == got.Generation && got.Status == store.AccountActive
	})
	src := e.n1.tasks("ensureAccount")
	if last := src[len(src)-1].GetEnsureAccount(); last.GetSuspended() {
		t.Fatalf("the source stays suspended: %v", last)
	}
	if holder, _ := e.st.MigrationOfAccount(ctx, a.ID); holder != "" {
		t.Fatalf("account still held by %s", holder)
	}
}

func TestMigrationFailedAfterCutoverRollsBack(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	id := e.create(t, a, "web-2")
	// The prepare step's ensure is answered; the target's ensures after
	// the switch are held, then fail.
	e.wait(t, id, "prepared", func(m *store.Migration) bool { s := m.Step("prepare"); return s != nil && s.Status == store.StepDone })
	e.n2.setHold("ensureAccount", true)
	e.wait(t, id, "final sync done", func(m *store.Migration) bool {
		s := m.Step("final-sync")
		return s != nil && s.Status == store.StepDone
	})
	e.n2.setFail("ensureAccount", true)
	e.n2.setHold("ensureAccount", false)
	m := e.wait(t, id, "FAILED", migStatus(store.MigrationFailed))
	if !m.CutOver || m.Step("activate").Status != store.StepFailed {
		t.Fatalf("%+v", m.Steps)
	}
	if holder, _ := e.st.MigrationOfAccount(ctx, a.ID); holder != id {
		t.Fatalf("a migration failed after its cutover no longer holds the account (%q)", holder)
	}
	e.n2.setFail("ensureAccount", false)
	e.request(t, id, func(m *store.Migration) { m.RollbackRequested = true })
	e.wait(t, id, "ROLLED_BACK", migStatus(store.MigrationRolledBack))
	got, _, err := e.st.GetAccount(ctx, a.ID)
	if err != nil || got.Node != "web-1" {
		t.Fatalf("account on %q (%v)", got.Node, err)
	}
}

// Where both nodes run a DNS server, the account's zone follows it: the
// target becomes its primary, with the target's address, applied there.
func TestMigrationMovesTheZoneToATargetServingDNS(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	for i, n := range []string{"web-1", "web-2"} {
		if err := e.st.PutServices(ctx, store.NodeServices{Node: n, ReportedAt: time.Now(), Services: []store.ServiceStatus{
			{Name: "pdns", State: "running", Listen: []string{fmt.Sprintf("127.0.0.%d:53", i+1)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 30*time.Second, "zone served on web-1", func() bool {
		z, _, err := e.st.GetZone(ctx, a.Domain)
		return err == nil && z.Node == "web-1" && z.Status == store.ZoneActive && z.AppliedGeneration == z.Generation
	})
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	z, _, err := e.st.GetZone(ctx, a.Domain)
	if err != nil || z.Node != "web-2" || z.Address != "127.0.0.2" || z.Status != store.ZoneActive || z.AppliedGeneration != z.Generation {
		t.Fatalf("zone after the move: %+v (%v)", z, err)
	}
	ensured := slices.ContainsFunc(e.n2.tasks("ensureZone"), func(task *agentpb.Task) bool { return task.GetEnsureZone().GetZone() == a.Domain })
	if !ensured {
		t.Fatal("the zone was not ensured on web-2")
	}
}

// A mailbox whose hash could not be exported would not log in on the
// target: the migration stops before the switch and gives the source back.
func TestMigrationPartialCredentialsFail(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	if _, err := e.s.Admin.CreateMailbox(ctx, a.ID, "info@"+a.Domain, "", 0); err != nil {
		t.Fatal(err)
	}
	e.n1.setFail("exportCredentials-partial", true)
	id := e.create(t, a, "web-2")
	m := e.wait(t, id, "FAILED", migStatus(store.MigrationFailed))
	if s := m.Step("credentials"); s == nil || s.Status != store.StepFailed || !strings.Contains(s.Error, "mailbox:info@"+a.Domain) {
		t.Fatalf("credentials step %+v", s)
	}
	if m.CutOver || m.Step("switch").Status == store.StepDone {
		t.Fatalf("switched without the hashes: %+v", m.Steps)
	}
	got, _, err := e.st.GetAccount(ctx, a.ID)
	if err != nil || got.Node != "web-1" {
		t.Fatalf("account on %q (%v), want web-1", got.Node, err)
	}
}

// The source proxies HTTPS to the port the target's nginx reports for
// HTTPS (HTTP, then HTTPS), HTTP to its HTTP port; rolled back, neither.
func TestMigrationProxiesHTTPSToTheTargetsHTTPSListener(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	for i, n := range []string{"web-1", "web-2"} {
		if err := e.st.PutServices(ctx, store.NodeServices{Node: n, ReportedAt: time.Now(), Services: []store.ServiceStatus{
			{Name: "nginx", State: "running", Listen: []string{fmt.Sprintf("127.0.0.%d:8080", i+1), fmt.Sprintf("127.0.0.%d:8443", i+1)}}}}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "services of web-2 cached", func() bool {
		svc, err := e.st.CachedServices(ctx, "web-2")
		return err == nil && len(svc.Services) == 1
	})
	id := e.create(t, a, "web-2")
	m := e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	proxy := m.Step("proxy")
	if proxy == nil || proxy.Status != store.StepDone {
		t.Fatalf("proxy step %+v", proxy)
	}
	var sent *agentpb.WebSpec
	for _, task := range e.n1.tasks("ensureAccount") {
		if task.GetId() == proxy.TaskID {
			sent = task.GetEnsureAccount().GetWeb()
		}
	}
	if sent == nil || sent.GetProxyTo() != "127.0.0.2:8080" || sent.GetProxyToHttps() != "127.0.0.2:8443" {
		t.Fatalf("the proxy step's spec %v, want HTTP to 127.0.0.2:8080 and HTTPS to 127.0.0.2:8443", sent)
	}
	if w := sent; len(w.GetSites()) == 0 {
		t.Fatalf("the proxy step's spec has no sites: %v", w)
	}
	for _, task := range e.n2.tasks("ensureAccount") {
		if w := task.GetEnsureAccount().GetWeb(); w.GetProxyTo() != "" || w.GetProxyToHttps() != "" {
			t.Errorf("target told to proxy: %v", task)
		}
	}

	e.request(t, id, func(m *store.Migration) { m.RollbackRequested = true })
	e.wait(t, id, "ROLLED_BACK", migStatus(store.MigrationRolledBack))
	src := e.n1.tasks("ensureAccount")
	if last := src[len(src)-1].GetEnsureAccount().GetWeb(); last.GetProxyTo() != "" || last.GetProxyToHttps() != "" {
		t.Errorf("source still proxies after rollback: %v", last)
	}
}
