package controlplane_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/internal/testenv/mariadb"
	"github.com/npanel/npanel/nodeagent"
	"github.com/npanel/npanel/nodeagent/platform"
)

// BenchmarkMigrate moves an account with 10,000 small files (various
// sizes, in 100 directories), a MariaDB database of about 50 MB and 10
// mailboxes holding 3 messages each from a real source agent (in
// process) to a real target agent (isolated, its own /etc), its PHP site
// polled on the source every 50 ms throughout. Reported per migration:
//
//   - seconds/op: migrateAccount to DONE;
//   - downtime-ms: the downtime the migration records (suspend to the
//     target ACTIVE);
//   - poll-fail-ms: failed polls × 50 ms, and poll-window-ms: the longest
//     run of failed polls (first failure to next success), as a client
//     sees the downtime;
//   - rsync-s: a bare `rsync -a` of the same home to a temp dir in the
//     same run, the floor the file copy is compared with.
//
// Not part of make test: it runs only with -bench. Everything it makes
// (users, prefixes, daemons, temp dirs) goes at cleanup.
func BenchmarkMigrate(b *testing.B) {
	for _, d := range []string{"/usr/sbin/nginx", "/usr/sbin/php-fpm8.2", "/usr/sbin/exim4", "/usr/sbin/dovecot", "/usr/sbin/mariadbd"} {
		testenv.RequireDaemon(b, d)
	}
	needMigrationHost(b)
	const (
		nFiles     = 10000
		nDirs      = 100
		nMailboxes = 10
		nMessages  = 3
		dbRowsLog2 = 16  // 65,536 rows
		rowPayload = 800 // bytes of text per row: 50 MiB of row text
	)
	sink := testenv.StartSMTPSink(b)
	s := testenv.StartServer(b)
	mods := []string{"web", "db", "mail"}
	node := func(c *nodeagent.Config) {
		c.MailRelay, c.NoMailAntivirus = sink.Addr, true
		c.MigrationListen = testenv.FreeAddr(b)
	}
	src := s.StartAgent(b, "src-1", testenv.WithModules(b, mods...), node)
	dst := s.StartIsolatedAgent(b, "dst-1", testenv.WithModules(b, mods...), node)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for _, n := range []string{src.Name, dst.Name} {
		testenv.WaitFor(b, 3*time.Minute, "services running on "+n, func() bool {
			svcs, _, err := s.Admin.Services(ctx, n)
			running := map[string]bool{}
			for _, sv := range svcs {
				running[sv.Name] = sv.State == "RUNNING"
			}
			return err == nil && running["nginx"] && running["php-fpm8.2"] && running["mariadb"] && running["exim"] && running["dovecot"]
		})
		if _, err := s.Admin.UpdateNode(ctx, n, client.NodeUpdate{Roles: []string{"WEB", "DNS", "MAIL"}}); err != nil {
			b.Fatal(err)
		}
	}
	srcProf, err := platform.DetectProfile(src.Config.Prefix)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "mig", DiskMB: 4000, BandwidthMB: 10000, Domains: 1, Mailboxes: nMailboxes, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		b.Fatal(err)
	}

	var totalS, downtimeMs, pollFailMs, pollWindowMs, rsyncS float64
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		user := testenv.TestUsername()
		testenv.RemoveUserAtCleanup(b, user)
		domain := user + ".example.com"
		a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: "mig", Node: src.Name})
		if err != nil {
			b.Fatal(err)
		}
		testenv.WaitFor(b, 2*time.Minute, domain+" ACTIVE", func() bool {
			ds, err := s.Admin.Domains(ctx, a.ID)
			return err == nil && slices.ContainsFunc(ds, func(d client.Domain) bool { return d.Name == domain && d.State == "ACTIVE" })
		})
		home, ok := testenv.HostUser(user)
		if !ok {
			b.Fatalf("no home for %s", user)
		}
		fi, err := os.Stat(home)
		if err != nil {
			b.Fatal(err)
		}
		uid, gid := statOwner(fi)

		// The site, and the files.
		own := func(path string) {
			if err := os.Lchown(path, uid, gid); err != nil {
				b.Fatal(err)
			}
		}
		index := filepath.Join(home, "public_html", "index.php")
		if err := os.WriteFile(index, []byte(`<?php echo "hello ", 6*7;`), 0o644); err != nil {
			b.Fatal(err)
		}
		own(index)
		start := time.Now()
		var treeBytes int64
		for d := range nDirs {
			dir := filepath.Join(home, "data", fmt.Sprintf("d%03d", d))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			own(filepath.Dir(dir))
			own(dir)
			for f := range nFiles / nDirs {
				n := d*(nFiles/nDirs) + f
				size := 64 + (n*7919)%4032 // 64 B to 4 KB
				buf := make([]byte, size)
				for j := range buf {
					buf[j] = byte('a' + (n+j)%26)
				}
				p := filepath.Join(dir, "f"+strconv.Itoa(f)+".txt")
				if err := os.WriteFile(p, buf, 0o644); err != nil {
					b.Fatal(err)
				}
				own(p)
				treeBytes += int64(size)
			}
		}
		b.Logf("%d files, %d bytes written in %s", nFiles, treeBytes, time.Since(start).Round(time.Millisecond))

		// The database: a row doubled into 65,536.
		start = time.Now()
		db, err := s.Admin.CreateDatabase(ctx, a.ID, "big", "")
		if err != nil {
			b.Fatal(err)
		}
		up, err := s.Admin.CreateDatabaseUser(ctx, a.ID, "app", "", "")
		if err != nil || up.Password == nil {
			b.Fatalf("createDatabaseUser: %+v %v", up, err)
		}
		dbUser, dbPass := up.User.Name, *up.Password
		if _, err := s.Admin.SetDatabasePrivileges(ctx, a.ID, db.Name, dbUser, []string{"ALL"}); err != nil {
			b.Fatal(err)
		}
		testenv.WaitFor(b, time.Minute, "database user logs in", func() bool {
			return mariadb.QueryAs(srcProf.DB().MariaDBSocket, dbUser, dbPass, db.Name, "SELECT 1") == nil
		})
		stmts := []string{
			"CREATE TABLE t (id INT AUTO_INCREMENT PRIMARY KEY, n INT, body TEXT) ENGINE=InnoDB",
			fmt.Sprintf("INSERT INTO t (n, body) VALUES (0, REPEAT('x', %d))", rowPayload),
		}
		for range dbRowsLog2 {
			stmts = append(stmts, "INSERT INTO t (n, body) SELECT n+1, body FROM t")
		}
		if err := mariadb.QueryAs(srcProf.DB().MariaDBSocket, dbUser, dbPass, db.Name, stmts...); err != nil {
			b.Fatal(err)
		}
		rows := dbCount(b, srcProf.DB().MariaDBSocket, dbUser, dbPass, db.Name)
		b.Logf("database %s: %d rows (%d MB of row text) in %s", db.Name, rows, rows*rowPayload>>20, time.Since(start).Round(time.Millisecond))

		// The mailboxes.
		start = time.Now()
		for m := range nMailboxes {
			addr := fmt.Sprintf("box%d@%s", m, domain)
			p, err := s.Admin.CreateMailbox(ctx, a.ID, addr, "", 100)
			if err != nil || p.Password == nil {
				b.Fatalf("createMailbox %s: %+v %v", addr, p, err)
			}
			testenv.WaitFor(b, time.Minute, addr+" ACTIVE", func() bool { return mailboxStatus(b, s.Admin, a.ID, addr) == "ACTIVE" })
			for k := range nMessages {
				msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: bench %d\r\nMessage-ID: <bench-%d-%s>\r\n\r\nmessage %d\r\n", addr, addr, k, k, addr, k)
				if err := submit(src.Config.SubmissionListen, addr, *p.Password, addr, []string{addr}, msg); err != nil {
					b.Fatalf("submit to %s: %v", addr, err)
				}
			}
		}
		b.Logf("%d mailboxes × %d messages submitted in %s", nMailboxes, nMessages, time.Since(start).Round(time.Millisecond))

		// The floor: a bare rsync -a of the same home.
		bare := filepath.Join(b.TempDir(), "home")
		start = time.Now()
		if out, err := exec.Command("rsync", "-a", home+"/", bare+"/").CombinedOutput(); err != nil {
			b.Fatalf("rsync -a: %v\n%s", err, out)
		}
		rsyncS += time.Since(start).Seconds()
		_ = os.RemoveAll(bare)

		// The polling client, from before the migration to a second
		// after it.
		poller := startPoller(ctx, src.Config.HTTPListen, domain, "/index.php", "hello 42")
		time.Sleep(time.Second)

		b.StartTimer()
		start = time.Now()
		mig, err := s.Admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: user, ToNode: dst.Name})
		if err != nil {
			b.Fatal(err)
		}
		last := waitMigration(b, s.Admin, mig.ID, "DONE", 20*time.Minute)
		took := time.Since(start)
		b.StopTimer()
		time.Sleep(time.Second)
		failed, window, total := poller.stop()

		totalS += took.Seconds()
		pollFailMs += float64(failed * 50)
		pollWindowMs += float64(window.Milliseconds())
		if last.DowntimeMs != nil {
			downtimeMs += float64(*last.DowntimeMs)
		}
		for _, st := range last.Steps {
			d := "-"
			if st.StartedAt != nil && st.FinishedAt != nil {
				d = st.FinishedAt.Sub(*st.StartedAt).Round(time.Millisecond).String()
			}
			b.Logf("step %-22s %-8s %10d bytes %s", st.Name, st.Status, st.Bytes, d)
		}
		b.Logf("migration %d: %s, downtime %s ms recorded; %d of %d polls failed, longest failing window %s",
			i, took.Round(time.Millisecond), downtime(last.DowntimeMs), failed, total, window)
		// The target holds what was moved.
		if dstHome, ok := dst.User(user); !ok {
			b.Fatalf("no user %s on the target", user)
		} else if n := countFiles(filepath.Join(dstHome, "data")); n != nFiles {
			b.Fatalf("%d files on the target, want %d", n, nFiles)
		}
	}
	b.ReportMetric(totalS/float64(b.N), "s/op")
	b.ReportMetric(downtimeMs/float64(b.N), "downtime-ms")
	b.ReportMetric(pollFailMs/float64(b.N), "poll-fail-ms")
	b.ReportMetric(pollWindowMs/float64(b.N), "poll-window-ms")
	b.ReportMetric(rsyncS/float64(b.N), "rsync-s")
}

