package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
	"github.com/npanel/npanel/pki"
)

// backupTenants is certTenants with a LOCAL target named "default", so
// that createBackup has somewhere to go.
func setupBackupTenants(t *testing.T) *certTenants {
	t.Helper()
	tn := setupCertTenants(t, pauseBackups)
	if _, err := tn.admin.CreateBackupTarget(context.Background(), client.BackupTargetInput{Name: "default", Kind: "LOCAL"}); err != nil {
		t.Fatal(err)
	}
	return tn
}

// setBackup writes what the backup controller would: the state and the
// contents of backup id.
func setBackup(t *testing.T, tn *certTenants, id string, state store.BackupState, fn func(b *store.Backup)) {
	t.Helper()
	_, err := tn.s.Store().UpdateBackup(context.Background(), id, func(b *store.Backup) ([]*store.ObjectTask, error) {
		b.Status.State = state
		b.Status.Contents = store.BackupContents{Files: true, Databases: []string{"alpha1_shop"}, Mailboxes: []string{"info@" + tn.a1Domain}, Zones: []string{tn.a1Domain}}
		b.Status.AddEvent(time.Now(), strings.ToLower(string(state)), "by the test")
		if fn != nil {
			fn(b)
		}
		return nil, nil
	}, store.AuditEvent{})
	if err != nil {
		t.Fatal(err)
	}
}

