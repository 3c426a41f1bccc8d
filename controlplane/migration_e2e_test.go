package controlplane_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/internal/testenv/mariadb"
	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/nodeagent/platform"
)

// Live migration end to end: the API, the migration controller, a real
// source agent (in process, the host's users) and a real target agent
// with a user database of its own (testenv.StartIsolatedAgent), the
// target's SSH endpoint and rsync between them. An account's home with
// a file moves, keeping its bytes; the account then serves from the
// target; a rollback brings it back to the source.
func TestMigrationE2EFiles(t *testing.T) {
	needMigrationHost(t)
	s := testenv.StartServer(t)
	src := s.StartAgent(t, "src-1", func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	dst := s.StartIsolatedAgent(t, "dst-1", func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "mig", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, user)
	a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: user + ".example.com", Plan: "mig", Node: src.Name})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, "account ACTIVE on src-1", func() bool {
		got, err := s.Admin.Account(ctx, a.ID)
		return err == nil && got != nil && got.Status == "ACTIVE" && got.NodeName() == src.Name
	})
	home, ok := testenv.HostUser(user)
	if !ok {
		t.Fatalf("no home for %s on the source", user)
	}
	content := bytes.Repeat([]byte("migrated bytes\n"), 4096)
	file := filepath.Join(home, "keep.txt")
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	m, err := s.Admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: user, ToNode: dst.Name})
	if err != nil {
		t.Fatal(err)
	}
	var last *client.Migration
	testenv.WaitFor(t, 4*time.Minute, "migration DONE", func() bool {
		got, err := s.Admin.Migration(ctx, m.ID)
		if err == nil && got != nil {
			last = got
			if got.Status == "FAILED" || got.Status == "CANCELLED" {
				t.Fatalf("migration %s: %s", got.Status, deref(got.Error))
			}
		}
		return err == nil && got != nil && got.Status == "DONE"
	})
	t.Logf("migration DONE %s after migrateAccount", time.Since(start).Round(time.Millisecond))
	for _, st := range last.Steps {
		t.Logf("step %-14s %-8s %d bytes %s", st.Name, st.Status, st.Bytes, deref(st.Error))
	}
	dstHome, ok := dst.User(user)
	if !ok {
		t.Fatalf("no user %s on the target", user)
	}
	got, err := os.ReadFile(filepath.Join(dstHome, "keep.txt"))
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("file on the target: %d bytes (%v), want %d identical", len(got), err, len(content))
	}
	acct, err := s.Admin.Account(ctx, a.ID)
	if err != nil || acct.NodeName() != dst.Name {
		t.Fatalf("account on %q (%v), want %s", acct.NodeName(), err, dst.Name)
	}
	if last.DowntimeMs == nil {
		t.Error("no downtime measured")
	} else {
		t.Logf("downtime %d ms", *last.DowntimeMs)
	}

	// Rollback: the account serves from the source again, whose copy
	// was kept; the target's goes.
	if _, err := s.Admin.MigrationAction(ctx, "rollbackMigration", m.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 2*time.Minute, "ROLLED_BACK", func() bool {
		got, err := s.Admin.Migration(ctx, m.ID)
		return err == nil && got != nil && got.Status == "ROLLED_BACK"
	})
	acct, err = s.Admin.Account(ctx, a.ID)
	if err != nil || acct.NodeName() != src.Name || acct.Status != "ACTIVE" {
		t.Fatalf("account after rollback: %+v (%v)", acct, err)
	}
	if b, err := os.ReadFile(file); err != nil || !bytes.Equal(b, content) {
		t.Fatalf("the source's file after rollback: %v", err)
	}
	if _, ok := dst.User(user); ok {
		t.Error("the target still has the account's user after the rollback")
	}
}

