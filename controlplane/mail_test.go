package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// fakeMailAgent answers the mail tasks queued for a fake node as the mail
// module would (the agent protocol's seam: agentpb results written with
// CompleteTask), so that the control plane's side is tested alone: ensures
// succeed and report DKIM keys and usage, queries answer with fixed data.
// It returns the node's key, which opens the sealed passwords.
type fakeMailAgent struct {
	key  *ecdsa.PrivateKey
	stop context.CancelFunc // the node stops answering
	mu   sync.Mutex
	seen []*agentpb.Task
	// fail: task actions (as tasks() names them) the node fails.
	fail map[string]bool
}

// failing makes the node fail (or, false, apply again) the tasks of action.
func (f *fakeMailAgent) failing(action string, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail == nil {
		f.fail = map[string]bool{}
	}
	f.fail[action] = on
}

func (f *fakeMailAgent) fails(task *agentpb.Task) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := task.ProtoReflect()
	return f.fail[string(m.WhichOneof(m.Descriptor().Oneofs().ByName("action")).Name())]
}

func startFakeMailAgent(t *testing.T, s *testenv.Server, node string) *fakeMailAgent {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	st := s.Store()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := st.UpdateNodeState(ctx, node, func(ns *store.NodeState) bool { ns.PublicKey = der; return true }); err != nil {
		t.Fatal(err)
	}
	f := &fakeMailAgent{key: key, stop: cancel}
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			tasks, _, err := st.PendingTasks(ctx, node)
			if err != nil {
				continue
			}
			for _, task := range tasks {
				res := f.answer(task)
				if res == nil {
					continue
				}
				res.TaskId, res.Status = task.GetId(), agentpb.TaskStatus_TASK_STATUS_SUCCEEDED
				if f.fails(task) {
					res = &agentpb.TaskResult{TaskId: task.GetId(), Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "node refused"}
				}
				_, _ = st.CompleteTask(ctx, node, res, store.NewAuditEvent("node:"+node, "test", "", "", ""))
			}
		}
	}()
	return f
}

func (f *fakeMailAgent) answer(task *agentpb.Task) *agentpb.TaskResult {
	f.mu.Lock()
	f.seen = append(f.seen, task)
	f.mu.Unlock()
	switch a := task.GetAction().(type) {
	case *agentpb.Task_EnsureAccount:
		// Mail waits for the node to have the account's user.
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Account{Account: &agentpb.AccountResult{Username: a.EnsureAccount.GetUsername(), Uid: 2001, Gid: 2001}}}
	case *agentpb.Task_DeleteAccount:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Account{Account: &agentpb.AccountResult{Username: a.DeleteAccount.GetUsername()}}}
	case *agentpb.Task_EnsureMailDomain:
		res := &agentpb.MailDomainResult{Domain: a.EnsureMailDomain.GetDomain()}
		for _, k := range a.EnsureMailDomain.GetDkimSelectors() {
			res.DkimKeys = append(res.DkimKeys, &agentpb.MailDKIMKey{Selector: k.GetSelector(), Signing: k.GetSigning(),
				Txt: "v=DKIM1; k=rsa; p=" + strings.Repeat("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA", 9)})
		}
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_MailDomain{MailDomain: res}}
	case *agentpb.Task_DeleteMailDomain:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_MailDomain{MailDomain: &agentpb.MailDomainResult{Domain: a.DeleteMailDomain.GetDomain()}}}
	case *agentpb.Task_EnsureMailbox:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Mailbox{Mailbox: &agentpb.MailboxResult{Address: a.EnsureMailbox.GetAddress(), UsedBytes: 1000, Messages: 1}}}
	case *agentpb.Task_DeleteMailbox:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Mailbox{Mailbox: &agentpb.MailboxResult{Address: a.DeleteMailbox.GetAddress(), Existed: true}}}
	case *agentpb.Task_MailUsage:
		res := &agentpb.MailUsageResult{}
		for _, addr := range a.MailUsage.GetAddresses() {
			res.Mailboxes = append(res.Mailboxes, &agentpb.MailboxUsage{Address: addr, UsedBytes: 5 << 20, Messages: 42, Exists: true})
		}
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_MailUsage{MailUsage: res}}
	case *agentpb.Task_ReadMailLog:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_MailLog{MailLog: &agentpb.MailLogResult{Lines: []string{"delivered to " + a.ReadMailLog.GetAddress()}}}}
	case *agentpb.Task_ScanMailbox:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_ScanMailbox{ScanMailbox: &agentpb.ScanMailboxResult{Scanned: 3,
			Infected: []*agentpb.MailInfection{{Message: "1.eml", Signature: "Eicar-Signature"}}}}}
	case *agentpb.Task_TrainMail:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_TrainMail{TrainMail: &agentpb.TrainMailResult{Learned: true}}}
	case *agentpb.Task_MailQueue:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_MailQueue{MailQueue: &agentpb.MailQueueResult{Total: 1,
			Messages: []*agentpb.MailQueueEntry{{Id: "1abc-000001-AB", Sender: "a@example.org", Recipients: []string{"b@example.net"}}}}}}
	case *agentpb.Task_FlushMailQueue:
		return &agentpb.TaskResult{}
	}
	return nil
}