// finishAll marks every backup and restore of account still to finish
// as SUCCEEDED (the rate limits allow the next one).
func finishAll(t *testing.T, tn *certTenants, account string) {
	t.Helper()
	ctx := context.Background()
	bs, _, err := tn.s.Store().ListBackups(ctx, account, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		if b.Status.State == store.BackupPending || b.Status.State == store.BackupRunning {
			setBackup(t, tn, b.ID, store.BackupSucceeded, nil)
		}
	}
	rs, err := tn.s.Store().ListRestores(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.Status.State == store.BackupPending || r.Status.State == store.BackupRunning {
			if _, err := tn.s.Store().UpdateRestore(ctx, r.ID, func(r *store.Restore) ([]*store.ObjectTask, error) {
				r.Status.State = store.BackupSucceeded
				return nil, nil
			}, store.AuditEvent{}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// want checks err against code ("" for success).
func want(t *testing.T, what string, err error, code string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Errorf("%s: %v, want success", what, err)
		}
		return
	}
	if err == nil {
		t.Errorf("%s: succeeded, want %s", what, code)
		return
	}
	if got := client.CodeOf(err); got != code {
		t.Errorf("%s: code %q (%v), want %s", what, got, err, code)
	}
}

// TestBackupRBAC is the access matrix of every backup query, mutation
// and subscription: admin, the account's reseller, another reseller,
// the account's owner, another account's owner and an anonymous caller.
// Another tenant's backups are NOT_FOUND (null, or absent from lists),
// admin-only calls are FORBIDDEN to everyone else, and the refused calls
// change nothing.
func TestBackupRBAC(t *testing.T) {
	tn := setupBackupTenants(t)
	ctx := context.Background()
	anon := client.New(tn.s.URL(), "")
	who := []struct {
		name string
		c    *client.Client
	}{{"admin", tn.admin}, {"resa", tn.resA}, {"resb", tn.resB}, {"alphauser", tn.userA}, {"bravouser", tn.userB}, {"anonymous", anon}}
	// seen: the account's people; admin: admins alone; plans: who may
	// change the admin plan "basic".
	seen := map[string]string{"admin": "", "resa": "", "resb": "NOT_FOUND", "alphauser": "", "bravouser": "NOT_FOUND", "anonymous": "UNAUTHENTICATED"}
	adminOnly := map[string]string{"admin": "", "resa": "FORBIDDEN", "resb": "FORBIDDEN", "alphauser": "FORBIDDEN", "bravouser": "FORBIDDEN", "anonymous": "UNAUTHENTICATED"}

	b, err := tn.userA.CreateBackup(ctx, "alpha1", "")
	if err != nil {
		t.Fatal(err)
	}
	setBackup(t, tn, b.ID, store.BackupSucceeded, nil)
	del, err := tn.admin.CreateBackup(ctx, tn.a1.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	setBackup(t, tn, del.ID, store.BackupSucceeded, nil)
	r, err := tn.userA.RestoreBackup(ctx, client.RestoreInput{Backup: b.ID, What: "ZONE", Into: "IN_PLACE"})
	if err != nil {
		t.Fatal(err)
	}
	finishAll(t, tn, "alpha1")

	type op struct {
		name  string
		codes map[string]string
		call  func(c *client.Client, who string) error
	}
	ops := []op{
		{"createBackup", seen, func(c *client.Client, _ string) error {
			_, err := c.CreateBackup(ctx, "alpha1", "")
			finishAll(t, tn, "alpha1")
			return err
		}},
		{"restoreBackup", seen, func(c *client.Client, _ string) error {
			_, err := c.RestoreBackup(ctx, client.RestoreInput{Backup: b.ID, What: "FILES", Path: "public_html/index.php"})
			finishAll(t, tn, "alpha1")
			return err
		}},
		{"verifyBackup", seen, func(c *client.Client, _ string) error {
			_, err := c.VerifyBackup(ctx, b.ID)
			setBackup(t, tn, b.ID, store.BackupSucceeded, func(b *store.Backup) { b.Status.VerifiedGeneration = b.VerifyRequested })
			return err
		}},
		{"restoreAccount", map[string]string{"admin": "CONFLICT", "resa": "CONFLICT", "resb": "NOT_FOUND", "alphauser": "FORBIDDEN", "bravouser": "FORBIDDEN", "anonymous": "UNAUTHENTICATED"},
			func(c *client.Client, _ string) error { _, err := c.RestoreAccount(ctx, b.ID, ""); return err }},
		{"createBackupTarget", adminOnly, func(c *client.Client, w string) error {
			_, err := c.CreateBackupTarget(ctx, client.BackupTargetInput{Name: "t-" + w, Kind: "LOCAL"})
			return err
		}},
		{"deleteBackupTarget", adminOnly, func(c *client.Client, w string) error {
			if w == "admin" {
				_, err := c.DeleteBackupTarget(ctx, "t-admin")
				return err
			}
			_, err := c.DeleteBackupTarget(ctx, "default")
			return err
		}},
		{"setPlanBackup", map[string]string{"admin": "", "resa": "FORBIDDEN", "resb": "FORBIDDEN", "alphauser": "FORBIDDEN", "bravouser": "FORBIDDEN", "anonymous": "UNAUTHENTICATED"},
			func(c *client.Client, _ string) error {
				_, err := c.SetPlanBackup(ctx, "basic", &client.PlanBackupInput{Target: "default"})
				return err
			}},
		{"backupTargets", adminOnly, func(c *client.Client, _ string) error { _, err := c.BackupTargets(ctx); return err }},
		{"backups", seen, func(c *client.Client, _ string) error {
			list, _, err := c.Backups(ctx, "alpha1", 50, "")
			if err == nil && !hasBackup(list, b.ID) {
				t.Errorf("backups lacks %s: %+v", b.ID, list)
			}
			return err
		}},
		{"restores", seen, func(c *client.Client, _ string) error {
			list, err := c.Restores(ctx, "alpha1")
			if err == nil && len(list) == 0 {
				t.Error("restores is empty")
			}
			return err
		}},
		// Queries of one object answer null for one the caller may not see.
		{"backup", seen, func(c *client.Client, _ string) error {
			got, err := c.Backup(ctx, b.ID)
			if err == nil && got == nil {
				return errNotFound
			}
			return err
		}},
		{"restore", seen, func(c *client.Client, _ string) error {
			got, err := c.Restore(ctx, r.ID)
			if err == nil && got == nil {
				return errNotFound
			}
			return err
		}},
		{"backupEvents", seen, func(c *client.Client, _ string) error {
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			evs, err := c.BackupEvents(sctx, b.ID)
			if err != nil {
				return err
			}
			n := 0
			for e := range evs {
				n++
				if e.Backup.ID != b.ID {
					t.Errorf("event of another backup: %+v", e)
				}
			}
			if sctx.Err() != nil {
				t.Error("backupEvents of a finished backup did not end")
			}
			if n == 0 {
				return errNotFound
			}
			return nil
		}},
		// Last: it takes the backup away.
		{"deleteBackup", seen, func(c *client.Client, _ string) error { _, err := c.DeleteBackup(ctx, del.ID); return err }},
	}
	for _, o := range ops {
		// The refused first, so that nothing they might have done hides
		// behind an allowed call.
		for _, pass := range []bool{false, true} {
			for _, w := range who {
				code := o.codes[w.name]
				if allowed := code == "" || code == "CONFLICT"; allowed != pass {
					continue
				}
				err := o.call(w.c, w.name)
				if w.name == "anonymous" && o.name == "backupEvents" {
					// Refused at the websocket's connection_init.
					if err == nil {
						t.Error("an anonymous backupEvents was not refused")
					}
					continue
				}
				if err == errNotFound {
					err = nil
					if code != "NOT_FOUND" && code != "UNAUTHENTICATED" {
						t.Errorf("%s as %s: null, want it visible", o.name, w.name)
					}
					continue
				}
				want(t, o.name+" as "+w.name, err, code)
			}
		}
	}
	// The reseller's own plan: its reseller and admins may set it.
	if _, err := tn.resA.CreatePlan(ctx, client.Plan{Name: "resa-plan", DiskMB: 10, BandwidthMB: 10, Domains: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	for w, code := range map[string]string{"resb": "NOT_FOUND", "alphauser": "FORBIDDEN", "resa": "", "admin": ""} {
		c := map[string]*client.Client{"resb": tn.resB, "alphauser": tn.userA, "resa": tn.resA, "admin": tn.admin}[w]
		_, err := c.SetPlanBackup(ctx, "resa-plan", &client.PlanBackupInput{Target: "default"})
		want(t, "setPlanBackup resa-plan as "+w, err, code)
	}
	if got, err := tn.resA.PlanBackup(ctx, "resa-plan"); err != nil || got == nil || got.Target != "default" || got.Hour != nil || got.KeepDaily != 7 || !got.Enabled {
		t.Errorf("resa-plan's backup settings: %+v, %v", got, err)
	}
	// The deleted backup is DELETING, for the controller to forget.
	if got, err := tn.admin.Backup(ctx, del.ID); err != nil || got == nil || got.Status != "DELETING" {
		t.Errorf("deleted backup: %+v, %v", got, err)
	}
	// Every successful mutation was audited.
	for _, action := range []string{"createBackup", "restoreBackup", "verifyBackup", "deleteBackup", "createBackupTarget", "deleteBackupTarget", "setPlanBackup"} {
		evs, _, err := tn.admin.AuditEvents(ctx, client.AuditFilter{Action: action}, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for _, e := range evs {
			ok = ok || e.Result == "ok"
		}
		if !ok {
			t.Errorf("no successful %s audited: %+v", action, evs)
		}
	}
}

type sentinel string

func (s sentinel) Error() string { return string(s) }

// errNotFound stands for a query's null answer in the matrix.
const errNotFound = sentinel("null")

func hasBackup(list []client.Backup, id string) bool {
	for _, b := range list {
		if b.ID == id {
			return true
		}
	}
	return false
}

// TestBackupOfDeletedAccount: the records of an account that no longer
// exists are seen, listed and restored (restoreAccount) by the people
// named in the record: its reseller (Owner) and admins; not another
// reseller, and not the owner of a new account with the same id space.
func TestBackupOfDeletedAccount(t *testing.T) {
	tn := setupBackupTenants(t)
	ctx := context.Background()
	b := &store.Backup{ID: store.NewBackupID("gone1", time.Now()), Account: "gone1", AccountID: "acc-gone1", Owner: "resa", Node: "n-eu", Target: "default"}
	if err := tn.s.Store().CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	setBackup(t, tn, b.ID, store.BackupSucceeded, nil)
	for name, c := range map[string]*client.Client{"resa": tn.resA, "admin": tn.admin} {
		if got, err := c.Backup(ctx, b.ID); err != nil || got == nil {
			t.Errorf("%s: backup of a deleted account: %+v, %v", name, got, err)
		}
		if list, _, err := c.Backups(ctx, "gone1", 10, ""); err != nil || !hasBackup(list, b.ID) {
			t.Errorf("%s: backups of a deleted account: %+v, %v", name, list, err)
		}
	}
	for name, c := range map[string]*client.Client{"resb": tn.resB, "alphauser": tn.userA, "bravouser": tn.userB} {
		if got, err := c.Backup(ctx, b.ID); err != nil || got != nil {
			t.Errorf("%s sees another's backup: %+v, %v", name, got, err)
		}
		if list, _, err := c.Backups(ctx, "gone1", 10, ""); err != nil || len(list) != 0 {
			t.Errorf("%s lists another's backups: %+v, %v", name, list, err)
		}
		_, err := c.RestoreAccount(ctx, b.ID, "")
		if name == "resb" {
			want(t, name+" restoreAccount", err, "NOT_FOUND")
		} else {
			want(t, name+" restoreAccount", err, "FORBIDDEN")
		}
	}
	// restoreBackup needs the account; restoreAccount brings it back.
	_, err := tn.resA.RestoreBackup(ctx, client.RestoreInput{Backup: b.ID, What: "ALL", Into: "IN_PLACE"})
	want(t, "restoreBackup of a deleted account", err, "CONFLICT")
	_, err = tn.resA.RestoreAccount(ctx, b.ID, "n-us")
	want(t, "reseller chooses the node", err, "FORBIDDEN")
	_, err = tn.admin.RestoreAccount(ctx, b.ID, "nowhere")
	want(t, "unknown node", err, "INVALID_INPUT")
	r, err := tn.resA.RestoreAccount(ctx, b.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.What != "ALL" || r.Node != "" || r.Status != "PENDING" || r.Account != "gone1" || r.Backup != b.ID {
		t.Errorf("restoreAccount: %+v", r)
	}
	stored, _, err := tn.s.Store().GetRestoreRev(ctx, r.ID)
	if err != nil || stored.AccountID != "acc-gone1" || stored.Owner != "resa" || stored.Requester != "resa" || !stored.InPlace {
		t.Errorf("stored restore: %+v, %v", stored, err)
	}
	_, err = tn.admin.RestoreAccount(ctx, b.ID, "n-us")
	want(t, "a second restore while one is pending", err, "RATE_LIMITED")
	if list, err := tn.resA.Restores(ctx, "gone1"); err != nil || len(list) != 1 {
		t.Errorf("restores of a deleted account: %+v, %v", list, err)
	}
	if list, err := tn.resB.Restores(ctx, "gone1"); err != nil || len(list) != 0 {
		t.Errorf("resb lists another's restores: %+v, %v", list, err)
	}
	// Its backups hold the name: no new account may take it.
	_, err = tn.resA.CreateAccount(ctx, client.CreateAccountInput{Username: "gone1", Domain: "gone1.example.com", Plan: "basic"})
	want(t, "createAccount with a name a deleted account's backups hold", err, "CONFLICT")
	// A username taken again is not free for restoreAccount.
	b2 := &store.Backup{ID: store.NewBackupID("alpha1", time.Now()), Account: "alpha1", AccountID: "acc-old-alpha1", Owner: "resa", Node: "n-eu", Target: "default"}
	if err := tn.s.Store().CreateBackup(ctx, b2, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	setBackup(t, tn, b2.ID, store.BackupSucceeded, nil)
	_, err = tn.admin.RestoreAccount(ctx, b2.ID, "")
	want(t, "restoreAccount onto a taken username", err, "CONFLICT")
	// The old alpha1's backup is not the new alpha1's owner's.
	if got, err := tn.userA.Backup(ctx, b2.ID); err != nil || got != nil {
		t.Errorf("the new account's owner sees the old account's backup: %+v, %v", got, err)
	}
	if list, _, err := tn.userA.Backups(ctx, "alpha1", 50, ""); err != nil || hasBackup(list, b2.ID) {
		t.Errorf("the new account's owner lists the old account's backup: %+v, %v", list, err)
	}
}

// TestBackupValidation: each refusal of createBackup, restoreBackup,
// verifyBackup, deleteBackup, createBackupTarget, deleteBackupTarget and
// setPlanBackup with its code; none writes a record.
func TestBackupValidation(t *testing.T) {
	tn := setupCertTenants(t, pauseBackups)
	ctx := context.Background()
	_, err := tn.userA.CreateBackup(ctx, "alpha1", "")
	want(t, "no target configured", err, "INVALID_INPUT")
	if err != nil && !strings.Contains(err.Error(), "no backup target is configured") {
		t.Errorf("no target: %v", err)
	}
	if _, err := tn.admin.CreateBackupTarget(ctx, client.BackupTargetInput{Name: "default", Kind: "LOCAL"}); err != nil {
		t.Fatal(err)
	}
	_, err = tn.userA.CreateBackup(ctx, "alpha1", "default")
	want(t, "user chooses a target", err, "FORBIDDEN")
	_, err = tn.admin.CreateBackup(ctx, "alpha1", "elsewhere")
	want(t, "unknown target", err, "INVALID_INPUT")
	_, err = tn.admin.CreateBackup(ctx, "nobody", "")
	want(t, "unknown account", err, "NOT_FOUND")

	start := time.Now()
	b, err := tn.userA.CreateBackup(ctx, "alpha1", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("createBackup answered in %s", time.Since(start))
	stored, err := tn.s.Store().GetBackup(ctx, b.ID)
	if err != nil || stored.AccountID != tn.a1.ID || stored.Owner != "resa" || stored.Node == "" || stored.Target != "default" ||
		stored.Requester != "alphauser" || stored.Status.State != store.BackupPending {
		t.Fatalf("stored backup: %+v, %v", stored, err)
	}
	_, err = tn.resA.CreateBackup(ctx, "alpha1", "")
	want(t, "second backup while one is pending", err, "RATE_LIMITED")
	_, err = tn.userA.RestoreBackup(ctx, client.RestoreInput{Backup: b.ID, What: "ZONE", Into: "IN_PLACE"})
	want(t, "restore of a pending backup", err, "CONFLICT")
	_, err = tn.userA.VerifyBackup(ctx, b.ID)
	want(t, "verify of a pending backup", err, "CONFLICT")
	setBackup(t, tn, b.ID, store.BackupRunning, nil)
	_, err = tn.userA.DeleteBackup(ctx, b.ID)
	want(t, "delete a running backup", err, "CONFLICT")
	setBackup(t, tn, b.ID, store.BackupPartial, nil)

	for _, c := range []struct {
		name string
		in   client.RestoreInput
		c    *client.Client
		code string
	}{
		{"path with ..", client.RestoreInput{What: "FILES", Path: "public_html/../../etc"}, tn.userA, "INVALID_INPUT"},
		{"absolute path", client.RestoreInput{What: "FILES", Path: "/etc/passwd"}, tn.userA, "INVALID_INPUT"},
		{"NUL in path", client.RestoreInput{What: "FILES", Path: "a\x00b"}, tn.userA, "INVALID_INPUT"},
		{"path with DATABASE", client.RestoreInput{What: "DATABASE", Database: "alpha1_shop", DatabaseInto: "alpha1_shop2", Path: "x"}, tn.userA, "INVALID_INPUT"},
		{"no database", client.RestoreInput{What: "DATABASE", DatabaseInto: "alpha1_x"}, tn.userA, "INVALID_INPUT"},
		{"database not in the backup", client.RestoreInput{What: "DATABASE", Database: "alpha1_other", DatabaseInto: "alpha1_x"}, tn.userA, "INVALID_INPUT"},
		{"side by side without databaseInto", client.RestoreInput{What: "DATABASE", Database: "alpha1_shop"}, tn.userA, "INVALID_INPUT"},
		{"databaseInto of another account", client.RestoreInput{What: "DATABASE", Database: "alpha1_shop", DatabaseInto: "bravo1_x"}, tn.userA, "INVALID_INPUT"},
		{"databaseInto uppercase", client.RestoreInput{What: "DATABASE", Database: "alpha1_shop", DatabaseInto: "alpha1_X"}, tn.userA, "INVALID_INPUT"},
		{"in place into another name", client.RestoreInput{What: "DATABASE", Database: "alpha1_shop", DatabaseInto: "alpha1_x", Into: "IN_PLACE"}, tn.userA, "INVALID_INPUT"},
		{"mailbox not in the backup", client.RestoreInput{What: "MAILBOX", Mailbox: "nobody@" + tn.a1Domain}, tn.userA, "INVALID_INPUT"},
		{"no mailbox", client.RestoreInput{What: "MAILBOX"}, tn.userA, "INVALID_INPUT"},
		{"node for FILES", client.RestoreInput{What: "FILES", Node: "n-us"}, tn.admin, "INVALID_INPUT"},
		{"node by a user", client.RestoreInput{What: "ALL", Into: "IN_PLACE", Node: "n-us"}, tn.userA, "FORBIDDEN"},
		{"node by a reseller", client.RestoreInput{What: "ALL", Into: "IN_PLACE", Node: "n-us"}, tn.resA, "FORBIDDEN"},
		{"unknown node", client.RestoreInput{What: "ALL", Into: "IN_PLACE", Node: "nowhere"}, tn.admin, "INVALID_INPUT"},
		{"another tenant's backup", client.RestoreInput{What: "ZONE", Into: "IN_PLACE"}, tn.userB, "NOT_FOUND"},
	} {
		c.in.Backup = b.ID
		_, err := c.c.RestoreBackup(ctx, c.in)
		want(t, c.name, err, c.code)
	}
	if rs, err := tn.s.Store().ListRestores(ctx, "alpha1"); err != nil || len(rs) != 0 {
		t.Fatalf("refused restores wrote records: %+v, %v", rs, err)
	}
	// The plan allows one database: a restore beside it is a second one
	// only if one exists; with the limit at 0 it is refused.
	zero := 0
	if _, err := tn.admin.UpdatePlan(ctx, "basic", client.PlanUpdate{Databases: &zero}); err != nil {
		t.Fatal(err)
	}
	_, err = tn.userA.RestoreBackup(ctx, client.RestoreInput{Backup: b.ID, What: "DATABASE", Database: "alpha1_shop", DatabaseInto: "alpha1_shop2"})
	want(t, "database over the plan's limit", err, "QUOTA_EXCEEDED")
	one := 1
	if _, err := tn.admin.UpdatePlan(ctx, "basic", client.PlanUpdate{Databases: &one}); err != nil {
		t.Fatal(err)
	}
	r, err := tn.userA.RestoreBackup(ctx, client.RestoreInput{Backup: b.ID, What: "DATABASE", Database: "alpha1_shop", DatabaseInto: "alpha1_shop2"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Into != "SIDE_BY_SIDE" || deref(r.DatabaseInto) != "alpha1_shop2" || r.Status != "PENDING" {
		t.Errorf("database restore: %+v", r)
	}
	_, err = tn.userA.RestoreBackup(ctx, client.RestoreInput{Backup: b.ID, What: "ZONE", Into: "IN_PLACE"})
	want(t, "second restore while one is pending", err, "RATE_LIMITED")
	finishAll(t, tn, "alpha1")
	r, err = tn.userA.RestoreBackup(ctx, client.RestoreInput{Backup: b.ID, What: "FILES", Path: "./public_html//index.php"})
	if err != nil || deref(r.Path) != "public_html/index.php" {
		t.Errorf("files restore: %+v, %v", r, err)
	}
	finishAll(t, tn, "alpha1")

	// Targets.
	if _, err := tn.admin.CreateJoinToken(ctx, "bk1", "127.0.0.1", []string{"BACKUP"}, nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		in   client.BackupTargetInput
		code string
	}{
		{"uppercase name", client.BackupTargetInput{Name: "Local", Kind: "LOCAL"}, "INVALID_INPUT"},
		{"long name", client.BackupTargetInput{Name: strings.Repeat("a", 64), Kind: "LOCAL"}, "INVALID_INPUT"},
		{"slash in name", client.BackupTargetInput{Name: "a/b", Kind: "LOCAL"}, "INVALID_INPUT"},
		{"taken name", client.BackupTargetInput{Name: "default", Kind: "LOCAL"}, "CONFLICT"},
		{"LOCAL with a bucket", client.BackupTargetInput{Name: "l2", Kind: "LOCAL", Bucket: "b"}, "INVALID_INPUT"},
		{"NODE without node", client.BackupTargetInput{Name: "n1", Kind: "NODE"}, "INVALID_INPUT"},
		{"NODE unknown", client.BackupTargetInput{Name: "n1", Kind: "NODE", Node: "nowhere"}, "INVALID_INPUT"},
		{"NODE without the role", client.BackupTargetInput{Name: "n1", Kind: "NODE", Node: "n-eu"}, "INVALID_INPUT"},
		{"S3 http", s3In("s1", "http://s3.example.com"), "INVALID_INPUT"},
		{"S3 ftp", s3In("s1", "ftp://s3.example.com"), "INVALID_INPUT"},
		{"S3 with a path", s3In("s1", "https://s3.example.com/bucket"), "INVALID_INPUT"},
		{"S3 with user info", s3In("s1", "https://u:p@s3.example.com"), "INVALID_INPUT"},
		{"S3 bad bucket", func() client.BackupTargetInput {
			in := s3In("s1", "https://s3.example.com")
			in.Bucket = "Bad_Bucket"
			return in
		}(), "INVALID_INPUT"},
		{"S3 bad prefix", func() client.BackupTargetInput {
			in := s3In("s1", "https://s3.example.com")
			in.Prefix = "../x"
			return in
		}(), "INVALID_INPUT"},
		{"S3 no region", func() client.BackupTargetInput { in := s3In("s1", "https://s3.example.com"); in.Region = ""; return in }(), "INVALID_INPUT"},
		{"S3 no secret", func() client.BackupTargetInput {
			in := s3In("s1", "https://s3.example.com")
			in.SecretAccessKey = ""
			return in
		}(), "INVALID_INPUT"},
		{"S3 with a node", func() client.BackupTargetInput {
			in := s3In("s1", "https://s3.example.com")
			in.Node = "bk1"
			return in
		}(), "INVALID_INPUT"},
	} {
		_, err := tn.admin.CreateBackupTarget(ctx, c.in)
		want(t, c.name, err, c.code)
	}
	if got, err := tn.admin.CreateBackupTarget(ctx, client.BackupTargetInput{Name: "vault", Kind: "NODE", Node: "bk1"}); err != nil || deref(got.Node) != "bk1" {
		t.Errorf("NODE target: %+v, %v", got, err)
	}
	if got, err := tn.admin.CreateBackupTarget(ctx, s3In("minio", "http://127.0.0.1:9000/")); err != nil || deref(got.Endpoint) != "http://127.0.0.1:9000" {
		t.Errorf("S3 target on loopback: %+v, %v", got, err)
	}
	// In use by a backup, then by a plan.
	_, err = tn.admin.DeleteBackupTarget(ctx, "default")
	want(t, "delete a target a backup uses", err, "CONFLICT")
	for _, c := range []struct {
		name string
		in   client.PlanBackupInput
	}{
		{"hour 24", client.PlanBackupInput{Target: "vault", Hour: ptr(24)}},
		{"hour -1", client.PlanBackupInput{Target: "vault", Hour: ptr(-1)}},
		{"keepDaily 367", client.PlanBackupInput{Target: "vault", KeepDaily: ptr(367)}},
		{"keepWeekly 521", client.PlanBackupInput{Target: "vault", KeepWeekly: ptr(521)}},
		{"keepMonthly 241", client.PlanBackupInput{Target: "vault", KeepMonthly: ptr(241)}},
		{"keepMonthly -1", client.PlanBackupInput{Target: "vault", KeepMonthly: ptr(-1)}},
		{"all zero", client.PlanBackupInput{Target: "vault", KeepDaily: ptr(0), KeepWeekly: ptr(0), KeepMonthly: ptr(0)}},
		{"unknown target", client.PlanBackupInput{Target: "elsewhere"}},
	} {
		_, err := tn.admin.SetPlanBackup(ctx, "basic", &c.in)
		want(t, "setPlanBackup "+c.name, err, "INVALID_INPUT")
	}
	off := false
	p, err := tn.admin.SetPlanBackup(ctx, "basic", &client.PlanBackupInput{Target: "vault", Hour: ptr(0), KeepDaily: ptr(0), KeepWeekly: ptr(520), KeepMonthly: ptr(240), Enabled: &off})
	if err != nil || p.Backup == nil || p.Backup.Hour == nil || *p.Backup.Hour != 0 || p.Backup.KeepWeekly != 520 || p.Backup.Enabled {
		t.Fatalf("setPlanBackup: %+v, %v", p, err)
	}
	_, err = tn.admin.DeleteBackupTarget(ctx, "vault")
	want(t, "delete a target a plan uses", err, "CONFLICT")
	// A backup now goes to the plan's target, with its retention.
	b2, err := tn.userA.CreateBackup(ctx, "alpha1", "")
	if err != nil || b2.Target != "vault" {
		t.Fatalf("backup to the plan's target: %+v, %v", b2, err)
	}
	if s, _ := tn.s.Store().GetBackup(ctx, b2.ID); s == nil || s.Retention == nil || s.Retention.KeepWeekly != 520 {
		t.Errorf("backup's retention: %+v", s)
	}
	if p, err := tn.admin.SetPlanBackup(ctx, "basic", nil); err != nil || p.Backup != nil {
		t.Fatalf("setPlanBackup off: %+v, %v", p, err)
	}
	if _, err := tn.admin.DeleteBackupTarget(ctx, "minio"); err != nil {
		t.Errorf("delete an unused target: %v", err)
	}
	_, err = tn.admin.DeleteBackupTarget(ctx, "minio")
	want(t, "delete a deleted target", err, "NOT_FOUND")
	// An admin's refusals are audited with their code.
	evs, _, err := tn.admin.AuditEvents(ctx, client.AuditFilter{Action: "createBackupTarget", FailedOnly: true}, 100, "")
	if err != nil || len(evs) == 0 {
		t.Errorf("refused createBackupTarget not audited: %+v, %v", evs, err)
	}
}

func ptr[T any](v T) *T { return &v }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

const s3Secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"

func s3In(name, endpoint string) client.BackupTargetInput {
	return client.BackupTargetInput{Name: name, Kind: "S3", Endpoint: endpoint, Bucket: "npanel-backups", Prefix: "cluster1/",
		Region: "us-east-1", AccessKeyID: "AKIAIOSFODNN7EXAMPLE", SecretAccessKey: s3Secret}
}

// TestBackupTargetSecret: an S3 target's secret key is sealed under the
// KEK: it appears in no API response (the raw JSON of every target
// query and mutation), no audit record, no etcd value, no log line, not
// even in a refusal that quotes the rest of the input; and it opens
// again with the KEK.
func TestBackupTargetSecret(t *testing.T) {
	var logs lockedBuffer
	tn := setupCertTenants(t, pauseBackups, func(c *controlplane.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	var raw [][]byte
	do := func(query string, vars map[string]any) {
		var out json.RawMessage
		err := tn.admin.Do(ctx, query, vars, &out)
		raw = append(raw, out)
		if err != nil {
			raw = append(raw, []byte(err.Error()))
		}
	}
	in := map[string]any{"name": "s3", "kind": "S3", "endpoint": "https://s3.example.com", "bucket": "npanel-backups", "prefix": "c1",
		"region": "us-east-1", "accessKeyId": "AKIAIOSFODNN7EXAMPLE", "secretAccessKey": s3Secret}
	const fields = `name kind node sftpAddress hostKey accessError endpoint bucket prefix region accessKeyId createdAt`
	bad := map[string]any{}
	for k, v := range in {
		bad[k] = v
	}
	bad["bucket"] = "NO"
	do(`mutation($in:CreateBackupTargetInput!){createBackupTarget(input:$in){`+fields+`}}`, map[string]any{"in": bad})
	do(`mutation($in:CreateBackupTargetInput!){createBackupTarget(input:$in){`+fields+`}}`, map[string]any{"in": in})
	do(`{backupTargets{`+fields+`}}`, nil)
	do(`mutation{setPlanBackup(plan:"basic",input:{target:"s3"}){name backup{target}}}`, nil)
	do(`mutation{setPlanBackup(plan:"basic",input:null){name}}`, nil)
	do(`mutation{deleteBackupTarget(name:"s3"){`+fields+`}}`, nil)
	if all := bytes.Join(raw, nil); !bytes.Contains(all, []byte(`"accessKeyId":"AKIAIOSFODNN7EXAMPLE"`)) || !bytes.Contains(all, []byte("bucket")) {
		t.Fatalf("createBackupTarget did not answer: %s", all)
	}
	for i, r := range raw {
		if bytes.Contains(r, []byte(s3Secret)) || bytes.Contains(r, []byte(s3Secret[10:30])) {
			t.Errorf("response %d holds the secret key: %s", i, r)
		}
	}
	evs, _, err := tn.admin.AuditEvents(ctx, client.AuditFilter{}, 500, "")
	if err != nil {
		t.Fatal(err)
	}
	j, _ := json.Marshal(evs)
	if bytes.Contains(j, []byte(s3Secret[10:30])) {
		t.Errorf("the audit log holds the secret key: %s", j)
	}
	// Again, to read it sealed from etcd and open it.
	if _, err := tn.admin.CreateBackupTarget(ctx, s3In("s3b", "https://s3.example.com")); err != nil {
		t.Fatal(err)
	}
	resp, err := tn.s.RawEtcd(t).Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte(s3Secret[10:30])) {
			t.Errorf("etcd key %s holds the secret key in clear", kv.Key)
		}
		found = found || bytes.Contains(kv.Value, []byte(`"secretKey"`))
	}
	if !found {
		t.Error("no sealed secret key stored")
	}
	tg, err := tn.s.Store().GetBackupTarget(ctx, "s3b")
	if err != nil || tg.SecretKey == nil {
		t.Fatalf("stored target: %+v, %v", tg, err)
	}
	kekFile := tn.s.Config.KEKFile
	if kekFile == "" {
		kekFile = filepath.Join(tn.s.Config.DataDir, "kek")
	}
	kek, err := pki.LoadKEK(kekFile)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := store.OpenBackupTargetSecret(kek, tg); err != nil || string(got) != s3Secret {
		t.Errorf("the sealed secret does not open to the one given: %v", err)
	}
	if logs.String() == "" {
		t.Error("no server log captured to scan")
	}
	if strings.Contains(logs.String(), s3Secret[10:30]) {
		t.Errorf("the server logged the secret key:\n%s", logs.String())
	}
}

// TestBackupEvents: the subscription sends the state so far, then each
// change (progress included), and ends when the backup has finished; a
// verification asked for keeps it open until verified.
func TestBackupEvents(t *testing.T) {
	tn := setupBackupTenants(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := tn.userA.CreateBackup(ctx, "alpha1", "")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := tn.userA.BackupEvents(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	first := <-evs
	if first.Backup.Status != "PENDING" || first.Event == nil || first.Event.Kind != "queued" {
		t.Fatalf("first event: %+v", first)
	}
	setBackup(t, tn, b.ID, store.BackupRunning, func(b *store.Backup) {
		b.Status.Progress = &store.BackupProgress{FilesDone: 10, BytesDone: 1000, TotalFiles: 20, TotalBytes: 2000}
	})
	if e := <-evs; e.Backup.Status != "RUNNING" || e.Backup.Progress == nil || e.Backup.Progress.FilesDone != 10 {
		t.Fatalf("progress event: %+v", e)
	}
	setBackup(t, tn, b.ID, store.BackupSucceeded, nil)
	if e := <-evs; e.Backup.Status != "SUCCEEDED" {
		t.Fatalf("final event: %+v", e)
	}
	if e, ok := <-evs; ok {
		t.Fatalf("the stream goes on after the backup finished: %+v", e)
	}
	// verifyBackup: the stream stays open until the verification is in.
	if _, err := tn.userA.VerifyBackup(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	evs, err = tn.resA.BackupEvents(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := <-evs; e.Event == nil || e.Event.Kind != "verify-requested" {
		t.Fatalf("first event after verifyBackup: %+v", e)
	}
	setBackup(t, tn, b.ID, store.BackupSucceeded, func(b *store.Backup) {
		b.Status.VerifiedGeneration, b.Status.VerifyOK, b.Status.VerifiedAt = b.VerifyRequested, true, time.Now()
	})
	if e := <-evs; !e.Backup.Verified || e.Backup.VerifiedAt == nil {
		t.Fatalf("verified event: %+v", e)
	}
	if _, ok := <-evs; ok {
		t.Fatal("the stream goes on after the verification")
	}
	// Deleted: a last event, then the end.
	b2, err := tn.admin.CreateBackup(ctx, "alpha1", "")
	if err != nil {
		t.Fatal(err)
	}
	evs, err = tn.userA.BackupEvents(ctx, b2.ID)
	if err != nil {
		t.Fatal(err)
	}
	<-evs
	if err := tn.s.Store().DeleteBackup(ctx, b2.ID, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	if e := <-evs; e.Event == nil || e.Event.Kind != "deleted" {
		t.Fatalf("deleted event: %+v", e)
	}
	if _, ok := <-evs; ok {
		t.Fatal("the stream goes on after the deletion")
	}
}

// TestBackupEventsAccessLost: a reseller following a backup of an
// account handed to another reseller is cut off at the next recheck.
func TestBackupEventsAccessLost(t *testing.T) {
	t.Cleanup(graph.SetBackupSubscriptionRecheck(100 * time.Millisecond))
	tn := setupBackupTenants(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := tn.userA.CreateBackup(ctx, "alpha1", "")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := tn.resA.BackupEvents(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := <-evs; e.Backup.ID != b.ID {
		t.Fatalf("first event: %+v", e)
	}
	if _, err := tn.admin.ChangeAccountOwner(ctx, "alpha1", "resb"); err != nil {
		t.Fatal(err)
	}
	for range evs {
	}
	if ctx.Err() != nil {
		t.Fatal("the stream outlived the caller's access")
	}
	if got, err := tn.resA.Backup(ctx, b.ID); err != nil || got != nil {
		t.Errorf("the former reseller still sees the backup: %+v, %v", got, err)
	}
	if got, err := tn.resB.Backup(ctx, b.ID); err != nil || got == nil {
		t.Errorf("the new reseller does not see the backup: %+v, %v", got, err)
	}
	// The record follows the owner, for when the account is gone.
	if got, err := tn.s.Store().GetBackup(ctx, b.ID); err != nil || got.Owner != "resb" {
		t.Errorf("the record's owner after changeAccountOwner: %+v, %v", got, err)
	}
}

// pauseBackups: these tests play the backup controller themselves.
func pauseBackups(c *controlplane.Config) { c.Backup.Paused = true }