// A database with rows and a user moves with the account: the rows are
// identical on the target, the user's password (its hash exported sealed
// to the target) still logs in there. Finalizing removes the source's
// copy of the account.
func TestMigrationE2EDatabase(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("agents create Linux users and run mariadbd: needs root")
	}
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed")
	}
	s := testenv.StartServer(t)
	src := s.StartAgent(t, "src-1", testenv.WithModules(t, "db"), func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	dst := s.StartIsolatedAgent(t, "dst-1", testenv.WithModules(t, "db"), func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	for _, n := range []string{src.Name, dst.Name} {
		testenv.WaitFor(t, 3*time.Minute, "mariadb running on "+n, func() bool {
			svcs, _, err := s.Admin.Services(ctx, n)
			return err == nil && slices.ContainsFunc(svcs, func(sv client.Service) bool { return sv.Name == "mariadb" && sv.State == "RUNNING" })
		})
	}
	srcProf, err := platform.DetectProfile(src.Config.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	dstProf, err := platform.DetectProfile(dst.Config.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "mig", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 2, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, user)
	a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: user + ".example.com", Plan: "mig", Node: src.Name})
	if err != nil {
		t.Fatal(err)
	}
	waitAccountActive(t, s.Admin, a.ID)
	db, err := s.Admin.CreateDatabase(ctx, a.ID, "shop", "")
	if err != nil {
		t.Fatal(err)
	}
	up, err := s.Admin.CreateDatabaseUser(ctx, a.ID, "app", "", "")
	if err != nil || up.Password == nil {
		t.Fatalf("createDatabaseUser: %+v %v", up, err)
	}
	dbUser, password := up.User.Name, *up.Password
	if _, err := s.Admin.SetDatabasePrivileges(ctx, a.ID, db.Name, dbUser, []string{"ALL"}); err != nil {
		t.Fatal(err)
	}
	if err := mariadb.QueryAs(srcProf.DB().MariaDBSocket, dbUser, password, db.Name,
		"CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(40), qty INT)",
		"INSERT INTO orders VALUES (1, 'apple', 3), (2, 'pear', 5), (3, 'plum', 0)"); err != nil {
		t.Fatal(err)
	}
	if err := mariadb.QueryAs(srcProf.DB().MariaDBSocket, dbUser, password, db.Name,
		"CREATE TABLE notes (id INT PRIMARY KEY, body TEXT)", "INSERT INTO notes VALUES (1, REPEAT('n', 5000))"); err != nil {
		t.Fatal(err)
	}

	m, err := s.Admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: user, ToNode: dst.Name})
	if err != nil {
		t.Fatal(err)
	}
	// Orders keep coming while the home and the database are copied live
	// (rows written after the presync's dump reach the target only by the
	// last pass, which sends the changed tables); the writer stops once
	// the presync is done (before the cutover suspends the site).
	var lastWrite time.Time
	wroteAt := map[string]time.Time{} // inserted row → when its write returned
	writer := make(chan struct{})
	go func() {
		defer close(writer)
		for id := 100; ; id++ {
			got, err := s.Admin.Migration(ctx, m.ID)
			if err != nil || got == nil || (got.Status != "PENDING" && got.Status != "PRESYNC") ||
				slices.ContainsFunc(got.Steps, func(st client.MigrationStep) bool { return st.Name == "presync" && st.Status == "DONE" }) {
				return
			}
			if err := mariadb.QueryAs(srcProf.DB().MariaDBSocket, dbUser, password, db.Name,
				fmt.Sprintf("INSERT INTO orders VALUES (%d, 'fig', %d)", id, id), "UPDATE orders SET qty = qty + 1 WHERE id = 1"); err != nil {
				t.Errorf("write during the presync: %v", err)
				return
			}
			lastWrite = time.Now()
			wroteAt[fmt.Sprintf("%d|fig|%d", id, id)] = lastWrite
			time.Sleep(20 * time.Millisecond)
		}
	}()
	var last *client.Migration
	testenv.WaitFor(t, 5*time.Minute, "migration DONE", func() bool {
		got, err := s.Admin.Migration(ctx, m.ID)
		if err == nil && got != nil {
			last = got
			if got.Status == "FAILED" || got.Status == "CANCELLED" {
				for _, st := range got.Steps {
					t.Logf("step %-22s %-8s %s", st.Name, st.Status, deref(st.Error))
				}
				t.Fatalf("migration %s: %s", got.Status, deref(got.Error))
			}
		}
		return err == nil && got != nil && got.Status == "DONE"
	})
	<-writer
	var finalSync time.Time
	for _, st := range last.Steps {
		t.Logf("step %-22s %-8s %d bytes %s", st.Name, st.Status, st.Bytes, deref(st.Error))
		if st.Name == "final-sync" && st.StartedAt != nil {
			finalSync = *st.StartedAt
		}
	}
	// The source's rows as the last pass found them (the source keeps
	// its copy until finalized).
	wantRows := dbRows(t, srcProf.DB().MariaDBSocket, dbUser, password, db.Name, "SELECT id, item, qty FROM orders ORDER BY id")
	t.Logf("%d orders, the last written %s before the last pass", len(wantRows), finalSync.Sub(lastWrite).Round(time.Millisecond))
	if len(wantRows) <= 3 {
		t.Fatal("no order written during the migration")
	}
	// The user's own password, through its hash, and the rows.
	testenv.WaitFor(t, time.Minute, "rows on the target with the user's password", func() bool {
		return mariadb.QueryAs(dstProf.DB().MariaDBSocket, dbUser, password, db.Name, "SELECT 1") == nil
	})
	got := dbRows(t, dstProf.DB().MariaDBSocket, dbUser, password, db.Name, "SELECT id, item, qty FROM orders ORDER BY id")
	if !lastWrite.After(finalSync) {
		if !slices.Equal(got, wantRows) {
			t.Fatalf("rows on the target %v, want %v", got, wantRows)
		}
	} else {
		// The writer was still writing when the last pass began (a slow
		// machine): what it wrote before must be there, what came after
		// may be, and nothing else (order 1's count is not compared).
		t.Logf("the writer wrote %s after the last pass started", lastWrite.Sub(finalSync))
		onTarget := map[string]bool{}
		for _, r := range got {
			onTarget[r] = true
			if !slices.Contains(wantRows, r) && !strings.HasPrefix(r, "1|") {
				t.Errorf("row %q on the target, not on the source", r)
			}
		}
		for r, at := range wroteAt {
			if at.Before(finalSync) && !onTarget[r] {
				t.Errorf("row %q, written %s before the last pass, is not on the target", r, finalSync.Sub(at))
			}
		}
	}

	// Finalize: the source's copy goes.
	if _, err := s.Admin.MigrationAction(ctx, "finalizeMigration", m.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 2*time.Minute, "finalized", func() bool {
		got, err := s.Admin.Migration(ctx, m.ID)
		return err == nil && got != nil && got.FinalizedAt != nil
	})
	if _, ok := testenv.HostUser(user); ok {
		t.Error("the source still has the account's user after finalize")
	}
}

