package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// npanel ctl migrate and node drain --migrate through the real binary
// against a server in the test process, whose store the test drives as
// the migration controller would: each subcommand's happy path, --wait
// and watch following a migration to its end, -o json, exit 2 with a
// message for bad input (the CLI's checks and the server's
// INVALID_INPUT), exit 1 with the code for refusals.
func TestMigrateCLI(t *testing.T) {
	s := testenv.StartServer(t, func(c *controlplane.Config) { c.Migration.Paused = true })
	ctx := context.Background()
	s.FakeNode(t, "n1", nil, 100, 100_000)
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "mg", DiskMB: 100, BandwidthMB: 100, Domains: 2, Mailboxes: 1, Databases: 2, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "climg", Domain: "climg.example.com", Plan: "mg"}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "climg placed", func() bool {
		a, err := s.Admin.Account(ctx, "climg")
		return err == nil && a != nil && a.NodeName() == "n1"
	})
	s.FakeNode(t, "n2", nil, 100, 100_000)
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=" + s.URL()}
	if out, code := run(t, env, testenv.AdminPassword, "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}
	ok := func(want string, args ...string) string {
		t.Helper()
		out, code := run(t, env, "", args...)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("%v: exit %d, want %q in: %s", args, code, want, out)
		}
		return out
	}
	for _, args := range [][]string{
		{"ctl", "migrate", "frobnicate"},
		{"ctl", "migrate", "start"},
		{"ctl", "migrate", "start", "climg", "--schedule", "tomorrow-ish"},
		{"ctl", "migrate", "start", "climg", "--to", "nowhere"}, // the server's INVALID_INPUT
		{"ctl", "migrate", "start", "climg", "--to", "n1"},      // its own node
		{"ctl", "migrate", "start", "climg", "--timeout", "0"},
		{"ctl", "migrate", "list", "--status", "bogus"},
		{"ctl", "migrate", "list", "--limit", "0"},
		{"ctl", "migrate", "show"},
		{"ctl", "migrate", "cancel"},
		{"ctl", "node", "drain", "n1", "--parallel", "3"},
		{"ctl", "node", "drain", "n1", "--migrate", "--parallel", "0"},
	} {
		out, code := run(t, env, "", args...)
		if code != 2 || len(strings.TrimSpace(out)) == 0 {
			t.Errorf("%v: exit %d, want 2 with a message: %s", args, code, out)
		}
	}
	if ms, err := s.Store().ListMigrations(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("refused commands stored migrations: %+v, %v", ms, err)
	}

	out := ok("PENDING", "ctl", "migrate", "start", "climg", "--to", "n2")
	id := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "ID:"))
	ok(id, "ctl", "migrate", "list")
	ok(`"toNode":"n2"`, "ctl", "migrate", "show", id, "-o", "json")
	// A second one of the same account: CONFLICT, exit 1.
	if out, code := run(t, env, "", "ctl", "migrate", "start", "climg"); code != 1 || !strings.Contains(out, "CONFLICT") {
		t.Errorf("second start: exit %d: %s", code, out)
	}
	if out, code := run(t, env, "", "ctl", "migrate", "rollback", id); code != 1 || !strings.Contains(out, "CONFLICT") {
		t.Errorf("rollback before cutover: exit %d: %s", code, out)
	}
	ok(`"status":"PENDING"`, "ctl", "migrate", "list", "--status", "pending", "-o", "json")
	play := func(id string, fn func(m *store.Migration)) {
		if _, err := s.Store().UpdateMigration(ctx, id, func(m *store.Migration) ([]*store.ObjectTask, error) {
			fn(m)
			return nil, nil
		}, store.AuditEvent{}); err != nil {
			t.Error(err)
		}
	}
	ok("PENDING", "ctl", "migrate", "cancel", id)
	play(id, func(m *store.Migration) { m.Status = store.MigrationCancelled })
	ok("CANCELLED", "ctl", "migrate", "watch", id)

	// start --wait follows the migration to its end.
	go func() {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			ms, _ := s.Store().ListMigrations(ctx)
			for _, m := range ms {
				if m.Status == store.MigrationPending && !m.CancelRequested {
					play(m.ID, func(m *store.Migration) {
						m.Status = store.MigrationPresync
						m.Steps = []store.MigrationStep{{Name: "presync", Status: store.StepRunning, StartedAt: time.Now()}}
					})
					time.Sleep(200 * time.Millisecond)
					play(m.ID, func(m *store.Migration) {
						m.Steps[0].Status, m.Steps[0].FinishedAt, m.Steps[0].Bytes = store.StepDone, time.Now(), 4096
						m.Status, m.CutOver, m.DowntimeMs, m.ToNode = store.MigrationDone, true, 1234, "n2"
						m.FinalizeAfter = time.Now().Add(time.Hour)
					})
					return
				}
			}
		}
	}()
	out = ok("1.234s", "ctl", "migrate", "start", "climg", "--wait", "--timeout", "30s")
	if !strings.Contains(out, "presync") || !strings.Contains(out, "DONE") {
		t.Errorf("--wait output: %s", out)
	}

	// node drain --migrate: the node drains, its accounts (none left
	// without a migration) are listed by the drain.
	ok("moving off", "ctl", "node", "drain", "n1", "--migrate", "--parallel", "2")
	ok("[]", "ctl", "migrate", "list", "--drain", "n1", "-o", "json")
}
