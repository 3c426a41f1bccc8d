package controlplane_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/npanel/npanel/internal/testenv"
)

// Mail restores end to end: a mail node (real Exim, Dovecot, restic on
// its LOCAL target), an account with two mailboxes holding messages
// delivered through submission, a backup through the API; then mail is
// lost and brought back through the API, and read back over IMAP.

// mailBackup is an account with mailboxes and messages, backed up.
type mailBackup struct {
	n        *mailNode
	user     string
	acctID   string
	backupID string
	// pw and msgs by address: each mailbox's password and the messages
	// it held when it was backed up, in delivery order.
	pw   map[string]string
	msgs map[string][]string
}

// backedUpMailboxes starts a mail node, makes an account whose mailboxes
// are the locals given (each receiving one message per subject), and
// backs it up to a LOCAL target.
func backedUpMailboxes(t *testing.T, mailboxes map[string][]string) *mailBackup {
	t.Helper()
	requireBackupE2E(t)
	n := startMailNode(t)
	ctx := testenv.Context(t)
	gql := gqlOf(t, n.s)
	user := testUsername(t)
	acct, domain := n.account(t, user, len(mailboxes))
	mb := &mailBackup{n: n, user: user, acctID: acct.ID, pw: map[string]string{}, msgs: map[string][]string{}}
	cfg := n.ag.Config

	gql(`mutation{createBackupTarget(input:{name:"local",kind:LOCAL}){name}}`, nil, nil)
	// Not enabled: the test's createBackup is the only backup.
	gql(`mutation($p:String!){setPlanBackup(plan:$p,input:{target:"local",enabled:false}){backup{target}}}`, map[string]any{"p": "mail-" + user}, nil)

	locals := make([]string, 0, len(mailboxes))
	for l := range mailboxes {
		locals = append(locals, l)
	}
	slices.Sort(locals)
	for _, l := range locals {
		addr := l + "@" + domain
		p, err := n.s.Admin.CreateMailbox(ctx, acct.ID, addr, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		if p.Password == nil {
			t.Fatalf("no generated password for %s", addr)
		}
		mb.pw[addr] = *p.Password
		waitMailbox(t, n.s.Admin, acct.ID, addr, "ACTIVE")
		for i, subject := range mailboxes[l] {
			msg := "From: " + addr + "\r\nTo: " + addr + "\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject + "@" + domain + ">\r\n\r\n" +
				subject + " in " + addr + "\r\n"
			if err := submit(cfg.SubmissionListen, addr, mb.pw[addr], addr, []string{addr}, msg); err != nil {
				t.Fatal(err)
			}
			mb.msgs[addr] = append(mb.msgs[addr], msg)
			// One at a time: the INBOX order is the delivery order.
			testenv.WaitFor(t, 20*time.Second, subject+" in "+addr, func() bool {
				return len(inbox(t, cfg.IMAPSListen, addr, mb.pw[addr])) == i+1
			})
		}
		mb.check(t, addr, mb.msgs[addr])
	}

	var created struct{ CreateBackup struct{ ID string } }
	gql(`mutation($a:String!){createBackup(account:$a){id}}`, map[string]any{"a": user}, &created)
	mb.backupID = created.CreateBackup.ID
	b := waitBackupGQL(t, n.s, mb.backupID)
	if b.Status != "SUCCEEDED" {
		t.Fatalf("backup %s: %s (%v, error %v)", mb.backupID, b.Status, b.Failed, b.Error)
	}
	var contents struct {
		Backup struct{ Contents struct{ Mailboxes []string } }
	}
	gql(`query($id:ID!){backup(id:$id){contents{mailboxes}}}`, map[string]any{"id": mb.backupID}, &contents)
	for addr := range mb.pw {
		if !slices.Contains(contents.Backup.Contents.Mailboxes, addr) {
			t.Fatalf("backup contents name mailboxes %v, not %s", contents.Backup.Contents.Mailboxes, addr)
		}
	}
	return mb
}

// addr is local's address in the account.
func (mb *mailBackup) addr(local string) string { return local + "@" + mb.user + ".example.com" }

// check fails unless addr's INBOX, read over IMAP, holds exactly want (in
// order), each message ending with its submitted text (Exim prepends its
// headers).
func (mb *mailBackup) check(t *testing.T, addr string, want []string) {
	t.Helper()
	got := inbox(t, mb.n.ag.Config.IMAPSListen, addr, mb.pw[addr])
	if len(got) != len(want) {
		t.Fatalf("%s holds %d messages, want %d: %q", addr, len(got), len(want), subjects(got))
	}
	for i := range want {
		if !strings.HasSuffix(got[i], want[i]) {
			t.Fatalf("%s message %d: %q, want it to end with %q", addr, i+1, got[i], want[i])
		}
	}
}

// restore starts a restore with mutation (restoreBackup or
// restoreAccount; its field returns the Restore) and waits for it to
// succeed.
func (mb *mailBackup) restore(t *testing.T, mutation string, vars map[string]any) restoreGQL {
	t.Helper()
	var out map[string]struct{ ID string }
	gqlOf(t, mb.n.s)(mutation, vars, &out)
	var id string
	for _, r := range out {
		id = r.ID
	}
	if id == "" {
		t.Fatalf("%s: no restore id in %v", mutation, out)
	}
	r := waitRestoreGQL(t, mb.n.s, id)
	if r.Status != "SUCCEEDED" {
		mb.logRestore(t, id)
		t.Fatalf("restore %s: %s (restored %v, failed %v, error %v)", id, r.Status, r.Restored, r.Failed, deref(r.Error))
	}
	return r
}

// logRestore logs restore id's events and the account's mailboxes with
// their state: a mailbox the node failed to set up explains a PARTIAL.
func (mb *mailBackup) logRestore(t *testing.T, id string) {
	t.Helper()
	var out struct {
		Restore struct {
			Events []struct {
				At      time.Time
				Kind    string
				Message *string
			}
		}
	}
	gqlOf(t, mb.n.s)(`query($id:ID!){restore(id:$id){events{at kind message}}}`, map[string]any{"id": id}, &out)
	for _, e := range out.Restore.Events {
		t.Logf("restore %s: %s %s %s", id, e.At.Format("15:04:05.000"), e.Kind, deref(e.Message))
	}
	a, err := mb.n.s.Admin.Account(testenv.Context(t), mb.user)
	if err != nil || a == nil {
		t.Logf("account %s: %+v %v", mb.user, a, err)
		return
	}
	list, _, err := mb.n.s.Admin.Mailboxes(testenv.Context(t), a.ID, 10, "")
	if err != nil {
		t.Logf("mailboxes: %v", err)
	}
	for _, m := range list {
		t.Logf("mailbox %s: %s %s", m.Address, m.Status, deref(m.Reason))
	}
}

// subjects are the Subject lines of msgs, for failure messages.
func subjects(msgs []string) []string {
	var out []string
	for _, m := range msgs {
		for _, l := range strings.Split(m, "\r\n") {
			if strings.HasPrefix(l, "Subject: ") {
				out = append(out, strings.TrimPrefix(l, "Subject: "))
				break
			}
		}
	}
	return out
}

// expunge deletes over IMAP the messages of addr's INBOX whose text
// contains marker, and fails unless it deleted one.
func expunge(t *testing.T, imapAddr, addr, pw, marker string) {
	t.Helper()
	c, err := imapDial(t, imapAddr, addr, pw)
	if err != nil {
		t.Fatalf("IMAP login %s: %v", addr, err)
	}
	defer c.Close()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages == 0 {
		t.Fatalf("%s: INBOX is empty", addr)
	}
	var all imap.SeqSet
	all.AddRange(1, sel.NumMessages)
	section := &imap.FetchItemBodySection{}
	msgs, err := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var del imap.SeqSet
	for _, m := range msgs {
		if strings.Contains(string(m.FindBodySection(section)), marker) {
			del.AddNum(m.SeqNum)
		}
	}
	if nums, _ := del.Nums(); len(nums) != 1 {
		t.Fatalf("%s: %d messages hold %q, want 1", addr, len(nums), marker)
	}
	if err := c.Store(del, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Expunge().Close(); err != nil {
		t.Fatal(err)
	}
	_ = c.Logout().Wait()
}

// A MAILBOX restore in place (restoreBackup what: MAILBOX) brings back a
// message deleted from the mailbox since the backup, keeps the mailbox's
// password, and leaves the account's other mailbox as it is now: a
// message deleted there since the backup stays deleted, and one received
// since stays.
func TestBackupRestoreMailboxE2E(t *testing.T) {
	mb := backedUpMailboxes(t, map[string][]string{"info": {"info-one", "info-two"}, "sales": {"sales-one", "sales-two"}})
	cfg := mb.n.ag.Config
	info, sales := mb.addr("info"), mb.addr("sales")

	// Since the backup: info loses its first message; sales loses its
	// first and receives a third.
	expunge(t, cfg.IMAPSListen, info, mb.pw[info], "info-one in ")
	expunge(t, cfg.IMAPSListen, sales, mb.pw[sales], "sales-one in ")
	third := "From: " + sales + "\r\nTo: " + sales + "\r\nSubject: sales-three\r\nMessage-ID: <sales-three@" + mb.user + ".example.com>\r\n\r\nsince the backup\r\n"
	if err := submit(cfg.SubmissionListen, sales, mb.pw[sales], sales, []string{sales}, third); err != nil {
		t.Fatal(err)
	}
	salesNow := []string{mb.msgs[sales][1], third}
	testenv.WaitFor(t, 20*time.Second, "sales-three delivered", func() bool {
		return len(inbox(t, cfg.IMAPSListen, sales, mb.pw[sales])) == 2
	})
	mb.check(t, sales, salesNow)
	// The message is gone before the restore, so its return below is the
	// restore's doing.
	mb.check(t, info, mb.msgs[info][1:])

	r := mb.restore(t, `mutation($in:RestoreBackupInput!){restoreBackup(input:$in){id}}`, map[string]any{"in": map[string]any{
		"backup": mb.backupID, "what": "MAILBOX", "mailbox": info, "into": "IN_PLACE"}})
	if !slices.Contains(r.Restored, "mailbox:"+info) {
		t.Fatalf("restored %v, want mailbox:%s", r.Restored, info)
	}
	mb.check(t, info, mb.msgs[info])
	mb.check(t, sales, salesNow)

	// The restored mailbox takes new mail as before.
	after := "From: " + info + "\r\nTo: " + info + "\r\nSubject: info-after\r\n\r\nafter the restore\r\n"
	if err := submit(cfg.SubmissionListen, info, mb.pw[info], info, []string{info}, after); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "info-after delivered", func() bool {
		return len(inbox(t, cfg.IMAPSListen, info, mb.pw[info])) == 3
	})
	mb.check(t, info, append(slices.Clone(mb.msgs[info]), after))
}

// A deleted account restored with restoreAccount (a restore of ALL) has
// its mailboxes back: they log in with their passwords of the backup and
// hold the messages they held then, one deleted before the account was
// included.
func TestBackupRestoreAccountMailE2E(t *testing.T) {
	mb := backedUpMailboxes(t, map[string][]string{"info": {"info-one", "info-two"}, "sales": {"sales-one"}})
	cfg := mb.n.ag.Config
	ctx := testenv.Context(t)
	info, sales := mb.addr("info"), mb.addr("sales")

	expunge(t, cfg.IMAPSListen, info, mb.pw[info], "info-one in ")
	mb.check(t, info, mb.msgs[info][1:])
	if _, err := mb.n.s.Admin.AccountAction(ctx, "deleteAccount", mb.acctID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, "account deleted", func() bool {
		a, err := mb.n.s.Admin.Account(ctx, mb.user)
		if err != nil {
			t.Fatal(err)
		}
		return a == nil
	})
	// Gone from Dovecot before the restore: what logs in below, the
	// restore brought back.
	for _, addr := range []string{info, sales} {
		testenv.WaitFor(t, 20*time.Second, addr+" refuses IMAP", func() bool {
			c, err := imapDial(t, cfg.IMAPSListen, addr, mb.pw[addr])
			if c != nil {
				c.Close()
			}
			return err != nil
		})
	}

	start := time.Now()
	r := mb.restore(t, `mutation($b:ID!){restoreAccount(backup:$b){id}}`, map[string]any{"b": mb.backupID})
	t.Logf("restoreAccount took %s (restored %v)", time.Since(start), r.Restored)
	for _, addr := range []string{info, sales} {
		if !slices.Contains(r.Restored, "mailbox:"+addr) {
			t.Fatalf("restored %v, want mailbox:%s", r.Restored, addr)
		}
	}
	a, err := mb.n.s.Admin.Account(ctx, mb.user)
	if err != nil || a == nil {
		t.Fatalf("account %s after the restore: %+v %v", mb.user, a, err)
	}
	waitAccountActive(t, mb.n.s.Admin, a.ID)
	for _, addr := range []string{info, sales} {
		waitMailbox(t, mb.n.s.Admin, a.ID, addr, "ACTIVE")
	}
	mb.check(t, info, mb.msgs[info])
	mb.check(t, sales, mb.msgs[sales])

	list, _, err := mb.n.s.Admin.Mailboxes(ctx, a.ID, 10, "")
	if err != nil || len(list) != 2 {
		t.Fatalf("mailboxes after the restore: %+v %v", list, err)
	}
}