// A PHP site keeps answering while the home is copied: polled every
// 50 ms from before the migration starts, no request fails until the
// source is suspended for the cutover. After it, the target serves the
// site and the source proxies to it.
func TestMigrationE2ESiteKeepsAnswering(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/nginx")
	testenv.RequireDaemon(t, "/usr/sbin/php-fpm8.2")
	needMigrationHost(t)
	s := testenv.StartServer(t)
	src := s.StartAgent(t, "src-1", testenv.WithModules(t, "web"), func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	dst := s.StartIsolatedAgent(t, "dst-1", testenv.WithModules(t, "web"), func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	for _, n := range []string{src.Name, dst.Name} {
		testenv.WaitFor(t, 2*time.Minute, "nginx and php-fpm running on "+n, func() bool {
			svcs, _, err := s.Admin.Services(ctx, n)
			running := map[string]bool{}
			for _, sv := range svcs {
				running[sv.Name] = sv.State == "RUNNING"
			}
			return err == nil && running["nginx"] && running["php-fpm8.2"]
		})
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "mig", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, user)
	domain := user + ".example.com"
	a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: "mig", Node: src.Name})
	if err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, a.ID, domain, "ACTIVE")
	home, ok := testenv.HostUser(user)
	if !ok {
		t.Fatalf("no home for %s", user)
	}
	writeOwned(t, filepath.Join(home, "public_html", "index.php"), `<?php echo "hello ", 6*7;`, user)
	if code, body, _ := get(t, src.Config.HTTPListen, domain, "/index.php"); code != 200 || body != "hello 42" {
		t.Fatalf("site on the source: %d %q", code, body)
	}

	type poll struct {
		at time.Time
		ok bool
	}
	var (
		mu    sync.Mutex
		polls []poll
	)
	pollCtx, stopPoll := context.WithCancel(ctx)
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		c := &http.Client{Timeout: 2 * time.Second}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-pollCtx.Done():
				return
			case <-tick.C:
			}
			req, _ := http.NewRequestWithContext(pollCtx, http.MethodGet, "http://"+src.Config.HTTPListen+"/index.php", nil)
			req.Host = domain
			ok := false
			if resp, err := c.Do(req); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				ok = resp.StatusCode == 200 && string(b) == "hello 42"
			}
			mu.Lock()
			polls = append(polls, poll{time.Now(), ok})
			mu.Unlock()
		}
	}()

	m, err := s.Admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: user, ToNode: dst.Name})
	if err != nil {
		t.Fatal(err)
	}
	var last *client.Migration
	testenv.WaitFor(t, 4*time.Minute, "migration DONE", func() bool {
		got, err := s.Admin.Migration(ctx, m.ID)
		if err == nil && got != nil {
			last = got
			if got.Status == "FAILED" || got.Status == "CANCELLED" {
				t.Fatalf("migration %s: %s", got.Status, deref(got.Error))
			}
		}
		return err == nil && got != nil && got.Status == "DONE"
	})
	// A little after the end, through the source's proxy.
	time.Sleep(time.Second)
	stopPoll()
	<-pollDone

	var suspendAt time.Time
	for _, st := range last.Steps {
		if st.Name == "suspend" && st.StartedAt != nil {
			suspendAt = *st.StartedAt
		}
	}
	if suspendAt.IsZero() {
		t.Fatalf("no suspend step: %+v", last.Steps)
	}
	mu.Lock()
	before, failedBefore, failedAfter, after := 0, 0, 0, 0
	for _, p := range polls {
		if p.at.Before(suspendAt) {
			before++
			if !p.ok {
				failedBefore++
			}
		} else {
			after++
			if !p.ok {
				failedAfter++
			}
		}
	}
	mu.Unlock()
	t.Logf("%d polls before the cutover (%d failed), %d from it on (%d failed); downtime %s ms", before, failedBefore, after, failedAfter, downtime(last.DowntimeMs))
	if before == 0 || failedBefore != 0 {
		t.Fatalf("the site failed %d of %d requests while the home was copied", failedBefore, before)
	}
	// The target serves the site; the source passes its requests on.
	if code, body, _ := get(t, dst.Config.HTTPListen, domain, "/index.php"); code != 200 || body != "hello 42" {
		t.Fatalf("site on the target: %d %q", code, body)
	}
	if code, body, _ := get(t, src.Config.HTTPListen, domain, "/index.php"); code != 200 || body != "hello 42" {
		t.Fatalf("site through the source's proxy: %d %q", code, body)
	}
}

