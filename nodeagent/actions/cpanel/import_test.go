package cpanel_test

// Import tests against real Linux users (named validate.TestUserPrefix +
// random, removed at cleanup and again by TestMain) with their homes under
// a temporary prefix, and, where MariaDB is installed, a private mariadbd.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/internal/testenv"
	mdbtest "github.com/npanel/npanel/internal/testenv/mariadb"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/cpanel"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestMain(m *testing.M) { testenv.MainRemovingTestUsers(m) }

// importKey stands for the node's key in these tests.
var importKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

type fixture struct {
	env  *actions.Env
	mod  *cpanel.Module
	p    *platform.Profile
	user string
	uid  int
	gid  int
	home string
}

func requireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireDaemon(t, "/usr/sbin/useradd")
	if os.Geteuid() != 0 {
		if strings.EqualFold(os.Getenv("CI"), "true") {
			t.Fatal("import tests need root")
		}
		t.Skip("import tests need root")
	}
}

// newFixture makes a prefix (0755 up to it, for mariadbd), its import
// area, and a real user whose home is under the prefix.
func newFixture(t testing.TB, dbm *db.Module) *fixture {
	t.Helper()
	requireRoot(t)
	prefix, err := os.MkdirTemp("", "npt-cpanel-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(prefix) })
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	p := platform.Debian12(prefix)
	// Parents 0755 (mariadbd's user must reach var/lib/mysql), the area 0700.
	if err := os.MkdirAll(p.Cpanel().ImportDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p.Cpanel().ImportDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(p.HomeBase, 0o755); err != nil {
		t.Fatal(err)
	}
	name := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, name)
	home := filepath.Join(p.HomeBase, name)
	if out, err := exec.Command("/usr/sbin/useradd", "-M", "-d", home, "-s", "/usr/sbin/nologin", "-U", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	st := lookup(t, name)
	if err := os.Mkdir(home, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, st[0], st[1]); err != nil {
		t.Fatal(err)
	}
	env := &actions.Env{Node: "node-test", Logger: slog.New(slog.DiscardHandler), Profile: p, DataDir: t.TempDir()}
	m := cpanel.NewModule(dbm, mail.NewModule())
	m.PublicKey = func(*actions.Env) (crypto.PublicKey, error) { return &importKey.PublicKey, nil }
	return &fixture{env: env, mod: m, p: p, user: name, uid: st[0], gid: st[1], home: home}
}

func lookup(t testing.TB, name string) [2]int {
	t.Helper()
	out, err := exec.Command("/usr/bin/id", "-u", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	out, err = exec.Command("/usr/bin/id", "-g", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	gid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	return [2]int{uid, gid}
}

// addMailbox leaves a mailbox as the mail module's EnsureMailbox does:
// its passwd-file in UsersDir/DOMAIN/LOCAL and its empty Maildir in the
// account's home, 0700 and the account's.
func (f *fixture) addMailbox(t testing.TB, address string) {
	t.Helper()
	local, domain, _ := strings.Cut(address, "@")
	dir := filepath.Join(f.p.Mail().UsersDir, domain)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mh := filepath.Join(f.home, "mail", domain, local)
	line := fmt.Sprintf("%s:{BLF-CRYPT}$2a$05$abcdefghijklmnopqrstuu:%d:%d::%s::userdb_quota_rule=*:storage=0M\n", local, f.uid, f.gid, mh)
	if err := os.WriteFile(filepath.Join(dir, local), []byte(line), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"mail", "mail/" + domain, "mail/" + domain + "/" + local, "mail/" + domain + "/" + local + "/Maildir",
		"mail/" + domain + "/" + local + "/Maildir/cur", "mail/" + domain + "/" + local + "/Maildir/new", "mail/" + domain + "/" + local + "/Maildir/tmp"} {
		p := filepath.Join(f.home, d)
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			t.Fatal(err)
		}
		if err := os.Chown(p, f.uid, f.gid); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) importArchive(t testing.TB, req *agentpb.ImportCpanelBackupAction) (*agentpb.ImportCpanelBackupResult, error) {
	t.Helper()
	a := f.mod.NewImport(req)
	a.AllowTestUsernames()
	if err := a.Validate(); err != nil {
		return nil, err
	}
	out, err := a.Apply(context.Background(), f.env)
	if err != nil {
		return nil, err
	}
	return out.(*agentpb.ImportCpanelBackupResult), nil
}

func owner(t testing.TB, p string) (int, int, os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), fi.Mode()
}

func TestImportFilesMaildirsCron(t *testing.T) {
	for _, layout := range []string{cpaneltest.LayoutCpmove, cpaneltest.LayoutBackup} {
		t.Run(layout, func(t *testing.T) {
			f := newFixture(t, nil)
			o := cpaneltest.Default(layout)
			p := cpaneltest.Build(t, f.p.Cpanel().ImportDir, o)
			rel := filepath.Base(p)
			f.addMailbox(t, "info@example.com")
			f.addMailbox(t, "sales@addon.org")
			req := &agentpb.ImportCpanelBackupAction{Path: rel, Username: f.user, Files: true, Cron: true,
				Mailboxes: []string{"info@example.com", "sales@addon.org"}}
			res, err := f.importArchive(t, req)
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Failed) > 0 {
				t.Fatalf("failed: %v", res.Failed)
			}
			// Files, owned by the account, modes kept but never set-id.
			b, err := os.ReadFile(filepath.Join(f.home, "public_html/index.php"))
			if err != nil || !strings.Contains(string(b), "hello from example.com") {
				t.Fatalf("index.php: %q %v", b, err)
			}
			for _, rel := range []string{"public_html", "public_html/index.php", "public_html/.htaccess", "addon.org/index.html", "public_html/blog/index.html", "www"} {
				uid, gid, _ := owner(t, filepath.Join(f.home, rel))
				if uid != f.uid || gid != f.gid {
					t.Errorf("%s owned by %d:%d, want %d:%d", rel, uid, gid, f.uid, f.gid)
				}
			}
			if _, _, mode := owner(t, filepath.Join(f.home, "public_html/index.php")); mode.Perm() != 0o644 {
				t.Errorf("index.php mode %v", mode)
			}
			if _, _, mode := owner(t, filepath.Join(f.home, o.SetuidFile)); mode&(os.ModeSetuid|os.ModeSetgid) != 0 || mode.Perm() != 0o755 {
				t.Errorf("%s mode %v: set-id bits kept", o.SetuidFile, mode)
			}
			if l, err := os.Readlink(filepath.Join(f.home, "www")); err != nil || l != "public_html" {
				t.Errorf("www -> %q %v", l, err)
			}
			// etc/ (mail password hashes) is not written into the home.
			if _, err := os.Lstat(filepath.Join(f.home, "etc")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("etc/ written into the home: %v", err)
			}
			// Maildirs: the messages in the mailbox's Maildir, the account's.
			cur := filepath.Join(f.home, "mail/example.com/info/Maildir/cur")
			ents, err := os.ReadDir(cur)
			if err != nil || len(ents) != 3 {
				t.Fatalf("maildir cur: %d entries, %v", len(ents), err)
			}
			if uid, _, mode := owner(t, filepath.Join(cur, ents[0].Name())); uid != f.uid || mode.Perm()&0o077 != 0o040 && mode.Perm() != 0o640 {
				t.Errorf("message owned by %d mode %v", uid, mode)
			}
			if ents, _ := os.ReadDir(filepath.Join(f.home, "mail/addon.org/sales/Maildir/cur")); len(ents) != 1 {
				t.Errorf("sales@addon.org: %d messages", len(ents))
			}
			// Cron: the spool file, 0600, the user's, paths moved to the new home.
			spool := filepath.Join(f.p.Cpanel().CronSpoolDir, f.user)
			cb, err := os.ReadFile(spool)
			if err != nil {
				t.Fatal(err)
			}
			if uid, _, mode := owner(t, spool); uid != f.uid || mode.Perm() != 0o600 {
				t.Errorf("crontab owned by %d mode %v", uid, mode)
			}
			if strings.Contains(string(cb), "/home/cpuser/") || !strings.Contains(string(cb), f.home+"/public_html/cron.php") || !strings.Contains(string(cb), "MAILTO=") {
				t.Errorf("crontab:\n%s", cb)
			}
			kinds := map[string]int{}
			for _, it := range res.Items {
				kinds[it.Kind]++
			}
			if kinds["files"] != 1 || kinds["mailbox"] != 2 || kinds["cron"] != 1 || res.Files == 0 {
				t.Errorf("items %v files %d", res.Items, res.Files)
			}

			// Repeating overwrites the import's own output only.
			if err := os.WriteFile(filepath.Join(f.home, "public_html/index.php"), []byte("changed"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(f.home, "public_html/mine.txt"), []byte("mine"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := f.importArchive(t, req); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(f.home, "public_html/index.php")); !strings.Contains(string(b), "hello from") {
				t.Errorf("index.php not restored: %q", b)
			}
			if b, _ := os.ReadFile(filepath.Join(f.home, "public_html/mine.txt")); string(b) != "mine" {
				t.Errorf("a file the import did not write was touched: %q", b)
			}
			if ents, _ := os.ReadDir(cur); len(ents) != 3 {
				t.Errorf("after a repeat, %d messages", len(ents))
			}
		})
	}
}

// tree lists every path under dir with its size and mode.
func tree(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, _ := d.Info()
		if fi != nil {
			out = append(out, fmt.Sprintf("%s %d %v", p, fi.Size(), fi.Mode()))
		}
		return nil
	})
	return out
}

func TestImportHostileWritesNothing(t *testing.T) {
	for _, kind := range cpaneltest.HostileKinds {
		t.Run(kind, func(t *testing.T) {
			f := newFixture(t, nil)
			f.mod.Limits = cpanel.Limits{MinUncompressed: 64 << 20}
			p, entry := cpaneltest.Hostile(t, f.p.Cpanel().ImportDir, kind)
			before := tree(t, f.p.Prefix)
			_, err := f.importArchive(t, &agentpb.ImportCpanelBackupAction{Path: filepath.Base(p), Username: f.user, Files: true, Cron: true})
			var ee *cpanel.EntryError
			if !errors.As(err, &ee) || !strings.HasPrefix(ee.Entry, entry) {
				t.Fatalf("err %v, want the entry %q named", err, entry)
			}
			if r := actions.ReasonOf(err); r != agentpb.ErrorReason_ERROR_REASON_INVALID {
				t.Errorf("reason %v", r)
			}
			if after := tree(t, f.p.Prefix); !slices.Equal(before, after) {
				t.Errorf("the prefix changed:\nbefore %v\nafter  %v", before, after)
			}
			for _, q := range []string{"/tmp/npanel-cpanel-escaped.txt", filepath.Join(filepath.Dir(f.p.Prefix), "escaped.txt")} {
				if _, err := os.Lstat(q); err == nil {
					t.Errorf("%s written", q)
				}
			}
			// Analyze refuses it the same way.
			_, err = f.mod.NewAnalyze(&agentpb.AnalyzeCpanelBackupAction{Path: filepath.Base(p)}).Apply(context.Background(), f.env)
			if !errors.As(err, &ee) {
				t.Errorf("analyze: %v", err)
			}
		})
	}
}

// mariaFixture is newFixture with a private mariadbd where the profile
// expects it, and a db module using it.
func mariaFixture(t testing.TB) (*fixture, *db.Module) {
	t.Helper()
	mdbtest.Require(t)
	dbm := db.NewModule()
	f := newFixture(t, dbm)
	d := f.p.DB()
	for _, dir := range []string{d.MariaDBDataDir, d.MariaDBRunDir, d.MariaDBTmpDir} {
		if err := mkdirPublic(f.p.Prefix, dir); err != nil {
			t.Fatal(err)
		}
	}
	mdbtest.StartWith(t, mdbtest.Layout{DataDir: d.MariaDBDataDir, RunDir: d.MariaDBRunDir, Socket: d.MariaDBSocket, PIDFile: d.MariaDBPIDFile, TmpDir: d.MariaDBTmpDir})
	t.Cleanup(dbm.Close)
	return f, dbm
}

// mkdirPublic makes the directories between prefix and dir (excluded)
// searchable by mariadbd's user.
func mkdirPublic(prefix, dir string) error {
	rel, err := filepath.Rel(prefix, filepath.Dir(dir))
	if err != nil {
		return err
	}
	p := prefix
	for _, el := range strings.Split(rel, string(filepath.Separator)) {
		p = filepath.Join(p, el)
		if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

func rootDB(t testing.TB, socket, name string) *sql.DB {
	t.Helper()
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User, c.DBName = "unix", socket, "root", name
	conn, err := mysql.NewConnector(c)
	if err != nil {
		t.Fatal(err)
	}
	d := sql.OpenDB(conn)
	t.Cleanup(func() { d.Close() })
	return d
}

func TestImportDatabase(t *testing.T) {
	f, _ := mariaFixture(t)
	o := cpaneltest.Default(cpaneltest.LayoutBackup)
	o.Databases[0].Rows = 50
	p := cpaneltest.Build(t, f.p.Cpanel().ImportDir, o)
	target := f.user + "_wp"
	req := &agentpb.ImportCpanelBackupAction{Path: filepath.Base(p), Username: f.user, Databases: map[string]string{"cpuser_wp": target}}
	for range 2 { // a repeat replaces the data, no duplicates
		res, err := f.importArchive(t, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Failed) > 0 {
			t.Fatalf("failed: %v", res.Failed)
		}
		var n int
		if err := rootDB(t, f.p.DB().MariaDBSocket, target).QueryRow("SELECT COUNT(*) FROM items").Scan(&n); err != nil || n != 50 {
			t.Fatalf("rows %d %v", n, err)
		}
	}
	// The throw-away import users are gone.
	var users int
	if err := rootDB(t, f.p.DB().MariaDBSocket, "mysql").QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'npimport\\_%'").Scan(&users); err != nil || users != 0 {
		t.Errorf("%d import users left, %v", users, err)
	}
}

// A dump is untrusted: what reaches beyond its database fails, and
// client commands never run.
func TestImportDatabaseHostileDump(t *testing.T) {
	f, dbm := mariaFixture(t)
	target := f.user + "_evil"
	marker := filepath.Join(f.p.Prefix, "shell-ran")
	for _, dump := range []string{
		"GRANT ALL PRIVILEGES ON *.* TO 'evil'@'%' IDENTIFIED BY 'x';\n",
		"CREATE USER 'evil'@'%' IDENTIFIED BY 'x';\n",
		"CREATE DATABASE evil_other;\n",
		"USE mysql;\nDELETE FROM global_priv;\n",
		"\\! touch " + marker + "\n",
		"system touch " + marker + "\n",
		"/*M!999999\\- enable the sandbox mode */\n\\! touch " + marker + "\n",
	} {
		err := dbm.ImportDump(context.Background(), f.env, target, strings.NewReader(dump))
		if err == nil {
			t.Errorf("dump %q imported", dump)
		}
		t.Logf("%q: %v", dump, err)
		if _, serr := os.Lstat(marker); serr == nil {
			t.Fatalf("dump %q ran a shell command", dump)
		}
	}
	var n int
	if err := rootDB(t, f.p.DB().MariaDBSocket, "mysql").QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User = 'evil'").Scan(&n); err != nil || n != 0 {
		t.Errorf("evil users: %d %v", n, err)
	}
	if err := rootDB(t, f.p.DB().MariaDBSocket, "mysql").QueryRow("SELECT COUNT(*) FROM mysql.global_priv").Scan(&n); err != nil || n == 0 {
		t.Errorf("global_priv rows: %d %v", n, err)
	}
}
