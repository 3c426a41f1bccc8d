package nodeagent_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/platform"
)

// TestSupervisedDataNotWorldReadable is finding 6 of issue 23: a tenant's
// PHP runs as a local user, so anything under the agent's prefix and data
// dir that others may read is readable by every tenant (it read another
// tenant's DNSSEC keys from PowerDNS's database). After the agent set up
// its web, DNS and database modules under a temp prefix, the test walks
// the prefix and the data dir and applies this rule:
//
//   - data trees (the agent's data dir: key, journal, certificates, module
//     secrets; PowerDNS's database directory with the database and its
//     -wal and -shm files; the MariaDB and PostgreSQL data directories): no
//     regular file has the "other" read bit and no directory the other
//     read or search bit;
//   - log trees (the prefix's var/log: nginx's logs tell one account's
//     visitors and errors to the others): no directory has the other read
//     or search bit, so the files nginx creates 0644 stay unreachable;
//   - anywhere: a file holding a PEM private key or an SQLite database has
//     no other read bit, and nothing is world-writable.
//
// It then breaks the modes as an older agent left them, restarts the agent
// and checks that its start repaired them.
func TestSupervisedDataNotWorldReadable(t *testing.T) {
	for _, d := range []string{"/usr/sbin/nginx", "/usr/sbin/php-fpm8.2", "/usr/sbin/pdns_server", "/usr/sbin/mariadbd"} {
		testenv.RequireDaemon(t, d)
	}
	if os.Geteuid() != 0 {
		t.Skip("the modules' daemons drop to their own users: needs root")
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "perm-1", testenv.WithModules(t, "web", "dns", "db"))
	prefix, dataDir := ag.Config.Prefix, ag.Config.DataDir
	p, err := platform.ProfileFor(platform.NameDebian12, prefix)
	if err != nil {
		t.Fatal(err)
	}
	db := p.DB()
	pdnsDB := p.DNS().Database
	// The rule must not pass for want of files: what it guards exists.
	testenv.WaitFor(t, 60*time.Second, "the daemons' data written", func() bool {
		for _, f := range []string{pdnsDB, pdnsDB + "-wal", pdnsDB + "-shm", filepath.Join(dataDir, "node.key"),
			filepath.Join(db.MariaDBDataDir, "mysql"), filepath.Join(prefix, "var/log/nginx/access.log")} {
			if _, err := os.Stat(f); err != nil {
				return false
			}
		}
		return true
	})
	for d := p.Web().SuspendedDir; d != prefix; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err != nil || fi.Mode().Perm()&0o001 == 0 {
			t.Errorf("nginx's workers cannot pass through %s: %v %v", d, fi.Mode(), err)
		}
	}
	data := []string{dataDir, filepath.Dir(pdnsDB), db.MariaDBDataDir, db.PgDataDir}
	logs := []string{filepath.Join(prefix, "var/log")}
	for _, bad := range checkModes(t, []string{prefix, dataDir}, data, logs) {
		t.Error(bad)
	}

	// An install by an older agent: everything 0755/0644.
	ag.Stop()
	for _, f := range []string{filepath.Dir(pdnsDB), dataDir, db.MariaDBDataDir, filepath.Join(prefix, "var/log"),
		filepath.Join(prefix, "var/log/nginx"), filepath.Join(prefix, "var/log/npanel")} {
		chmod(t, f, 0o755)
	}
	for _, f := range []string{pdnsDB, pdnsDB + "-wal", pdnsDB + "-shm", filepath.Join(dataDir, "node.key"),
		filepath.Join(dataDir, "root.crt"), filepath.Join(db.MariaDBDataDir, "mysql_upgrade_info")} {
		chmod(t, f, 0o644)
	}
	if len(checkModes(t, []string{prefix, dataDir}, data, logs)) < 9 {
		t.Fatal("breaking the modes did not break them")
	}
	ag.Start()
	testenv.WaitFor(t, 60*time.Second, "perm-1 connected again", ag.Connected)
	for _, bad := range checkModes(t, []string{prefix, dataDir}, data, logs) {
		t.Error("after restart: " + bad)
	}
}

func chmod(t *testing.T, p string, m os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, m); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

// checkModes walks roots and returns every violation of the rule above.
func checkModes(t *testing.T, roots, data, logs []string) []string {
	t.Helper()
	under := func(p string, trees []string) bool {
		for _, r := range trees {
			if p == r || strings.HasPrefix(p, r+"/") {
				return true
			}
		}
		return false
	}
	var bad []string
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if os.IsNotExist(err) {
					return nil // a daemon's file that came and went
				}
				return err
			}
			if d.IsDir() && d.Name() == "home" && filepath.Dir(p) == root {
				return filepath.SkipDir // the accounts' own files
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return nil
			}
			m := fi.Mode()
			switch {
			case m&fs.ModeSymlink != 0, m&fs.ModeSocket != 0:
			case m.Perm()&0o002 != 0 && m&fs.ModeSticky == 0:
				bad = append(bad, p+": world-writable "+m.String())
			case m.IsDir() && under(p, append(data, logs...)) && m.Perm()&0o005 != 0:
				bad = append(bad, p+": directory of data or logs open to others "+m.String())
			case m.IsRegular() && m.Perm()&0o004 != 0 && (under(p, data) || holdsSecret(p)):
				bad = append(bad, p+": readable by others "+m.String())
			}
			return nil
		})
		if err != nil {
			t.Fatalf("walk %s: %v", root, err)
		}
	}
	return bad
}

// holdsSecret reports whether a file starts like an SQLite database or
// holds a PEM private key.
func holdsSecret(p string) bool {
	b, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	return bytes.HasPrefix(b, []byte("SQLite format 3\x00")) || bytes.Contains(b, []byte("PRIVATE KEY-----"))
}
