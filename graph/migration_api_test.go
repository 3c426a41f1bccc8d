package graph_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
)

func pauseMigrations(c *controlplane.Config) {
	c.Backup.Paused = true
	c.Migration.Paused = true
}

// setMigration writes what the migration controller would.
func setMigration(t *testing.T, tn *certTenants, id string, fn func(m *store.Migration)) {
	t.Helper()
	if _, err := tn.s.Store().UpdateMigration(context.Background(), id, func(m *store.Migration) ([]*store.ObjectTask, error) {
		fn(m)
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
}

// otherNode is the fake node alpha1 is not on.
func otherNode(t *testing.T, tn *certTenants) (from, to string) {
	t.Helper()
	a, err := tn.admin.Account(context.Background(), "alpha1")
	if err != nil || a == nil {
		t.Fatal(err)
	}
	if a.NodeName() == "n-eu" {
		return "n-eu", "n-us"
	}
	return "n-us", "n-eu"
}

// TestMigrationRBAC is the access matrix of every migration query,
// mutation and subscription: admin, the account's reseller, another
// reseller, the account's user, another account's user and an anonymous
// caller. Another tenant's migrations are NOT_FOUND (null, or absent from
// lists); users read their account's migrations and change nothing.
func TestMigrationRBAC(t *testing.T) {
	tn := setupCertTenants(t, pauseMigrations)
	ctx := context.Background()
	_, to := otherNode(t, tn)
	anon := client.New(tn.s.URL(), "")
	who := []struct {
		name string
		c    *client.Client
	}{{"admin", tn.admin}, {"resa", tn.resA}, {"resb", tn.resB}, {"alphauser", tn.userA}, {"bravouser", tn.userB}, {"anonymous", anon}}
	manage := map[string]string{"admin": "", "resa": "", "resb": "NOT_FOUND", "alphauser": "FORBIDDEN", "bravouser": "FORBIDDEN", "anonymous": "UNAUTHENTICATED"}
	manageExisting := map[string]string{"admin": "", "resa": "", "resb": "NOT_FOUND", "alphauser": "FORBIDDEN", "bravouser": "NOT_FOUND", "anonymous": "UNAUTHENTICATED"}
	see := map[string]bool{"admin": true, "resa": true, "alphauser": true}

	// migrateAccount: each success is closed again so that the next
	// caller may start one.
	for _, w := range who {
		m, err := w.c.MigrateAccount(ctx, client.MigrateAccountInput{Account: "alpha1", ToNode: to})
		want(t, w.name+" migrateAccount", err, manage[w.name])
		if err == nil {
			if m.Status != "PENDING" || m.ToNode == nil || *m.ToNode != to || m.Account != "alpha1" {
				t.Errorf("%s: %+v", w.name, m)
			}
			setMigration(t, tn, m.ID, func(m *store.Migration) { m.Status = store.MigrationCancelled })
		}
	}
	m, err := tn.admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: "alpha1", ToNode: to})
	if err != nil {
		t.Fatal(err)
	}
	// One migration per account at a time.
	_, err = tn.resA.MigrateAccount(ctx, client.MigrateAccountInput{Account: "alpha1"})
	want(t, "second migration", err, "CONFLICT")

	for _, w := range who {
		got, err := w.c.Migration(ctx, m.ID)
		switch {
		case w.name == "anonymous":
			want(t, "anonymous migration", err, "UNAUTHENTICATED")
		case err != nil:
			t.Errorf("%s migration: %v", w.name, err)
		case see[w.name] != (got != nil):
			t.Errorf("%s migration: %+v, want visible %v", w.name, got, see[w.name])
		}
		list, _, err := w.c.Migrations(ctx, client.MigrationFilter{}, 50, "")
		if w.name == "anonymous" {
			want(t, "anonymous migrations", err, "UNAUTHENTICATED")
			continue
		}
		if err != nil {
			t.Errorf("%s migrations: %v", w.name, err)
			continue
		}
		n := 0
		for _, x := range list {
			if x.AccountID == tn.a1.ID {
				n++
			} else if w.name != "admin" && w.name != "resb" && w.name != "bravouser" {
				t.Errorf("%s sees %s's migration", w.name, x.Account)
			}
		}
		if wantN := map[bool]int{true: 3, false: 0}[see[w.name]]; n != wantN {
			t.Errorf("%s sees %d of alpha1's migrations, want %d", w.name, n, wantN)
		}
		// Filtered by an account it may not see: NOT_FOUND, as for one
		// that does not exist, so names cannot be probed.
		_, _, err = w.c.Migrations(ctx, client.MigrationFilter{Account: "alpha1"}, 50, "")
		want(t, w.name+" migrations of alpha1", err, map[bool]string{true: "", false: "NOT_FOUND"}[see[w.name]])
		_, _, err = w.c.Migrations(ctx, client.MigrationFilter{Account: "nosuchaccount"}, 50, "")
		want(t, w.name+" migrations of a missing account", err, "NOT_FOUND")
	}
	// Filters.
	if list, _, err := tn.admin.Migrations(ctx, client.MigrationFilter{Status: "PENDING", Node: to}, 50, ""); err != nil || len(list) != 1 || list[0].ID != m.ID {
		t.Errorf("filtered list: %+v, %v", list, err)
	}
	if list, next, err := tn.admin.Migrations(ctx, client.MigrationFilter{Account: "alpha1"}, 2, ""); err != nil || len(list) != 2 || next == "" {
		t.Errorf("first page: %d, %q, %v", len(list), next, err)
	}

	// rollback and finalize before cutover: CONFLICT for those who may
	// act on it at all.
	conflict := map[string]string{"admin": "CONFLICT", "resa": "CONFLICT", "resb": "NOT_FOUND", "alphauser": "FORBIDDEN", "bravouser": "NOT_FOUND", "anonymous": "UNAUTHENTICATED"}
	for _, w := range who {
		_, err := w.c.MigrationAction(ctx, "rollbackMigration", m.ID)
		want(t, w.name+" rollbackMigration", err, conflict[w.name])
		_, err = w.c.MigrationAction(ctx, "finalizeMigration", m.ID)
		want(t, w.name+" finalizeMigration", err, conflict[w.name])
	}
	for _, w := range who {
		got, err := w.c.MigrationAction(ctx, "cancelMigration", m.ID)
		want(t, w.name+" cancelMigration", err, manageExisting[w.name])
		if err == nil && !got.CancelRequested {
			t.Errorf("%s cancel: %+v", w.name, got)
		}
	}
	// After cutover: cancel is refused, rollback allowed; once DONE,
	// finalize.
	m2 := &store.Migration{ID: store.NewMigrationID("bravo1", time.Now()), Account: tn.b1.ID, Username: "bravo1", Owner: "resb",
		FromNode: tn.b1.NodeName(), ToNode: "n-x", Status: store.MigrationDone, CutOver: true}
	if err := tn.s.Store().CreateMigration(ctx, m2, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	_, err = tn.resB.MigrationAction(ctx, "cancelMigration", m2.ID)
	want(t, "cancel after cutover", err, "CONFLICT")
	_, err = tn.resA.MigrationAction(ctx, "finalizeMigration", m2.ID)
	want(t, "resa finalize of resb's", err, "NOT_FOUND")
	got, err := tn.resB.MigrationAction(ctx, "finalizeMigration", m2.ID)
	want(t, "resb finalize", err, "")
	_, err = tn.resB.MigrationAction(ctx, "rollbackMigration", m2.ID)
	want(t, "rollback after finalize", err, "CONFLICT")
	_ = got

	// drainNode with migrate: admins only.
	for _, w := range who {
		err := w.c.DrainNodeMigrate(ctx, "n-zz", 4)
		code := map[string]string{"admin": "NOT_FOUND", "anonymous": "UNAUTHENTICATED"}[w.name]
		if code == "" {
			code = "FORBIDDEN"
		}
		want(t, w.name+" drainNode migrate", err, code)
	}
	err = tn.admin.DrainNodeMigrate(ctx, to, 0)
	want(t, "parallel 0", err, "INVALID_INPUT")

	// Every successful mutation was audited.
	for _, action := range []string{"migrateAccount", "cancelMigration", "finalizeMigration"} {
		evs, _, err := tn.admin.AuditEvents(ctx, client.AuditFilter{Action: action}, 100, "")
		if err != nil {
			t.Fatal(err)
		}
		ok := false
		for _, e := range evs {
			ok = ok || e.Result == "ok"
		}
		if !ok {
			t.Errorf("no successful %s audited", action)
		}
	}
}

func TestMigrationValidation(t *testing.T) {
	tn := setupCertTenants(t, pauseMigrations)
	ctx := context.Background()
	from, to := otherNode(t, tn)
	for _, c := range []struct {
		name string
		in   client.MigrateAccountInput
		code string
	}{
		{"no such account", client.MigrateAccountInput{Account: "nobody", ToNode: to}, "NOT_FOUND"},
		{"no such node", client.MigrateAccountInput{Account: "alpha1", ToNode: "n-zz"}, "INVALID_INPUT"},
		{"bad node name", client.MigrateAccountInput{Account: "alpha1", ToNode: "../x"}, "INVALID_INPUT"},
		{"its own node", client.MigrateAccountInput{Account: "alpha1", ToNode: from}, "INVALID_INPUT"},
	} {
		_, err := tn.admin.MigrateAccount(ctx, c.in)
		want(t, c.name, err, c.code)
	}
	// alpha1's plan includes mailboxes: the target needs the mail role.
	setMail := func(on bool) {
		t.Helper()
		if _, err := tn.s.Store().UpdateNode(ctx, to, func(n *store.Node) error {
			n.Roles = slices.DeleteFunc(n.Roles, func(r string) bool { return r == "mail" })
			if on {
				n.Roles = append(n.Roles, "mail")
			}
			return nil
		}, store.AuditEvent{}); err != nil {
			t.Fatal(err)
		}
	}
	setMail(false)
	// Its record may predate roles from plans (written as web only): the
	// plan as it stands decides.
	if _, err := tn.s.Store().UpdateAccount(ctx, tn.a1.ID, func(a *store.Account) error { a.Roles = []string{"web"}; return nil }); err != nil {
		t.Fatal(err)
	}
	_, err := tn.admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: "alpha1", ToNode: to})
	want(t, "a target without the mail role", err, "INVALID_INPUT")
	if err == nil || !strings.Contains(err.Error(), "mail role") {
		t.Errorf("refusal does not name the role: %v", err)
	}
	setMail(true)
	far := time.Now().Add(2 * 366 * 24 * time.Hour)
	_, err = tn.admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: "alpha1", Schedule: &far})
	want(t, "schedule too far", err, "INVALID_INPUT")

	// A reseller moves its accounts only onto nodes of its pool.
	if _, err := tn.s.Store().UpdateReseller(ctx, "resa", func(r *store.Reseller, _ store.Usage) error {
		r.NodeSelector = "zone=" + map[string]string{"n-eu": "eu", "n-us": "us"}[from]
		return nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	_, err = tn.resA.MigrateAccount(ctx, client.MigrateAccountInput{Account: "alpha1", ToNode: to})
	want(t, "outside the reseller's pool", err, "INVALID_INPUT")
	// Every refusal above wrote nothing.
	if all, err := tn.s.Store().ListMigrations(ctx); err != nil || len(all) != 0 {
		t.Fatalf("refused migrations left records: %+v %v", all, err)
	}
	// Without toNode the scheduler picks, later.
	m, err := tn.resA.MigrateAccount(ctx, client.MigrateAccountInput{Account: "alpha1"})
	want(t, "scheduler picks", err, "")
	if err == nil && (m.ToNode != nil || m.FromNode != from) {
		t.Errorf("%+v", m)
	}
}

func TestMigrationEventsStream(t *testing.T) {
	tn := setupCertTenants(t, pauseMigrations)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, to := otherNode(t, tn)
	m, err := tn.resA.MigrateAccount(ctx, client.MigrateAccountInput{Account: "alpha1", ToNode: to})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tn.userB.MigrationEvents(ctx, m.ID); err == nil {
		// The refusal may come as the stream's error: then it is closed
		// without an event.
		evs, _ := tn.userB.MigrationEvents(ctx, m.ID)
		if e, ok := <-evs; ok {
			t.Fatalf("another tenant follows the migration: %+v", e)
		}
	}
	evs, err := tn.userA.MigrationEvents(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e := <-evs; e.Status != "PENDING" {
		t.Fatalf("first event %+v", e)
	}
	setMigration(t, tn, m.ID, func(m *store.Migration) {
		m.Status = store.MigrationPresync
		m.Steps = []store.MigrationStep{{Name: "presync", Status: store.StepRunning, StartedAt: time.Now()}}
	})
	if e := <-evs; e.Status != "PRESYNC" || len(e.Steps) != 1 || e.Steps[0].Name != "presync" {
		t.Fatalf("progress event %+v", e)
	}
	setMigration(t, tn, m.ID, func(m *store.Migration) { m.Status = store.MigrationCancelled })
	if e := <-evs; e.Status != "CANCELLED" {
		t.Fatalf("last event %+v", e)
	}
	if e, ok := <-evs; ok {
		t.Fatalf("the stream goes on after the migration ended: %+v", e)
	}
}