func dbCount(t testing.TB, socket, user, password, db string) int {
	t.Helper()
	conn, err := sql.Open("mysql", user+":"+password+"@unix("+socket+")/"+db+"?timeout=5s")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n int
	if err := conn.QueryRow("SELECT COUNT(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func countFiles(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// poller GETs a page every 50 ms and records which requests failed.
type poller struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	polls  []poll
}

type poll struct {
	at time.Time
	ok bool
}

func startPoller(ctx context.Context, addr, host, path, want string) *poller {
	ctx, cancel := context.WithCancel(ctx)
	p := &poller{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		c := &http.Client{Timeout: 2 * time.Second}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
			req.Host = host
			ok := false
			if resp, err := c.Do(req); err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				ok = resp.StatusCode == 200 && string(body) == want
			} else if ctx.Err() != nil {
				return
			}
			p.mu.Lock()
			p.polls = append(p.polls, poll{time.Now(), ok})
			p.mu.Unlock()
		}
	}()
	return p
}

// stop ends the polling and returns the failed polls, the longest run
// of failures (from its first failed poll to the next success) and the
// polls made.
func (p *poller) stop() (failed int, window time.Duration, total int) {
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	var runStart time.Time
	for _, q := range p.polls {
		switch {
		case !q.ok:
			failed++
			if runStart.IsZero() {
				runStart = q.at
			}
		case !runStart.IsZero():
			window = max(window, q.at.Sub(runStart))
			runStart = time.Time{}
		}
	}
	if !runStart.IsZero() && len(p.polls) > 0 {
		window = max(window, p.polls[len(p.polls)-1].at.Sub(runStart))
	}
	return failed, window, len(p.polls)
}

