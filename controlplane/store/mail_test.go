package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
)

// placedMailAccount creates an account placed on node n1.
func placedMailAccount(t *testing.T, f *treeFixture, user string) *store.Account {
	t.Helper()
	a, err := f.create(user, user+".example.com")
	if err != nil {
		t.Fatal(err)
	}
	a, err = f.s.UpdateAccount(context.Background(), a.ID, func(a *store.Account) error { a.Node = "n1"; return nil })
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The API's specs and the controller's statuses of an account's mail go
// through one sequence key: ChangeMail writes specs with audit, SyncMail
// writes tasks whose done notices it consumes when it records their
// outcome, and a refused change writes nothing.
func TestMailChangeSyncAndOutcome(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	a := placedMailAccount(t, f, "alice")
	sealed := []byte("sealed-bytes")
	err := f.s.ChangeMail(ctx, a.ID, func(set *store.MailSet) (*store.MailChange, error) {
		if len(set.Mailboxes)+len(set.Domains) != 0 {
			t.Errorf("new account has mail: %+v", set)
		}
		return &store.MailChange{
			Domains:   []*store.MailDomain{{Domain: "alice.example.com", Generation: 1}},
			Mailboxes: []*store.Mailbox{{Address: "bob@alice.example.com", Domain: "alice.example.com", QuotaMB: 100, Generation: 1, SealedPassword: sealed, PasswordGeneration: 1}},
		}, nil
	}, store.NewAuditEvent("tester", "t", "createMailbox", "alice/bob@alice.example.com", "ok"))
	if err != nil {
		t.Fatal(err)
	}
	before := f.keys(t)
	refused := errors.New("refused")
	if err := f.s.ChangeMail(ctx, a.ID, func(*store.MailSet) (*store.MailChange, error) { return nil, refused }, store.NewAuditEvent("tester", "t", "x", "y", "ok")); !errors.Is(err, refused) {
		t.Fatalf("refused change: %v", err)
	}
	if after := f.keys(t); after != before {
		t.Fatalf("a refused change wrote %d keys", after-before)
	}
	set, err := f.s.GetMail(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	m := set.Mailboxes["bob@alice.example.com"]
	if m == nil || !bytes.Equal(m.SealedPassword, sealed) || set.Domains["alice.example.com"] == nil {
		t.Fatalf("set after the change: %+v", set)
	}
	if st, _ := m.State(); st != store.MailPending {
		t.Fatalf("new mailbox is %s, want PENDING", st)
	}

	// The controller sends the domain's ensure.
	err = f.s.SyncMail(ctx, a.ID, func(set *store.MailSet, finished map[string]*store.Task, budget int) (*store.MailSync, error) {
		if budget < 10 {
			t.Errorf("budget %d", budget)
		}
		ch := store.NewMailSync()
		st := &store.MailStatus{TaskAction: store.MailTaskEnsure, TaskGeneration: 1}
		ch.Domains["alice.example.com"] = st
		ch.Tasks = append(ch.Tasks, store.MailTask{Domain: "alice.example.com", Spec: &agentpb.Task{Generation: 1,
			Action: &agentpb.Task_EnsureMailDomain{EnsureMailDomain: &agentpb.EnsureMailDomainAction{Username: "alice", Domain: "alice.example.com"}}}})
		return ch, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	set, _ = f.s.GetMail(ctx, a.ID)
	id := set.Domains["alice.example.com"].Status.TaskID
	if id == "" {
		t.Fatal("the domain's status names no task")
	}
	res := &agentpb.TaskResult{TaskId: id, Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, Result: &agentpb.TaskResult_MailDomain{MailDomain: &agentpb.MailDomainResult{
		Domain: "alice.example.com", DkimKeys: []*agentpb.MailDKIMKey{{Selector: "np1", Txt: "v=DKIM1; k=rsa; p=AAAA"}}}}}
	if ok, err := f.s.CompleteTask(ctx, "n1", res, store.NewAuditEvent("node:n1", "t", "", "", "")); !ok || err != nil {
		t.Fatalf("complete: %v %v", ok, err)
	}
	notices := func() int64 {
		resp, err := f.cli.Get(ctx, "/npanel/done/mail/"+a.ID+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	if n := notices(); n != 1 {
		t.Fatalf("%d done notices after the task finished, want 1", n)
	}
	var got *store.Task
	err = f.s.SyncMail(ctx, a.ID, func(set *store.MailSet, finished map[string]*store.Task, _ int) (*store.MailSync, error) {
		got = finished[id]
		ch := store.NewMailSync()
		if got != nil {
			ch.Domains["alice.example.com"] = &store.MailStatus{ObservedGeneration: 1, State: store.MailActive, Served: true}
			ch.Answered = true
		}
		return ch, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.Status != store.TaskSucceeded {
		t.Fatalf("finished task: %+v", got)
	}
	if r, err := got.MailDomainResult(); err != nil || r.GetDkimKeys()[0].GetTxt() == "" {
		t.Fatalf("result %v %v", r, err)
	}
	if n := notices(); n != 0 {
		t.Fatalf("%d done notices left after the outcome was recorded", n)
	}
	set, _ = f.s.GetMail(ctx, a.ID)
	if st, _ := set.Domains["alice.example.com"].State(); st != store.MailActive {
		t.Fatalf("domain is %s after its ensure succeeded", st)
	}

	// A mailbox whose removal succeeded is dropped with its status.
	err = f.s.SyncMail(ctx, a.ID, func(set *store.MailSet, _ map[string]*store.Task, _ int) (*store.MailSync, error) {
		ch := store.NewMailSync()
		if _, ok := set.Mailboxes["bob@alice.example.com"]; ok {
			ch.Mailboxes["bob@alice.example.com"] = &store.MailStatus{State: store.MailDeleted}
			ch.DroppedMailboxes = []string{"bob@alice.example.com"}
		}
		return ch, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	set, _ = f.s.GetMail(ctx, a.ID)
	if len(set.Mailboxes) != 0 {
		t.Fatalf("dropped mailbox still there: %+v", set.Mailboxes)
	}
	resp, err := f.cli.Get(ctx, "/npanel/mailstate/"+a.ID+"/box/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || resp.Count != 0 {
		t.Fatalf("dropped mailbox's status: %d %v", resp.Count, err)
	}
}

// An account's mail sync that finds the account gone deletes its late
// done notices and writes nothing else.
func TestSyncMailAccountGone(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	if _, err := f.cli.Put(ctx, "/npanel/done/mail/gone/t1", "t1"); err != nil {
		t.Fatal(err)
	}
	called := false
	err := f.s.SyncMail(ctx, "gone", func(*store.MailSet, map[string]*store.Task, int) (*store.MailSync, error) {
		called = true
		return nil, nil
	})
	if err != nil || called {
		t.Fatalf("sync of a gone account: %v, fn called %v", err, called)
	}
	resp, _ := f.cli.Get(ctx, "/npanel/done/mail/gone/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if resp.Count != 0 {
		t.Fatal("late notice kept")
	}
}

// SetTXT replaces the selected TXT records at a name, keeps the others,
// splits a long value (a 2048-bit DKIM key) into quoted strings of at most
// 255 bytes, and reports no change when the record is there already.
func TestZoneSetTXT(t *testing.T) {
	z := &store.Zone{Name: "example.com", Records: []store.ZoneRecord{
		{ID: "r1", Name: "example.com.", Type: "TXT", Content: `"v=spf1 a mx ~all"`},
		{ID: "r2", Name: "example.com.", Type: "TXT", Content: `"google-site-verification=x"`},
	}}
	changed, err := z.SetTXT("example.com.", "v=spf1 mx ip4:192.0.2.1 -all", store.TXTHasPrefix("v=spf1"))
	if err != nil || !changed {
		t.Fatalf("set SPF: %v %v", changed, err)
	}
	if len(z.Records) != 2 || z.Records[0].ID != "r2" || z.Records[1].Content != `"v=spf1 mx ip4:192.0.2.1 -all"` {
		t.Fatalf("records after SPF: %+v", z.Records)
	}
	if changed, err := z.SetTXT("example.com.", "v=spf1 mx ip4:192.0.2.1 -all", store.TXTHasPrefix("v=spf1")); err != nil || changed {
		t.Fatalf("same SPF again: changed %v, %v", changed, err)
	}
	key := "v=DKIM1; k=rsa; p=" + strings.Repeat("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA", 9)
	if _, err := z.SetTXT("np1._domainkey.example.com.", key, nil); err != nil {
		t.Fatal(err)
	}
	dk := z.Records[len(z.Records)-1]
	if !strings.HasPrefix(dk.Content, `"v=DKIM1; k=rsa; p=`) || strings.Count(dk.Content, `" "`) != 1 {
		t.Fatalf("DKIM record not split in two strings: %s", dk.Content)
	}
	for _, part := range strings.Split(dk.Content, `" "`) {
		if n := len(strings.Trim(part, `"`)); n > 255 {
			t.Fatalf("a string of %d bytes", n)
		}
	}
	if changed, err := z.SetTXT("np1._domainkey.example.com.", "", nil); err != nil || !changed || len(z.Records) != 2 {
		t.Fatalf("withdraw: %v %v %+v", changed, err, z.Records)
	}
	if _, err := z.SetTXT("x.example.com.", "bad\x01value", nil); err == nil {
		t.Fatal("a control character was accepted")
	}
}

// An account's deletion removes its mail records with it: specs, statuses,
// the sequence key and late done notices.
func TestMailGoesWithTheAccount(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	a := placedMailAccount(t, f, "carol")
	err := f.s.ChangeMail(ctx, a.ID, func(*store.MailSet) (*store.MailChange, error) {
		return &store.MailChange{Domains: []*store.MailDomain{{Domain: "carol.example.com", Generation: 1}},
			Mailboxes: []*store.Mailbox{{Address: "x@carol.example.com", Domain: "carol.example.com", Generation: 1}}}, nil
	}, store.AuditEvent{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.cli.Put(ctx, "/npanel/done/mail/"+a.ID+"/t1", "t1"); err != nil {
		t.Fatal(err)
	}
	if err := f.s.FinishAccountDeletion(ctx, a.ID, nil, store.NewAuditEvent("t", "t", "deleteAccount", "carol", "ok")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/npanel/mail/", "/npanel/mailstate/", "/npanel/mailseq/", "/npanel/done/mail/"} {
		resp, err := f.cli.Get(ctx, p+a.ID, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil || resp.Count != 0 {
			t.Errorf("%s%s: %d keys left (%v)", p, a.ID, resp.Count, err)
		}
	}
}

// A mail sync larger than one transaction commits in rounds, each within
// its budget, until fn has nothing more to do.
func TestSyncMailInRounds(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	a := placedMailAccount(t, f, "dave")
	const n = 150
	for batch := 0; batch < n; batch += 50 {
		err := f.s.ChangeMail(ctx, a.ID, func(*store.MailSet) (*store.MailChange, error) {
			ch := &store.MailChange{}
			for i := batch; i < batch+50; i++ {
				addr := fmt.Sprintf("u%03d@dave.example.com", i)
				ch.Mailboxes = append(ch.Mailboxes, &store.Mailbox{Address: addr, Domain: "dave.example.com", Generation: 1})
			}
			return ch, nil
		}, store.AuditEvent{})
		if err != nil {
			t.Fatal(err)
		}
	}
	rounds := 0
	err := f.s.SyncMail(ctx, a.ID, func(set *store.MailSet, _ map[string]*store.Task, budget int) (*store.MailSync, error) {
		rounds++
		ch := store.NewMailSync()
		for addr, m := range set.Mailboxes {
			if m.Status.TaskID != "" {
				continue
			}
			if budget < 3 {
				ch.More = true
				break
			}
			budget -= 3
			ch.Mailboxes[addr] = &store.MailStatus{TaskAction: store.MailTaskEnsure, TaskGeneration: 1}
			ch.Tasks = append(ch.Tasks, store.MailTask{Mailbox: addr, Spec: &agentpb.Task{Generation: 1,
				Action: &agentpb.Task_EnsureMailbox{EnsureMailbox: &agentpb.EnsureMailboxAction{Username: "dave", Address: addr}}}})
		}
		return ch, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	set, err := f.s.GetMail(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	for addr, m := range set.Mailboxes {
		if m.Status.TaskID == "" {
			t.Fatalf("%s has no task after the sync", addr)
		}
	}
	if rounds < 4 {
		t.Fatalf("%d mailboxes in %d rounds", n, rounds)
	}
	tasks, _, err := f.s.PendingTasks(ctx, "n1")
	if err != nil || len(tasks) != n {
		t.Fatalf("%d tasks queued (%v), want %d", len(tasks), err, n)
	}
}

// TestMailboxStateAfterMove: a mailbox a moved account's new node applied
// without its password (sealed to the old node) is FAILED with a reason
// saying to set it again; once set for the new node it is not.
func TestMailboxStateAfterMove(t *testing.T) {
	m := &store.Mailbox{Address: "bob@example.com", Node: "n0", Generation: 2, PasswordGeneration: 1,
		Status: store.MailStatus{ObservedGeneration: 2, State: store.MailActive, Node: "n1"}}
	st, reason := m.State()
	if st != store.MailFailed || !strings.Contains(reason, "password must be set again after the move to n1") {
		t.Fatalf("moved without its password: %s %q", st, reason)
	}
	m.Node, m.Generation, m.PasswordGeneration = "n1", 3, 3
	m.Status.ObservedGeneration, m.Status.PasswordGeneration = 3, 3
	if st, reason := m.State(); st != store.MailActive || reason != "" {
		t.Fatalf("password set again: %s %q", st, reason)
	}
}

// A change decided on another account's mail (a forwarder loop check)
// runs again when that mail changed before the commit: two accounts
// cannot each add half of a loop at once.
func TestChangeMailComparesWhatItRead(t *testing.T) {
	f := newTreeFixture(t)
	ctx := context.Background()
	x := placedMailAccount(t, f, "xavier")
	y := placedMailAccount(t, f, "yvonne")
	fwd := func(acct *store.Account, from, to string) func(*store.MailSet) (*store.MailChange, error) {
		return func(*store.MailSet) (*store.MailChange, error) {
			d := acct.Username + ".example.com"
			return &store.MailChange{Domains: []*store.MailDomain{{Domain: d, Generation: 1, Aliases: map[string][]string{from: {to}}}}}, nil
		}
	}
	runs := 0
	err := f.s.ChangeMail(ctx, x.ID, func(set *store.MailSet) (*store.MailChange, error) {
		runs++
		theirs, err := f.s.GetMail(ctx, y.ID)
		if err != nil {
			return nil, err
		}
		if runs == 1 {
			// Y changes between this read and the commit.
			if err := f.s.ChangeMail(ctx, y.ID, fwd(y, "b", "a@xavier.example.com"), store.AuditEvent{}); err != nil {
				return nil, err
			}
		}
		ch, _ := fwd(x, "a", "b@yvonne.example.com")(set)
		ch.Read = []*store.MailSet{theirs}
		return ch, nil
	}, store.AuditEvent{})
	if err != nil {
		t.Fatal(err)
	}
	if runs != 2 {
		t.Fatalf("the change ran %d times, want 2: the other account's change went unseen", runs)
	}
}