func downtime(ms *int64) string {
	if ms == nil {
		return "-"
	}
	return strconv.FormatInt(*ms, 10)
}

// A migration survives its target agent's kill and the server's restart
// in the middle: the tasks written before are delivered when the agent
// is back, the server resumes from the record, and the home arrives
// whole.
func TestMigrationE2EResumesAfterKillAndRestart(t *testing.T) {
	needMigrationHost(t)
	s := testenv.StartServer(t)
	src := s.StartAgent(t, "src-1", func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	dst := s.StartIsolatedAgent(t, "dst-1", func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "mig", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, user)
	a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: user + ".example.com", Plan: "mig", Node: src.Name})
	if err != nil {
		t.Fatal(err)
	}
	waitAccountActive(t, s.Admin, a.ID)
	home, _ := testenv.HostUser(user)
	content := bytes.Repeat([]byte("resumed\n"), 10000)
	if err := os.WriteFile(filepath.Join(home, "keep.txt"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	// The target is down when the migration starts: its prepare task
	// waits in its queue.
	dst.Stop()
	m, err := s.Admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: user, ToNode: dst.Name})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, time.Minute, "prepare sent", func() bool {
		got, err := s.Admin.Migration(ctx, m.ID)
		return err == nil && got != nil && slices.ContainsFunc(got.Steps, func(st client.MigrationStep) bool { return st.Name == "prepare" && st.Status == "RUNNING" })
	})
	s.Restart()
	dst.Start()
	dst.WaitReady()
	admin := s.Admin
	testenv.WaitFor(t, 4*time.Minute, "migration DONE", func() bool {
		got, err := admin.Migration(ctx, m.ID)
		if err == nil && got != nil && (got.Status == "FAILED" || got.Status == "CANCELLED") {
			t.Fatalf("migration %s: %s", got.Status, deref(got.Error))
		}
		return err == nil && got != nil && got.Status == "DONE"
	})
	got, _ := admin.Migration(ctx, m.ID)
	for _, st := range got.Steps {
		if st.Name == "prepare" || st.Name == "key" {
			t.Logf("step %s %s", st.Name, st.Status)
		}
	}
	dstHome, ok := dst.User(user)
	if !ok {
		t.Fatalf("no user %s on the target", user)
	}
	if b, err := os.ReadFile(filepath.Join(dstHome, "keep.txt")); err != nil || !bytes.Equal(b, content) {
		t.Fatalf("file on the target: %d bytes (%v)", len(b), err)
	}
}