func mailboxStatus(t testing.TB, c *client.Client, account, address string) string {
	list, _, err := c.Mailboxes(context.Background(), account, 100, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range list {
		if m.Address == address {
			return m.Status
		}
	}
	return ""
}

func statOwner(fi os.FileInfo) (uid, gid int) {
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid)
}

// BenchmarkDrainNode drains a node of 100 accounts (drainNode with
// migrate, through the API) at parallel 1, 4 and 8, onto two nodes.
//
// It measures the control plane's own throughput only: the nodes are
// fake (the test answers their tasks from etcd at once, as the
// migration tests do), with the migration controller's production
// timings (1 s poll, 10 s sweep): no rsync, SSH, daemons or users.
// BenchmarkDrainNodeReal is the same drain between real agents; the
// difference between the two is what the nodes' work costs.
//
// Reported: seconds per drain (s/op) and accounts/s.
func BenchmarkDrainNode(b *testing.B) {
	const accounts = 100
	for _, parallel := range []int{1, 4, 8} {
		b.Run("parallel="+strconv.Itoa(parallel), func(b *testing.B) {
			var total time.Duration
			for range b.N {
				b.StopTimer()
				total += drainOnce(b, accounts, parallel)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/op")
			b.ReportMetric(float64(accounts*b.N)/total.Seconds(), "accounts/s")
		})
	}
}

// drainOnce starts a server with fake nodes, fills web-1 with accounts
// and times its drain onto web-2 and web-3.
func drainOnce(b *testing.B, accounts, parallel int) time.Duration {
	ctx := context.Background()
	s := testenv.StartServer(b)
	st := s.Store()
	startMigNode(b, s, "web-1", accounts, 1_000_000)
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, 0, accounts)
	for i := range accounts {
		u := fmt.Sprintf("drn%d", i)
		a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: "web"})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	testenv.WaitFor(b, 2*time.Minute, "accounts active on web-1", func() bool {
		for _, id := range ids {
			got, _, err := st.GetAccount(ctx, id)
			if err != nil || got.Node != "web-1" || got.Status != store.AccountActive {
				return false
			}
		}
		return true
	})
	startMigNode(b, s, "web-2", accounts, 1_000_000)
	startMigNode(b, s, "web-3", accounts, 1_000_000)

	b.StartTimer()
	start := time.Now()
	if err := s.Admin.DrainNodeMigrate(ctx, "web-1", parallel); err != nil {
		b.Fatal(err)
	}
	peak := 0
	testenv.WaitFor(b, 30*time.Minute, "all moved", func() bool {
		ms, err := st.ListMigrations(ctx)
		if err != nil {
			return false
		}
		running, done := 0, 0
		for _, m := range ms {
			switch m.Status {
			case store.MigrationPresync, store.MigrationCutover, store.MigrationVerifying:
				running++
			case store.MigrationDone:
				done++
			case store.MigrationFailed:
				b.Fatalf("migration %s FAILED: %s", m.ID, m.Error)
			}
		}
		peak = max(peak, running)
		return done == accounts
	})
	took := time.Since(start)
	b.StopTimer()
	b.Logf("parallel %d: %d accounts drained in %s (%.2f accounts/s), at most %d at once", parallel, accounts, took.Round(time.Millisecond),
		float64(accounts)/took.Seconds(), peak)
	if peak > parallel {
		b.Fatalf("%d migrations ran at once, want at most %d", peak, parallel)
	}
	return took
}