func (f *fakeMailAgent) tasks(action string) []*agentpb.Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*agentpb.Task
	for _, t := range f.seen {
		m := t.ProtoReflect()
		if string(m.WhichOneof(m.Descriptor().Oneofs().ByName("action")).Name()) == action {
			out = append(out, t)
		}
	}
	return out
}

// mailTenants is setupTenants with room for mail: plans of 3 mailboxes,
// both accounts placed, and fake mail agents on both nodes.
func mailTenants(t *testing.T) (*tenants, map[string]*fakeMailAgent) {
	t.Helper()
	tn := setupTenants(t)
	ctx := context.Background()
	for _, p := range []string{"basic", "premium"} {
		if _, err := tn.admin.UpdatePlan(ctx, p, client.PlanUpdate{Mailboxes: ptr(3)}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 10*time.Second, "alpha1 and bravo1 placed", func() bool {
		a, errA := tn.admin.Account(ctx, "alpha1")
		b, errB := tn.admin.Account(ctx, "bravo1")
		return errA == nil && errB == nil && a.NodeName() != "" && b.NodeName() != ""
	})
	agents := map[string]*fakeMailAgent{}
	for _, n := range []string{"n-eu", "n-us"} {
		agents[n] = startFakeMailAgent(t, tn.s, n)
	}
	return tn, agents
}

func waitMailbox(t *testing.T, c *client.Client, account, address, status string) client.Mailbox {
	t.Helper()
	var got client.Mailbox
	testenv.WaitFor(t, 15*time.Second, address+" "+status, func() bool {
		list, _, err := c.Mailboxes(context.Background(), account, 50, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list {
			if m.Address == address {
				got = m
				return m.Status == status
			}
		}
		return false
	})
	return got
}

// TestMailRBAC walks every mail query and mutation with each role: an
// account owner and its reseller manage the account's mail, another
// reseller sees NOT_FOUND (existence does not leak) and changes nothing,
// the queue is for admins only (FORBIDDEN), anonymous callers are
// UNAUTHENTICATED.
func TestMailRBAC(t *testing.T) {
	tn, _ := mailTenants(t)
	ctx := context.Background()
	a1 := tn.a1.ID
	const box = "info@alpha1.example.com"
	if _, err := tn.userA.CreateMailbox(ctx, a1, box, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.userA.CreateMailbox(ctx, a1, "sales@alpha1.example.com", "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.userA.CreateForwarder(ctx, "team@alpha1.example.com", []string{box}); err != nil {
		t.Fatal(err)
	}
	waitMailbox(t, tn.userA, a1, box, "ACTIVE")
	node := tn.a1.NodeName()
	if node == "" {
		a, err := tn.admin.Account(ctx, a1)
		if err != nil {
			t.Fatal(err)
		}
		node = a.NodeName()
	}

	type call func(*client.Client) error
	calls := map[string]call{
		"mailboxes":   func(c *client.Client) error { _, _, err := c.Mailboxes(ctx, a1, 10, ""); return err },
		"forwarders":  func(c *client.Client) error { _, err := c.Forwarders(ctx, a1); return err },
		"mailDomains": func(c *client.Client) error { _, err := c.MailDomains(ctx, a1); return err },
		"mailLogs":    func(c *client.Client) error { _, err := c.MailLogs(ctx, box, 24); return err },
		"mailQueue":   func(c *client.Client) error { _, err := c.MailQueue(ctx, node, 10); return err },
		"createMailbox": func(c *client.Client) error {
			_, err := c.CreateMailbox(ctx, a1, "new@alpha1.example.com", "", 0)
			return err
		},
		"deleteMailbox":      func(c *client.Client) error { _, err := c.DeleteMailbox(ctx, "sales@alpha1.example.com"); return err },
		"setMailboxPassword": func(c *client.Client) error { _, err := c.SetMailboxPassword(ctx, box, ""); return err },
		"setMailboxQuota":    func(c *client.Client) error { _, err := c.SetMailboxQuota(ctx, box, 60); return err },
		"disableMailbox":     func(c *client.Client) error { _, err := c.DisableMailbox(ctx, box); return err },
		"enableMailbox":      func(c *client.Client) error { _, err := c.EnableMailbox(ctx, box); return err },
		"createForwarder": func(c *client.Client) error {
			_, err := c.CreateForwarder(ctx, "hello@alpha1.example.com", []string{"x@example.org"})
			return err
		},
		"deleteForwarder": func(c *client.Client) error { _, err := c.DeleteForwarder(ctx, "team@alpha1.example.com"); return err },
		"setCatchAll":     func(c *client.Client) error { _, err := c.SetCatchAll(ctx, "alpha1.example.com", ":fail:"); return err },
		"setAutoresponder": func(c *client.Client) error {
			_, err := c.SetAutoresponder(ctx, box, client.Autoresponder{Subject: "Away", Body: "Back on Monday."})
			return err
		},
		"deleteAutoresponder": func(c *client.Client) error { _, err := c.DeleteAutoresponder(ctx, box); return err },
		"enableDKIM":          func(c *client.Client) error { _, err := c.EnableDKIM(ctx, "alpha1.example.com"); return err },
		"rotateDKIM":          func(c *client.Client) error { _, err := c.RotateDKIM(ctx, "alpha1.example.com"); return err },
		"setSPF": func(c *client.Client) error {
			_, err := c.SetSPF(ctx, "alpha1.example.com", "v=spf1 mx -all")
			return err
		},
		"setDMARC": func(c *client.Client) error {
			_, err := c.SetDMARC(ctx, "alpha1.example.com", "v=DMARC1; p=reject")
			return err
		},
		"enableWebmail": func(c *client.Client) error { _, err := c.EnableWebmail(ctx, "alpha1.example.com"); return err },
		"setSpamFilter": func(c *client.Client) error {
			_, err := c.SetSpamFilter(ctx, "alpha1.example.com", true, 6, "JUNK_FOLDER")
			return err
		},
		"trainSpam":      func(c *client.Client) error { _, err := c.TrainMail(ctx, box, 7, true); return err },
		"trainHam":       func(c *client.Client) error { _, err := c.TrainMail(ctx, box, 7, false); return err },
		"scanMailbox":    func(c *client.Client) error { _, err := c.ScanMailbox(ctx, box); return err },
		"flushMailQueue": func(c *client.Client) error { return c.FlushMailQueue(ctx, node) },
	}
	adminOnly := map[string]bool{"mailQueue": true, "flushMailQueue": true}
	anon := client.New(tn.s.URL(), "")

	before := mailState(t, tn, a1)
	for name, c := range calls {
		want := "NOT_FOUND"
		if adminOnly[name] {
			want = "FORBIDDEN"
		}
		wantAPICode(t, "resb: "+name, c(tn.resB), want)
		wantAPICode(t, "anonymous: "+name, c(anon), "UNAUTHENTICATED")
		if adminOnly[name] {
			wantAPICode(t, "resa: "+name, c(tn.resA), "FORBIDDEN")
			wantAPICode(t, "user: "+name, c(tn.userA), "FORBIDDEN")
		}
	}
	if after := mailState(t, tn, a1); after != before {
		t.Fatalf("refused calls changed the mail of alpha1:\nbefore %s\nafter  %s", before, after)
	}
	// Nor may alpha1's owner or reseller touch bravo1's mail.
	b1 := tn.b1.ID
	bBefore := mailState(t, tn, b1)
	for _, c := range []*client.Client{tn.userA, tn.resA} {
		for what, err := range map[string]error{
			"mailboxes":     func() error { _, _, err := c.Mailboxes(ctx, b1, 10, ""); return err }(),
			"forwarders":    func() error { _, err := c.Forwarders(ctx, b1); return err }(),
			"createMailbox": func() error { _, err := c.CreateMailbox(ctx, b1, "x@bravo1.example.com", "", 0); return err }(),
			"createForwarder": func() error {
				_, err := c.CreateForwarder(ctx, "x@bravo1.example.com", []string{"y@example.org"})
				return err
			}(),
			"enableDKIM": func() error { _, err := c.EnableDKIM(ctx, "bravo1.example.com"); return err }(),
			"setSPF":     func() error { _, err := c.SetSPF(ctx, "bravo1.example.com", "v=spf1 -all"); return err }(),
		} {
			wantAPICode(t, "bravo1's "+what, err, "NOT_FOUND")
		}
	}
	if after := mailState(t, tn, b1); after != bBefore {
		t.Fatalf("refused calls changed the mail of bravo1: %s -> %s", bBefore, after)
	}

	// The owner, its reseller and the admin may each do all the rest (in
	// an order where each call has what it needs).
	order := []string{"mailboxes", "forwarders", "mailDomains", "mailLogs", "setMailboxPassword", "setMailboxQuota",
		"disableMailbox", "enableMailbox", "createForwarder", "deleteForwarder", "setCatchAll", "setAutoresponder",
		"deleteAutoresponder", "setSPF", "setDMARC", "enableWebmail", "setSpamFilter", "trainSpam", "trainHam",
		"scanMailbox", "deleteMailbox", "createMailbox"}
	for _, who := range []struct {
		name string
		c    *client.Client
	}{{"user", tn.userA}, {"resa", tn.resA}, {"admin", tn.admin}} {
		for _, name := range order {
			if err := calls[name](who.c); err != nil {
				t.Fatalf("%s: %s: %v", who.name, name, err)
			}
			if name == "deleteMailbox" {
				// Wait until it is gone before it is made again.
				testenv.WaitFor(t, 15*time.Second, "sales deleted", func() bool {
					list, _, err := who.c.Mailboxes(ctx, a1, 50, "")
					if err != nil {
						t.Fatal(err)
					}
					for _, m := range list {
						if m.Address == "sales@alpha1.example.com" {
							return false
						}
					}
					return true
				})
				// The next role deletes it again: make it exist.
				if _, err := who.c.CreateMailbox(ctx, a1, "sales@alpha1.example.com", "", 0); err != nil {
					t.Fatalf("%s: recreate sales: %v", who.name, err)
				}
			}
			if name == "createMailbox" {
				if _, err := who.c.DeleteMailbox(ctx, "new@alpha1.example.com"); err != nil {
					t.Fatal(err)
				}
				testenv.WaitFor(t, 15*time.Second, "new deleted", func() bool {
					list, _, _ := who.c.Mailboxes(ctx, a1, 50, "")
					for _, m := range list {
						if m.Address == "new@alpha1.example.com" {
							return false
						}
					}
					return true
				})
			}
		}
		// deleteForwarder took it: the next role deletes it again.
		if _, err := who.c.CreateForwarder(ctx, "team@alpha1.example.com", []string{box}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"mailQueue", "flushMailQueue", "enableDKIM"} {
		if err := calls[name](tn.admin); err != nil {
			t.Fatalf("admin: %s: %v", name, err)
		}
	}

	// Every mutation that succeeded left an audit event.
	for _, action := range []string{"createMailbox", "deleteMailbox", "setMailboxPassword", "setMailboxQuota", "disableMailbox",
		"enableMailbox", "createForwarder", "deleteForwarder", "setCatchAll", "setAutoresponder", "deleteAutoresponder", "enableDKIM",
		"setSPF", "setDMARC", "enableWebmail", "setSpamFilter", "trainSpam", "trainHam", "scanMailbox", "flushMailQueue"} {
		evs, _, err := tn.admin.AuditEvents(ctx, client.AuditFilter{Action: action}, 50, "")
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for _, ev := range evs {
			ok = ok || ev.Result == "ok"
		}
		if !ok {
			t.Errorf("no audit event of %s: %+v", action, evs)
		}
	}
}

// mailState is an account's mail as its specs stand (statuses aside).
func mailState(t *testing.T, tn *tenants, account string) string {
	t.Helper()
	set, err := tn.s.Store().GetMail(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for addr, m := range set.Mailboxes {
		parts = append(parts, fmt.Sprintf("%s@%d", addr, m.Generation))
	}
	for name, d := range set.Domains {
		parts = append(parts, fmt.Sprintf("%s@%d", name, d.Generation))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// TestMailboxLifecycle: createMailbox with a generated password that is
// shown once and stored only sealed to the node's key; the controller
// ensures domain then mailbox on the node, usage is live, the plan's
// limits refuse with QUOTA_EXCEEDED and bad input with INVALID_INPUT
// without writing anything, and suspension reaches the node.
func TestMailboxLifecycle(t *testing.T) {
	tn, agents := mailTenants(t)
	ctx := context.Background()
	a1 := tn.a1.ID
	p, err := tn.userA.CreateMailbox(ctx, a1, "Info@Alpha1.example.com", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.Password == nil || len(*p.Password) < 12 || p.Mailbox.Address != "info@alpha1.example.com" || p.Mailbox.Status != "PENDING" || p.Mailbox.QuotaMB != 100 {
		t.Fatalf("payload %+v", p)
	}
	pw := *p.Password
	m := waitMailbox(t, tn.userA, a1, "info@alpha1.example.com", "ACTIVE")
	// Live reads are gated (a few a second per user): a listing the gate
	// refuses shows the last known usage (the ensure's), one it admits the
	// node's answer.
	if m.UsedBytes == nil || (*m.UsedBytes != 5<<20 && *m.UsedBytes != 1000) {
		t.Fatalf("usage neither live nor last known: %+v", m)
	}
	testenv.WaitFor(t, 10*time.Second, "live usage", func() bool {
		list, _, err := tn.userA.Mailboxes(ctx, a1, 50, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(list) == 1 && list[0].UsedBytes != nil && *list[0].UsedBytes == 5<<20 && *list[0].Messages == 42
	})
	if n := len(ag0(t, tn, agents).tasks("mail_usage")); n > 12 {
		t.Errorf("%d usage reads reached the node while polling; the gate should hold them to a few a second", n)
	}

	// The password is in etcd only sealed, and opens with the node's key.
	raw := tn.s.RawEtcd(t)
	resp, err := raw.Get(ctx, "/npanel/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), pw) {
			t.Fatalf("the clear password is in %s", kv.Key)
		}
	}
	node, _ := tn.admin.Account(ctx, a1)
	ag := agents[node.NodeName()]
	ensures := ag.tasks("ensure_mailbox")
	if len(ensures) == 0 {
		t.Fatal("no ensure_mailbox reached the node")
	}
	sealed := ensures[0].GetEnsureMailbox().GetSealedPassword()
	clear, err := pki.Unseal(ag.key, sealed, agentpb.MailPasswordSealContext("info@alpha1.example.com"))
	if err != nil || string(clear) != pw {
		t.Fatalf("unseal: %q %v", clear, err)
	}
	if len(ag.tasks("ensure_mail_domain")) == 0 {
		t.Fatal("the domain was not ensured")
	}

	// Refusals change nothing.
	before := mailState(t, tn, a1)
	for _, c := range []struct {
		what string
		err  func() error
		code string
	}{
		{"foreign domain", func() error { _, err := tn.userA.CreateMailbox(ctx, a1, "x@bravo1.example.com", "", 0); return err }, "INVALID_INPUT"},
		{"bad local part", func() error { _, err := tn.userA.CreateMailbox(ctx, a1, "a/b@alpha1.example.com", "", 0); return err }, "INVALID_INPUT"},
		{"weak password", func() error {
			_, err := tn.userA.CreateMailbox(ctx, a1, "x@alpha1.example.com", "password", 0)
			return err
		}, "INVALID_INPUT"},
		{"quota too small", func() error { _, err := tn.userA.CreateMailbox(ctx, a1, "x@alpha1.example.com", "", 10); return err }, "INVALID_INPUT"},
		{"quota above plan disk", func() error { _, err := tn.userA.CreateMailbox(ctx, a1, "x@alpha1.example.com", "", 200); return err }, "QUOTA_EXCEEDED"},
		{"exists", func() error { _, err := tn.userA.CreateMailbox(ctx, a1, "info@alpha1.example.com", "", 0); return err }, "CONFLICT"},
		{"forwarder loop", func() error {
			if _, err := tn.userA.CreateForwarder(ctx, "a@alpha1.example.com", []string{"b@alpha1.example.com"}); err != nil {
				t.Fatal(err)
			}
			before = mailState(t, tn, a1)
			_, err := tn.userA.CreateForwarder(ctx, "b@alpha1.example.com", []string{"a@alpha1.example.com"})
			return err
		}, "INVALID_INPUT"},
		{"catch-all to no mailbox", func() error { _, err := tn.userA.SetCatchAll(ctx, "alpha1.example.com", "nobody"); return err }, "INVALID_INPUT"},
		{"bad SPF", func() error { _, err := tn.userA.SetSPF(ctx, "alpha1.example.com", "v=spf2 all"); return err }, "INVALID_INPUT"},
		{"bad DMARC", func() error { _, err := tn.userA.SetDMARC(ctx, "alpha1.example.com", "p=none"); return err }, "INVALID_INPUT"},
		{"bad spam score", func() error { _, err := tn.userA.SetSpamFilter(ctx, "alpha1.example.com", true, 99, ""); return err }, "INVALID_INPUT"},
	} {
		wantAPICode(t, c.what, c.err(), c.code)
		if after := mailState(t, tn, a1); after != before {
			t.Fatalf("%s changed the mail:\nbefore %s\nafter  %s", c.what, before, after)
		}
	}
	for _, addr := range []string{"two@alpha1.example.com", "three@alpha1.example.com"} {
		if _, err := tn.userA.CreateMailbox(ctx, a1, addr, "", 0); err != nil {
			t.Fatal(err)
		}
	}
	_, err = tn.userA.CreateMailbox(ctx, a1, "four@alpha1.example.com", "", 0)
	wantAPICode(t, "fourth mailbox on a plan of 3", err, "QUOTA_EXCEEDED")

	// A node without the mail role takes no mailbox.
	st := tn.s.Store()
	if _, err := st.UpdateNode(ctx, node.NodeName(), func(n *store.Node) error {
		n.Roles = slices.DeleteFunc(n.Roles, func(r string) bool { return r == "mail" })
		return nil
	}, store.NewAuditEvent("test", "", "updateNode", node.NodeName(), "ok")); err != nil {
		t.Fatal(err)
	}
	_, err = tn.userA.CreateMailbox(ctx, a1, "x@alpha1.example.com", "", 0)
	wantAPICode(t, "node without the mail role", err, "INVALID_INPUT")
	if !strings.Contains(err.Error(), "mail role") {
		t.Errorf("refusal does not name the role: %v", err)
	}
	if _, err := st.UpdateNode(ctx, node.NodeName(), func(n *store.Node) error {
		n.Roles = append(n.Roles, "mail")
		return nil
	}, store.NewAuditEvent("test", "", "updateNode", node.NodeName(), "ok")); err != nil {
		t.Fatal(err)
	}

	// Suspending the account ensures its mail again with suspended set.
	if _, err := tn.admin.AccountAction(ctx, "suspendAccount", a1); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "suspended ensures", func() bool {
		for _, e := range ag.tasks("ensure_mailbox") {
			if e.GetEnsureMailbox().GetSuspended() && e.GetEnsureMailbox().GetAddress() == "info@alpha1.example.com" {
				if len(e.GetEnsureMailbox().GetSealedPassword()) != 0 {
					t.Fatal("the applied password was sent again")
				}
				return true
			}
		}
		return false
	})

	// A node that does not answer: the listing shows the last usage the
	// node reported (its last ensure), without an error, within seconds.
	ag.stop()
	start := time.Now()
	list, _, err := tn.userA.Mailboxes(ctx, a1, 50, "")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("listing took %v with the node silent", d)
	}
	for _, m := range list {
		if m.Address == "info@alpha1.example.com" && (m.UsedBytes == nil || *m.UsedBytes != 1000) {
			t.Errorf("last known usage not shown: %+v", m)
		}
	}
}

// ag0 is the fake agent of alpha1's node.
func ag0(t *testing.T, tn *tenants, agents map[string]*fakeMailAgent) *fakeMailAgent {
	t.Helper()
	a, err := tn.admin.Account(context.Background(), tn.a1.ID)
	if err != nil {
		t.Fatal(err)
	}
	return agents[a.NodeName()]
}

// TestMailDKIMPublished: enableDKIM has the node create a key, the
// controller publishes its TXT record in the account's zone (split into
// strings of at most 255 bytes), then the selector signs; rotateDKIM
// publishes a new selector before it signs and retires the old one.
// setSPF and setDMARC replace the records the zone started with.
func TestMailDKIMPublished(t *testing.T) {
	tn, _ := mailTenants(t)
	ctx := context.Background()
	a1 := tn.a1.ID
	const dom = "alpha1.example.com"
	d, err := tn.userA.EnableDKIM(ctx, dom)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.DKIM) != 1 || d.DKIM[0].Signing {
		t.Fatalf("after enableDKIM %+v", d.DKIM)
	}
	// (The default SPF and DMARC records need a DNS server to be filled
	// in: TestDefaultMailRecords covers them.)
	sel := d.DKIM[0].Selector
	signing := func(selector string) bool {
		ds, err := tn.userA.MailDomains(ctx, a1)
		if err != nil {
			t.Fatal(err)
		}
		for _, md := range ds {
			for _, k := range md.DKIM {
				if k.Selector == selector {
					return k.Signing && md.Status == "ACTIVE"
				}
			}
		}
		return false
	}
	// No DNS server runs here: serve stands for one applying the zone as
	// written. A selector signs only once its record is served.
	serve := func() {
		if _, err := tn.s.Store().UpdateZone(ctx, dom, func(z *store.Zone) error {
			z.AppliedGeneration, z.Status = z.Generation, store.ZoneActive
			return nil
		}, store.NewAuditEvent("test", "", "serveZone", dom, "ok")); err != nil {
			t.Fatal(err)
		}
	}
	testenv.WaitFor(t, 15*time.Second, sel+" published", func() bool {
		d, err := tn.userA.MailDomains(ctx, a1)
		if err != nil {
			t.Fatal(err)
		}
		z, _, err := tn.s.Store().GetZone(ctx, dom)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range z.Records {
			if r.Name == sel+"._domainkey."+dom+"." {
				if signing(sel) || len(d) != 1 || d[0].DKIM[0].Signing {
					t.Fatal("signing before the zone is served")
				}
				return true
			}
		}
		return false
	})
	testenv.WaitFor(t, 15*time.Second, sel+" signing", func() bool { serve(); return signing(sel) })
	zoneTXT := func(name string) string {
		z, _, err := tn.s.Store().GetZone(ctx, dom)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range z.Records {
			if r.Type == "TXT" && r.Name == name {
				return r.Content
			}
		}
		return ""
	}
	txt := zoneTXT(sel + "._domainkey." + dom + ".")
	if !strings.HasPrefix(txt, `"v=DKIM1; k=rsa; p=`) || !strings.Contains(txt, `" "`) {
		t.Fatalf("DKIM record %q", txt)
	}

	d, err = tn.userA.RotateDKIM(ctx, dom)
	if err != nil {
		t.Fatal(err)
	}
	next := d.DKIM[len(d.DKIM)-1].Selector
	if next == sel {
		t.Fatalf("rotation reused %s", sel)
	}
	testenv.WaitFor(t, 15*time.Second, next+" signing", func() bool { serve(); return signing(next) })
	if signing(sel) || zoneTXT(sel+"._domainkey."+dom+".") == "" || zoneTXT(next+"._domainkey."+dom+".") == "" {
		t.Fatal("after rotation: the old selector signs or a record is missing")
	}

	if _, err := tn.userA.SetSPF(ctx, dom, "v=spf1 mx -all"); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.userA.SetDMARC(ctx, dom, "v=DMARC1; p=reject"); err != nil {
		t.Fatal(err)
	}
	if got := zoneTXT(dom + "."); got != `"v=spf1 mx -all"` {
		t.Fatalf("SPF %q", got)
	}
	ds, err := tn.userA.MailDomains(ctx, a1)
	if err != nil || len(ds) != 1 || ds[0].SPF == nil || *ds[0].SPF != "v=spf1 mx -all" || ds[0].DMARC == nil || *ds[0].DMARC != "v=DMARC1; p=reject" {
		t.Fatalf("mailDomains after setSPF and setDMARC: %+v %v", ds, err)
	}
	if got := zoneTXT("_dmarc." + dom + "."); got != `"v=DMARC1; p=reject"` {
		t.Fatalf("DMARC %q", got)
	}
}

// TestMailDomainRemoval: removeDomain is refused while the domain has
// live mailboxes or forwarders; once they are deleted it marks the mail
// domain deleted (the node is told to remove it), and another account
// cannot add the domain while that mail is still being removed.
func TestMailDomainRemoval(t *testing.T) {
	tn, agents := mailTenants(t)
	ctx := context.Background()
	for _, p := range []string{"basic", "premium"} {
		if _, err := tn.admin.UpdatePlan(ctx, p, client.PlanUpdate{Domains: ptr(3)}); err != nil {
			t.Fatal(err)
		}
	}
	a1 := tn.a1.ID
	const extra = "extra1.example.com"
	if _, err := tn.userA.AddDomain(ctx, a1, extra, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.userA.CreateMailbox(ctx, a1, "x@"+extra, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := tn.userA.CreateForwarder(ctx, "f@"+extra, []string{"x@" + extra}); err != nil {
		t.Fatal(err)
	}
	waitMailbox(t, tn.userA, a1, "x@"+extra, "ACTIVE")
	err := tn.userA.RemoveDomain(ctx, a1, extra)
	wantAPICode(t, "remove a domain with mail", err, "CONFLICT")
	if !strings.Contains(err.Error(), "1 mailboxes and 1 forwarders") {
		t.Errorf("refusal does not count the mail: %v", err)
	}
	if _, err := tn.userA.DeleteForwarder(ctx, "f@"+extra); err != nil {
		t.Fatal(err)
	}
	// The node stops answering: the mail stays until it is removed there.
	ag0(t, tn, agents).stop()
	if _, err := tn.userA.DeleteMailbox(ctx, "x@"+extra); err != nil {
		t.Fatal(err)
	}
	if err := tn.userA.RemoveDomain(ctx, a1, extra); err != nil {
		t.Fatal(err)
	}
	set, err := tn.s.Store().GetMail(ctx, a1)
	if err != nil {
		t.Fatal(err)
	}
	if d := set.Domains[extra]; d == nil || !d.Deleted {
		t.Fatalf("mail domain of the removed domain: %+v", d)
	}
	_, err = tn.resB.AddDomain(ctx, tn.b1.ID, extra, "")
	wantAPICode(t, "add a domain whose mail another account still has", err, "CONFLICT")
}

// TestMailboxDeleteRetry: a mailbox whose deletion failed shows FAILED;
// createMailbox says to run deleteMailbox again, and deleteMailbox sends
// the deletion again (a new generation) until it succeeds.
func TestMailboxDeleteRetry(t *testing.T) {
	tn, agents := mailTenants(t)
	ctx := context.Background()
	a1 := tn.a1.ID
	const addr = "gone@alpha1.example.com"
	if _, err := tn.userA.CreateMailbox(ctx, a1, addr, "", 0); err != nil {
		t.Fatal(err)
	}
	waitMailbox(t, tn.userA, a1, addr, "ACTIVE")
	ag := ag0(t, tn, agents)
	ag.failing("delete_mailbox", true)
	if _, err := tn.userA.DeleteMailbox(ctx, addr); err != nil {
		t.Fatal(err)
	}
	waitMailbox(t, tn.userA, a1, addr, "FAILED")
	_, err := tn.userA.CreateMailbox(ctx, a1, addr, "", 0)
	wantAPICode(t, "create over a failed deletion", err, "CONFLICT")
	if !strings.Contains(err.Error(), "deleteMailbox") {
		t.Errorf("the refusal does not say how to retry: %v", err)
	}
	ag.failing("delete_mailbox", false)
	if _, err := tn.userA.DeleteMailbox(ctx, addr); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "mailbox dropped", func() bool {
		set, err := tn.s.Store().GetMail(ctx, a1)
		if err != nil {
			t.Fatal(err)
		}
		_, ok := set.Mailboxes[addr]
		return !ok
	})
}

// TestMailPlanLimits: a plan change cannot bypass the mailbox limits:
// updatePlan lowering mailboxes below what an account has, or disk below a
// mailbox's quota, and changeAccountPlan to a plan with fewer mailboxes
// are refused with QUOTA_EXCEEDED.
func TestMailPlanLimits(t *testing.T) {
	tn, _ := mailTenants(t)
	ctx := context.Background()
	a1 := tn.a1.ID
	for _, addr := range []string{"one@alpha1.example.com", "two@alpha1.example.com"} {
		if _, err := tn.userA.CreateMailbox(ctx, a1, addr, "", 100); err != nil {
			t.Fatal(err)
		}
	}
	_, err := tn.admin.UpdatePlan(ctx, "basic", client.PlanUpdate{Mailboxes: ptr(1)})
	wantAPICode(t, "lower mailboxes below use", err, "QUOTA_EXCEEDED")
	_, err = tn.admin.UpdatePlan(ctx, "basic", client.PlanUpdate{DiskMB: ptr(int64(80))})
	wantAPICode(t, "lower disk below a mailbox quota", err, "QUOTA_EXCEEDED")
	if !strings.Contains(err.Error(), "mailbox") {
		t.Errorf("refusal does not name the mailbox: %v", err)
	}
	if _, err := tn.admin.UpdatePlan(ctx, "basic", client.PlanUpdate{Mailboxes: ptr(2)}); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"one@bravo1.example.com", "two@bravo1.example.com", "three@bravo1.example.com"} {
		if _, err := tn.resB.CreateMailbox(ctx, tn.b1.ID, addr, "", 100); err != nil {
			t.Fatal(err)
		}
	}
	_, err = tn.admin.ChangeAccountPlan(ctx, "bravo1", "basic")
	wantAPICode(t, "move to a plan with fewer mailboxes", err, "QUOTA_EXCEEDED")
}

// TestMailboxBehindFailedDomain: a mailbox waiting for a domain that
// failed on the node shows the domain's reason; the next createMailbox
// sends the domain again, and both mailboxes come up.
func TestMailboxBehindFailedDomain(t *testing.T) {
	tn, agents := mailTenants(t)
	ctx := context.Background()
	a1 := tn.a1.ID
	ag := ag0(t, tn, agents)
	ag.failing("ensure_mail_domain", true)
	if _, err := tn.userA.CreateMailbox(ctx, a1, "one@alpha1.example.com", "", 0); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "the domain's failure on the mailbox", func() bool {
		list, _, err := tn.userA.Mailboxes(ctx, a1, 50, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(list) == 1 && list[0].Reason != nil && strings.Contains(*list[0].Reason, "domain alpha1.example.com failed: node refused")
	})
	ag.failing("ensure_mail_domain", false)
	if _, err := tn.userA.CreateMailbox(ctx, a1, "two@alpha1.example.com", "", 0); err != nil {
		t.Fatal(err)
	}
	waitMailbox(t, tn.userA, a1, "one@alpha1.example.com", "ACTIVE")
	waitMailbox(t, tn.userA, a1, "two@alpha1.example.com", "ACTIVE")
}

// TestMailRequestsRateLimited: scans and trainings are tasks through etcd
// and the node: a user looping on them is refused RATE_LIMITED after a
// short burst, as log reads are.
func TestMailRequestsRateLimited(t *testing.T) {
	tn, _ := mailTenants(t)
	ctx := context.Background()
	const addr = "info@alpha1.example.com"
	if _, err := tn.userA.CreateMailbox(ctx, tn.a1.ID, addr, "", 0); err != nil {
		t.Fatal(err)
	}
	waitMailbox(t, tn.userA, tn.a1.ID, addr, "ACTIVE")
	var limited error
	for i := 0; i < 12 && limited == nil; i++ {
		var err error
		if i%2 == 0 {
			_, err = tn.userA.ScanMailbox(ctx, addr)
		} else {
			_, err = tn.userA.TrainMail(ctx, addr, 1, true)
		}
		if err != nil {
			limited = err
		}
	}
	wantAPICode(t, "a loop of scans and trainings", limited, "RATE_LIMITED")
}

// TestMailRoleNeeded: the mail role cannot be taken off a node whose
// accounts have mail domains or mailboxes (CONFLICT), as web, db and dns
// cannot.
func TestMailRoleNeeded(t *testing.T) {
	tn, _ := mailTenants(t)
	ctx := context.Background()
	if _, err := tn.userA.CreateMailbox(ctx, tn.a1.ID, "info@alpha1.example.com", "", 0); err != nil {
		t.Fatal(err)
	}
	acc, err := tn.admin.Account(ctx, tn.a1.ID)
	if err != nil {
		t.Fatal(err)
	}
	node := acc.NodeName()
	n, err := tn.s.Store().GetNode(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, r := range n.Roles {
		if r != "mail" {
			roles = append(roles, strings.ToUpper(r))
		}
	}
	_, err = tn.admin.UpdateNode(ctx, node, client.NodeUpdate{Roles: roles})
	wantAPICode(t, "take the mail role off a node with mail", err, "CONFLICT")
	if !strings.Contains(err.Error(), "info@alpha1.example.com") {
		t.Errorf("refusal does not name the mail: %v", err)
	}
}

// TestForwarderLoopAcrossAccounts: a forwarder that would loop through
// another account's forwarders (A x@a → y@b, B y@b → x@a) is refused with
// the same generic error as a loop within the account.
func TestForwarderLoopAcrossAccounts(t *testing.T) {
	tn, _ := mailTenants(t)
	ctx := context.Background()
	if _, err := tn.userA.CreateForwarder(ctx, "x@alpha1.example.com", []string{"y@bravo1.example.com"}); err != nil {
		t.Fatal(err)
	}
	_, err := tn.resB.CreateForwarder(ctx, "y@bravo1.example.com", []string{"x@alpha1.example.com"})
	wantAPICode(t, "a loop across accounts", err, "INVALID_INPUT")
	if !strings.Contains(err.Error(), "makes a loop") || strings.Contains(err.Error(), "alpha1") {
		t.Errorf("refusal is not the generic one or tells the other account's data: %v", err)
	}
	if _, err := tn.resB.CreateForwarder(ctx, "z@bravo1.example.com", []string{"x@alpha1.example.com"}); err != nil {
		t.Fatalf("a chain that does not come back: %v", err)
	}
}

// TestMailDomainRemovalRace: createMailbox racing removeDomain never
// leaves a live mailbox on a domain the account no longer serves: either
// the mailbox is created and the removal refused, or the removal wins and
// the creation is refused (re-checked inside the mail transaction).
func TestMailDomainRemovalRace(t *testing.T) {
	tn, _ := mailTenants(t)
	ctx := context.Background()
	if _, err := tn.admin.UpdatePlan(ctx, "basic", client.PlanUpdate{Domains: ptr(3)}); err != nil {
		t.Fatal(err)
	}
	a1 := tn.a1.ID
	for i := range 15 {
		dom := fmt.Sprintf("race%d.example.com", i)
		if _, err := tn.userA.AddDomain(ctx, a1, dom, ""); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var createErr, removeErr error
		wg.Add(2)
		go func() { defer wg.Done(); _, createErr = tn.userA.CreateMailbox(ctx, a1, "x@"+dom, "", 0) }()
		go func() { defer wg.Done(); removeErr = tn.userA.RemoveDomain(ctx, a1, dom) }()
		wg.Wait()
		a, err := tn.s.Store().GetMail(ctx, a1)
		if err != nil {
			t.Fatal(err)
		}
		m := a.Mailboxes["x@"+dom]
		served := a.Account.SiteIndex(dom) >= 0
		if m != nil && !m.Deleted && !served {
			t.Fatalf("round %d: live mailbox on removed domain %s (create %v, remove %v)", i, dom, createErr, removeErr)
		}
		if createErr == nil {
			if _, err := tn.userA.DeleteMailbox(ctx, "x@"+dom); err != nil {
				t.Fatal(err)
			}
		}
		if served {
			if err := tn.userA.RemoveDomain(ctx, a1, dom); err != nil {
				t.Fatal(err)
			}
		}
	}
}
