package allowlist

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/nodeagent/actions/account"
	"github.com/npanel/npanel/nodeagent/actions/backupnode"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/dns"
	"github.com/npanel/npanel/nodeagent/actions/ping"
	"github.com/npanel/npanel/nodeagent/actions/tls"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestFromTaskPing(t *testing.T) {
	act, err := New().FromTask(&agentpb.Task{Id: "t1", Action: &agentpb.Task_Ping{Ping: &agentpb.PingAction{Payload: "x", DelayMs: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	p, ok := act.(*ping.Action)
	if !ok || p.Payload != "x" || p.DelayMs != 3 {
		t.Fatalf("FromTask = %#v", act)
	}
}

func TestFromTaskNoAction(t *testing.T) {
	_, err := New().FromTask(&agentpb.Task{Id: "t1"})
	if !errors.Is(err, ErrNoAction) || !strings.Contains(err.Error(), "no action") {
		t.Fatalf("New().FromTask(empty) = %v", err)
	}
}

// An action added to the protocol later arrives as a field this agent's
// generated code does not know.
func TestFromTaskUnknownAction(t *testing.T) {
	wire, err := proto.Marshal(&agentpb.Task{Id: "t1", Generation: 4})
	if err != nil {
		t.Fatal(err)
	}
	wire = protowire.AppendTag(wire, 99, protowire.BytesType)
	wire = protowire.AppendBytes(wire, []byte{0x0a, 0x01, 'x'})
	var task agentpb.Task
	if err := proto.Unmarshal(wire, &task); err != nil {
		t.Fatal(err)
	}
	_, err = New().FromTask(&task)
	if !errors.Is(err, ErrNoAction) || !strings.Contains(err.Error(), "unknown to this agent version") {
		t.Fatalf("New().FromTask(unknown) = %v", err)
	}
}

func TestFromTaskNil(t *testing.T) {
	if _, err := New().FromTask(nil); !errors.Is(err, ErrNoAction) {
		t.Fatalf("New().FromTask(nil) = %v", err)
	}
}

func TestFromTaskAccount(t *testing.T) {
	act, err := New().FromTask(&agentpb.Task{Id: "t1", Action: &agentpb.Task_EnsureAccount{EnsureAccount: &agentpb.EnsureAccountAction{Username: "alice", DiskQuotaMb: 512, Suspended: true}}})
	if err != nil {
		t.Fatal(err)
	}
	e, ok := act.(*account.Ensure)
	if !ok || e.Username != "alice" || e.DiskQuotaMB != 512 || !e.Suspended || e.Name() != account.EnsureName {
		t.Fatalf("New().FromTask(ensure) = %#v", act)
	}
	act, err = New().FromTask(&agentpb.Task{Id: "t2", Action: &agentpb.Task_DeleteAccount{DeleteAccount: &agentpb.DeleteAccountAction{Username: "alice"}}})
	if err != nil {
		t.Fatal(err)
	}
	d, ok := act.(*account.Delete)
	if !ok || d.Username != "alice" || d.Name() != account.DeleteName {
		t.Fatalf("New().FromTask(delete) = %#v", act)
	}
	// A oneof member set to nil still names the action; its Validate refuses
	// the empty username.
	act, err = New().FromTask(&agentpb.Task{Id: "t3", Action: &agentpb.Task_DeleteAccount{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := act.Validate(); err == nil {
		t.Fatal("delete without a username validated")
	}
}

// Every action of the protocol maps to an action of this agent: one added
// to the proto but not to FromTask would fail on every node.
func TestFromTaskKnowsEveryAction(t *testing.T) {
	task := (&agentpb.Task{}).ProtoReflect()
	fields := task.Descriptor().Oneofs().ByName("action").Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		m := task.New()
		m.Set(fd, m.NewField(fd))
		if _, err := New().FromTask(m.Interface().(*agentpb.Task)); errors.Is(err, ErrNoAction) {
			t.Errorf("action %s: %v", fd.Name(), err)
		}
	}
}

// Every agent gets a List of its own modules: two agents in one process
// share no locks, caches or web committer.
func TestNewUsesTheAgentsModules(t *testing.T) {
	w, d, b := web.NewModule(), dns.NewModule(), db.NewModule()
	l := New(w, d, b)
	if l.web != w || l.dns != d || l.db != b || l.account == nil {
		t.Fatalf("New did not keep the agent's modules: %+v", l)
	}
	// Without a module the List makes one of its own, not a shared one.
	l1, l2 := New(), New()
	if l1.web == l2.web || l1.dns == l2.dns || l1.db == l2.db || l1.account == l2.account {
		t.Fatal("two Lists share a module")
	}
	act, err := l.FromTask(&agentpb.Task{Id: "t1", Action: &agentpb.Task_EnsureZone{EnsureZone: &agentpb.EnsureZoneAction{}}})
	if err != nil || act.Name() != dns.EnsureZoneName {
		t.Fatalf("New().FromTask(ensure_zone) = %v, %v", act, err)
	}
}

// Modules makes new modules on every call: one per agent.
func TestModulesAreNew(t *testing.T) {
	a, err := Modules([]string{"all"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Modules([]string{"all"})
	if len(a) != 4 || len(b) != 4 {
		t.Fatalf("Modules(all) = %d, %d modules", len(a), len(b))
	}
	for i := range a {
		if a[i] == b[i] {
			t.Errorf("module %s shared between two calls", a[i].Name())
		}
	}
}

// An agent given a module list another agent got too works with modules of
// its own.
func TestOwnModules(t *testing.T) {
	shared, err := Modules([]string{"web", "db"})
	if err != nil {
		t.Fatal(err)
	}
	a, b := OwnModules(shared), OwnModules(shared)
	if len(a) != 2 || a[0].Name() != "web" || a[1].Name() != "db" {
		t.Fatalf("OwnModules = %v", a)
	}
	for i := range a {
		if a[i] == shared[i] || a[i] == b[i] {
			t.Errorf("module %s shared", a[i].Name())
		}
	}
	if len(OwnModules(nil)) != 0 {
		t.Error("OwnModules(nil) made modules")
	}
}

func TestFromTaskCertificates(t *testing.T) {
	l := New()
	for task, want := range map[*agentpb.Task]string{
		{Action: &agentpb.Task_IssueCertificate{IssueCertificate: &agentpb.IssueCertificateAction{}}}:       tls.IssueName,
		{Action: &agentpb.Task_InstallCertificate{InstallCertificate: &agentpb.InstallCertificateAction{}}}: tls.InstallName,
		{Action: &agentpb.Task_RevokeCertificate{RevokeCertificate: &agentpb.RevokeCertificateAction{}}}:    tls.RevokeName,
		{Action: &agentpb.Task_RemoveCertificate{RemoveCertificate: &agentpb.RemoveCertificateAction{}}}:    tls.RemoveName,
	} {
		act, err := l.FromTask(task)
		if err != nil || act.Name() != want {
			t.Errorf("FromTask(%T) = %v, %v; want %s", task.GetAction(), act, err, want)
		}
	}
}

// The backup node is opt-in: "all" leaves it out (its sshd opens a port
// to the other nodes), naming it runs it, and its action is allow-listed
// whether or not the module runs.
func TestBackupModuleIsOptIn(t *testing.T) {
	all, err := Modules([]string{"all"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.Name() == "backup" {
			t.Fatal(`"all" runs the backup module`)
		}
	}
	mods, err := Modules([]string{"backup", "all"})
	if err != nil || len(mods) != len(all)+1 || mods[len(mods)-1].Name() != "backup" {
		t.Fatalf("Modules(backup, all) = %v, %v", mods, err)
	}
	act, err := New().FromTask(&agentpb.Task{Id: "t1", Action: &agentpb.Task_EnsureBackupAccess{EnsureBackupAccess: &agentpb.EnsureBackupAccessAction{}}})
	if err != nil || act.Name() != backupnode.EnsureAccessName {
		t.Fatalf("FromTask(ensure_backup_access) = %v, %v", act, err)
	}
}