// BenchmarkDrainNodeReal is BenchmarkDrainNode with real agents: the
// source an in-process agent, the target an isolated one, both running
// nginx and PHP-FPM; 100 accounts, each with only its default site, are
// created on the source and the source is drained onto the target at
// parallel 1, 4 and 8 (a fresh cluster for each). Reported: seconds per
// drain (s/op) and accounts/s.
func BenchmarkDrainNodeReal(b *testing.B) {
	testenv.RequireDaemon(b, "/usr/sbin/nginx")
	testenv.RequireDaemon(b, "/usr/sbin/php-fpm8.2")
	needMigrationHost(b)
	const accounts = 100
	for _, parallel := range []int{1, 4, 8} {
		b.Run("parallel="+strconv.Itoa(parallel), func(b *testing.B) {
			var total time.Duration
			for range b.N {
				b.StopTimer()
				total += drainRealOnce(b, accounts, parallel)
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s/op")
			b.ReportMetric(float64(accounts*b.N)/total.Seconds(), "accounts/s")
		})
	}
}

func drainRealOnce(b *testing.B, accounts, parallel int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	s := testenv.StartServer(b)
	mig := func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(b) }
	src := s.StartAgent(b, "src-1", testenv.WithModules(b, "web"), mig)
	dst := s.StartIsolatedAgent(b, "dst-1", testenv.WithModules(b, "web"), mig)
	for _, n := range []string{src.Name, dst.Name} {
		testenv.WaitFor(b, 2*time.Minute, "nginx and php-fpm running on "+n, func() bool {
			svcs, _, err := s.Admin.Services(ctx, n)
			running := map[string]bool{}
			for _, sv := range svcs {
				running[sv.Name] = sv.State == "RUNNING"
			}
			return err == nil && running["nginx"] && running["php-fpm8.2"]
		})
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "small", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 0, Databases: 0, PHPVersions: []string{"8.2"}}); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	ids := make([]string, 0, accounts)
	for range accounts {
		u := testenv.TestUsername()
		testenv.RemoveUserAtCleanup(b, u)
		a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: "small", Node: src.Name})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	testenv.WaitFor(b, 15*time.Minute, "accounts ACTIVE on src-1", func() bool {
		for _, id := range ids {
			a, err := s.Admin.Account(ctx, id)
			if err != nil || a == nil || a.Status != "ACTIVE" || a.NodeName() != src.Name {
				return false
			}
		}
		return true
	})
	b.Logf("%d accounts ACTIVE on %s in %s", accounts, src.Name, time.Since(start).Round(time.Millisecond))

	b.StartTimer()
	start = time.Now()
	if err := s.Admin.DrainNodeMigrate(ctx, src.Name, parallel); err != nil {
		b.Fatal(err)
	}
	testenv.WaitFor(b, 25*time.Minute, "all moved", func() bool {
		ms, _, err := s.Admin.Migrations(ctx, client.MigrationFilter{Drain: src.Name}, 200, "")
		if err != nil {
			return false
		}
		done := 0
		for _, m := range ms {
			switch m.Status {
			case "DONE":
				done++
			case "FAILED", "CANCELLED":
				b.Fatalf("migration %s %s: %s", m.ID, m.Status, deref(m.Error))
			}
		}
		return done == accounts
	})
	took := time.Since(start)
	b.StopTimer()
	b.Logf("parallel %d: %d accounts drained in %s (%.2f accounts/s)", parallel, accounts, took.Round(time.Millisecond), float64(accounts)/took.Seconds())
	return took
}