// Mail moves with the account: two mailboxes holding messages, delivered
// through the source's Exim and Dovecot, log in over IMAP on the
// target's own port with their original passwords (the hashes moved
// sealed, the passwords were never known to the control plane after
// creation) and hold the same messages.
func TestMigrationE2EMail(t *testing.T) {
	for _, d := range []string{"/usr/sbin/exim4", "/usr/sbin/dovecot"} {
		testenv.RequireDaemon(t, d)
	}
	needMigrationHost(t)
	sink := testenv.StartSMTPSink(t)
	s := testenv.StartServer(t)
	relay := func(c *nodeagent.Config) { c.MailRelay, c.NoMailAntivirus = sink.Addr, true }
	src := s.StartAgent(t, "src-1", testenv.WithModules(t, "mail"), relay, func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	dst := s.StartIsolatedAgent(t, "dst-1", testenv.WithModules(t, "mail"), relay, func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	waitMailServices(t, s, src.Name, dst.Name)
	for _, n := range []string{src.Name, dst.Name} {
		if _, err := s.Admin.UpdateNode(ctx, n, client.NodeUpdate{Roles: []string{"WEB", "DNS", "MAIL"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "mig", DiskMB: 200, BandwidthMB: 1000, Domains: 1, Mailboxes: 2, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, user)
	domain := user + ".example.com"
	a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: "mig", Node: src.Name})
	if err != nil {
		t.Fatal(err)
	}
	waitAccountActive(t, s.Admin, a.ID)

	// Two mailboxes, messages submitted to each through the source.
	boxes := map[string]string{} // address → password
	want := map[string][]string{}
	for _, local := range []string{"info", "sales"} {
		addr := local + "@" + domain
		p, err := s.Admin.CreateMailbox(ctx, a.ID, addr, "", 100)
		if err != nil || p.Password == nil {
			t.Fatalf("createMailbox %s: %+v %v", addr, p, err)
		}
		boxes[addr] = *p.Password
		waitMailbox(t, s.Admin, a.ID, addr, "ACTIVE")
	}
	for addr, pw := range boxes {
		n := 2
		if strings.HasPrefix(addr, "sales@") {
			n = 3
		}
		for i := range n {
			msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: before the move %d\r\nMessage-ID: <mig-%d-%s>\r\n\r\nmessage %d for %s, kept across nodes\r\n", addr, addr, i, i, addr, i, addr)
			if err := submit(src.Config.SubmissionListen, addr, pw, addr, []string{addr}, msg); err != nil {
				t.Fatalf("submit to %s: %v", addr, err)
			}
			want[addr] = append(want[addr], msg)
		}
	}
	for addr, pw := range boxes {
		testenv.WaitFor(t, 30*time.Second, "messages in "+addr+" on the source", func() bool {
			return len(inbox(t, src.Config.IMAPSListen, addr, pw)) == len(want[addr])
		})
	}

	m, err := s.Admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: user, ToNode: dst.Name})
	if err != nil {
		t.Fatal(err)
	}
	last := waitMigration(t, s.Admin, m.ID, "DONE", 5*time.Minute)
	for _, st := range last.Steps {
		t.Logf("step %-22s %-8s %d bytes %s", st.Name, st.Status, st.Bytes, deref(st.Error))
	}
	for addr, pw := range boxes {
		waitMailbox(t, s.Admin, a.ID, addr, "ACTIVE")
		// The target's Dovecot, with the hash that came sealed.
		var got []string
		testenv.WaitFor(t, time.Minute, addr+" logs in on the target", func() bool {
			c, err := imapDial(t, dst.Config.IMAPSListen, addr, pw)
			if err != nil {
				return false
			}
			c.Close()
			got = inbox(t, dst.Config.IMAPSListen, addr, pw)
			return len(got) == len(want[addr])
		})
		for i, msg := range want[addr] {
			if !slices.ContainsFunc(got, func(g string) bool { return strings.HasSuffix(g, msg) }) {
				t.Errorf("%s on the target lacks message %d (%d messages there)", addr, i, len(got))
			}
		}
		t.Logf("%s: %d messages on the target, login with the original password", addr, len(got))
	}
}

// waitMailServices waits until Exim and Dovecot run on the nodes.
func waitMailServices(t *testing.T, s *testenv.Server, nodes ...string) {
	t.Helper()
	for _, n := range nodes {
		testenv.WaitFor(t, 2*time.Minute, "exim and dovecot running on "+n, func() bool {
			svcs, _, err := s.Admin.Services(context.Background(), n)
			running := map[string]bool{}
			for _, sv := range svcs {
				running[sv.Name] = sv.State == "RUNNING"
			}
			return err == nil && running["exim"] && running["dovecot"]
		})
	}
}

// waitMigration waits until migration id has status want, failing on
// FAILED or CANCELLED (unless wanted) with its steps.
func waitMigration(t testing.TB, c *client.Client, id, want string, timeout time.Duration) *client.Migration {
	t.Helper()
	var last *client.Migration
	testenv.WaitFor(t, timeout, "migration "+want, func() bool {
		got, err := c.Migration(context.Background(), id)
		if err != nil || got == nil {
			return false
		}
		last = got
		if got.Status != want && (got.Status == "FAILED" || got.Status == "CANCELLED") {
			for _, st := range got.Steps {
				t.Logf("step %-22s %-8s %s", st.Name, st.Status, deref(st.Error))
			}
			t.Fatalf("migration %s: %s", got.Status, deref(got.Error))
		}
		return got.Status == want
	})
	return last
}

// DNS follows the account: the target node has an address of its own
// (127.0.0.2, its PowerDNS listening there), both nodes serve DNS. The
// account's A record, asked of both nameservers, is the source's address
// before the migration, the target's after it, and the source's again
// after a rollback.
func TestMigrationE2EDNS(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/pdns_server")
	needMigrationHost(t)
	const srcAddr, dstAddr = "127.0.0.1", "127.0.0.2"
	s := testenv.StartServer(t)
	src := s.StartAgent(t, "src-1", testenv.WithModules(t, "dns"), func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	dst := s.StartIsolatedAgentAt(t, "dst-1", dstAddr, testenv.WithModules(t, "dns"),
		testenv.ListenOn(dstAddr, func(c *nodeagent.Config) *string { return &c.DNSListen }),
		func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	for _, n := range []string{src.Name, dst.Name} {
		testenv.WaitFor(t, 2*time.Minute, "pdns running on "+n, func() bool {
			svcs, _, err := s.Admin.Services(ctx, n)
			return err == nil && slices.ContainsFunc(svcs, func(sv client.Service) bool { return sv.Name == "pdns" && sv.State == "RUNNING" })
		})
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "mig", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, user)
	domain := user + ".example.com"
	a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: "mig", Node: src.Name})
	if err != nil {
		t.Fatal(err)
	}
	waitAccountActive(t, s.Admin, a.ID)
	servers := []string{src.Config.DNSListen, dst.Config.DNSListen}
	waitA := func(phase, want string) {
		t.Helper()
		for _, ns := range servers {
			var got []string
			testenv.WaitFor(t, time.Minute, phase+": "+domain+" A "+want+" at "+ns, func() bool {
				got = aRecords(ns, domain)
				return slices.Equal(got, []string{want})
			})
			t.Logf("%s: %s A %v at %s", phase, domain, got, ns)
		}
	}
	waitA("before", srcAddr)

	m, err := s.Admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: user, ToNode: dst.Name})
	if err != nil {
		t.Fatal(err)
	}
	waitMigration(t, s.Admin, m.ID, "DONE", 5*time.Minute)
	waitA("migrated", dstAddr)

	if _, err := s.Admin.MigrationAction(ctx, "rollbackMigration", m.ID); err != nil {
		t.Fatal(err)
	}
	waitMigration(t, s.Admin, m.ID, "ROLLED_BACK", 3*time.Minute)
	waitA("rolled back", srcAddr)
}

// aRecords asks server for name's A records (nil when it cannot answer).
func aRecords(server, name string) []string {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	in, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(q, server)
	if err != nil {
		return nil
	}
	var out []string
	for _, rr := range in.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// needMigrationHost skips a test this machine cannot run: agents create
// Linux users (root), and the migration copies with rsync.
func needMigrationHost(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("agents create Linux users: needs root")
	}
	if _, err := exec.LookPath("rsync"); err != nil {
		t.Skip("rsync is not installed")
	}
}
