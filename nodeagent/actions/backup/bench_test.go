package backup

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/npanel/npanel/protos/agentpb"
)

// BenchmarkBackupAccount measures, for an account with 10,000 files
// (200 MB, incompressible) and a 50 MB MariaDB database: the first and a
// no-change incremental backup through the action, beside restic backup
// of the same tree run by hand (same binary, fresh repository, no nice)
// and rsync -a to a local directory; then a single-file restore and a
// whole-account restore (ALL, in place). Run with -benchtime=1x.
func BenchmarkBackupAccount(b *testing.B) {
	n := newNode(b, nodeOpts{maria: true})
	ctx := ctxT(b)
	const files, size = 10000, 200 << 20
	per := size / files
	for i := range files {
		n.writeFile(b, filepath.Join("public_html", fmt.Sprintf("d%03d", i/100), fmt.Sprintf("f%05d.bin", i)), randBytes(per))
	}
	dbName := n.user + "_big"
	if err := n.dbm.RecreateDatabase(ctx, n.env, "mariadb", dbName, false); err != nil {
		b.Fatal(err)
	}
	root := n.maria.MustRoot(b)
	for _, q := range []string{
		"CREATE TABLE " + dbName + ".t (id INT PRIMARY KEY, v VARBINARY(1024))",
		"INSERT INTO " + dbName + ".t SELECT seq, RANDOM_BYTES(1024) FROM " + dbName + ".seq_1_to_51200",
	} {
		if _, err := root.Exec(q); err != nil {
			b.Fatalf("%s: %v", q, err)
		}
	}
	dbs := []*agentpb.BackupDatabase{mariaDB(dbName)}
	timed := func(name string, f func()) {
		t0 := time.Now()
		f()
		d := time.Since(t0)
		b.ReportMetric(d.Seconds(), name+"-s")
		b.Logf("%-28s %v", name, d.Round(time.Millisecond))
	}
	for range b.N {
		var r1, r2 *agentpb.BackupResult
		timed("backup-first", func() { r1 = n.backup(b, "bench1", dbs, nil) })
		timed("backup-nochange", func() { r2 = n.backup(b, "bench2", dbs, nil) })
		b.Logf("first: %d files, %d bytes, added %d; no-change added %d", r1.FileCount, r1.SizeBytes, r1.AddedBytes, r2.AddedBytes)

		// restic by hand: same tree, its own repository.
		repo := filepath.Join(b.TempDir(), "repo")
		pw := filepath.Join(b.TempDir(), "pw")
		_ = os.WriteFile(pw, []byte("x"), 0o600)
		restic := func(args ...string) {
			c := exec.Command(resticBin, append([]string{"-r", repo, "--password-file", pw, "-q"}, args...)...)
			if out, err := c.CombinedOutput(); err != nil {
				b.Fatalf("restic %v: %v: %s", args, err, out)
			}
		}
		restic("init")
		timed("restic-by-hand-first", func() { restic("backup", n.home) })
		timed("restic-by-hand-nochange", func() { restic("backup", n.home) })
		// The same under the action's priorities (nice 10, idle I/O class),
		// into a second repository: what the priorities cost on a busy host.
		repo = filepath.Join(b.TempDir(), "repo")
		niced := func(args ...string) {
			c := exec.Command(niceBin, append([]string{"-n", "10", ioniceBin, "-c", "3", resticBin, "-r", repo, "--password-file", pw, "-q"}, args...)...)
			if out, err := c.CombinedOutput(); err != nil {
				b.Fatalf("restic %v: %v: %s", args, err, out)
			}
		}
		niced("init")
		timed("restic-niced-first", func() { niced("backup", n.home) })
		timed("restic-niced-nochange", func() { niced("backup", n.home) })
		// The database dump alone, to /dev/null.
		timed("mariadb-dump-only", func() {
			dc, err := n.dbm.DumpCommand(ctx, n.env, "mariadb", dbName)
			if err != nil {
				b.Fatal(err)
			}
			c := exec.Command(dc.Argv[0], dc.Argv[1:]...)
			c.Env = dc.Env
			if err := c.Run(); err != nil {
				b.Fatal(err)
			}
		})

		if _, err := os.Stat("/usr/bin/rsync"); err == nil {
			dst := b.TempDir()
			rsync := func() {
				if out, err := exec.Command("/usr/bin/rsync", "-a", n.home+"/", dst+"/").CombinedOutput(); err != nil {
					b.Fatalf("rsync: %v: %s", err, out)
				}
			}
			timed("rsync-first", rsync)
			timed("rsync-nochange", rsync)
		}

		timed("restore-one-file", func() {
			if _, err := n.restore(b, &agentpb.RestoreBackupAction{BackupId: "bench1", What: agentpb.RestoreWhat_RESTORE_WHAT_FILES, Path: "public_html/d042/f04242.bin", InPlace: true}); err != nil {
				b.Fatal(err)
			}
		})
		timed("restore-all", func() {
			r, err := n.restore(b, &agentpb.RestoreBackupAction{BackupId: "bench1", What: agentpb.RestoreWhat_RESTORE_WHAT_ALL, InPlace: true})
			if err != nil || len(r.Failed) != 0 {
				b.Fatalf("%v %v", err, r.GetFailed())
			}
		})
	}
}
