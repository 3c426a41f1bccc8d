package backup

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestPasswordNeverExposed scans every process's argv and environment
// while restic runs, and the log and an error: the repository password
// appears in none of them.
func TestPasswordNeverExposed(t *testing.T) {
	n := newNode(t, nodeOpts{})
	for i := range 50 {
		n.writeFile(t, filepath.Join("f", string(rune('a'+i%26)), strings.Repeat("x", i+1)), randBytes(64<<10))
	}
	var stop atomic.Bool
	var sawRestic atomic.Int32
	var leaks sync.Map
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			ents, _ := os.ReadDir("/proc")
			for _, e := range ents {
				if e.Name()[0] < '0' || e.Name()[0] > '9' {
					continue
				}
				cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
				if strings.Contains(string(cmd), resticBin) {
					sawRestic.Add(1)
				}
				env, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
				if strings.Contains(string(cmd), n.password) || strings.Contains(string(env), n.password) {
					leaks.Store(e.Name(), string(cmd))
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	n.backup(t, "b1", nil, nil)
	n.backup(t, "b2", nil, &agentpb.BackupRetention{Daily: 1})
	mustApply(t, n.env, n.m.NewVerifyBackup(&agentpb.VerifyBackupAction{BackupId: "b2", Repository: n.repo()}))
	_, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "nosuch", What: agentpb.RestoreWhat_RESTORE_WHAT_ALL})
	stop.Store(true)
	wg.Wait()
	if sawRestic.Load() == 0 {
		t.Fatal("never saw restic running: the scan proves nothing")
	}
	leaks.Range(func(k, v any) bool {
		t.Errorf("password visible in /proc/%v (%q)", k, v)
		return true
	})
	if err == nil || strings.Contains(err.Error(), n.password) {
		t.Fatalf("error %v", err)
	}
	if strings.Contains(n.log.String(), n.password) {
		t.Fatal("password in the log")
	}
	// Nothing on disk either: the repository's files hold only ciphertext
	// and the agent keeps no password file.
	_ = filepath.Walk(filepath.Dir(n.env.DataDir), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() < 1<<20 {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), n.password) {
				t.Errorf("password in %s", p)
			}
		}
		return nil
	})
}

// TestStaleLockRecovered kills a restic backup with SIGKILL mid-run,
// which leaves its lock behind (restic#1450); the next backup, with
// retention (an exclusive prune), removes the stale lock and succeeds.
func TestStaleLockRecovered(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.writeFile(t, "a.txt", []byte("a"))
	n.m.snapshotTime = func(id string) time.Time {
		return map[string]time.Time{"b1": time.Now().Add(-48 * time.Hour), "b2": time.Now()}[id]
	}
	n.backup(t, "b1", nil, nil)

	ctx := ctxT(t)
	s, err := n.m.open(ctx, n.env, n.repo(), true)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.rr.startBackup(ctx, pr, nil, "--stdin", "--stdin-filename", "endless")
	pr.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(b.c.Process.Pid, syscall.SIGKILL) })
	_, _ = pw.Write(randBytes(1 << 20))
	locks := filepath.Join(n.env.Profile.BackupDir, n.user, "locks")
	waitFor(t, 20*time.Second, "restic's lock", func() bool {
		ents, _ := os.ReadDir(locks)
		return len(ents) > 0
	})
	if err := syscall.Kill(b.c.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = b.wait()
	pw.Close()
	s.release()
	if ents, _ := os.ReadDir(locks); len(ents) == 0 {
		t.Fatal("the killed restic left no lock: the test proves nothing")
	}

	res := n.backup(t, "b2", nil, &agentpb.BackupRetention{Daily: 1})
	if !res.UnlockedStale || len(res.Failed) != 0 {
		t.Fatalf("backup after the kill: %+v", res)
	}
	if !slices.Equal(res.ForgottenBackupIds, []string{"b1"}) {
		t.Fatalf("retention after unlock forgot %v", res.ForgottenBackupIds)
	}
	if ents, _ := os.ReadDir(locks); len(ents) != 0 {
		t.Fatalf("locks left: %v", ents)
	}
}

// TestVerifyDetectsCorruption verifies a good backup, then flips bytes
// in the repository's pack files: verify reports it.
func TestVerifyDetectsCorruption(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.writeFile(t, "a.bin", randBytes(200<<10))
	n.writeFile(t, "b/c.txt", []byte("hello\n"))
	n.backup(t, "b1", nil, nil)
	verify := func() *agentpb.VerifyResult {
		return mustApply(t, n.env, n.m.NewVerifyBackup(&agentpb.VerifyBackupAction{BackupId: "b1", Repository: n.repo()})).(*agentpb.VerifyResult)
	}
	v := verify()
	if !v.Ok || v.FilesChecked != 4 || v.BytesChecked < 200<<10 { // 2 home files, the state, the zone file
		t.Fatalf("verify of a good backup: %+v", v)
	}
	// Staged on the homes' filesystem and removed after.
	if ents, err := os.ReadDir(filepath.Join(n.env.Profile.HomeBase, scratchDir)); err != nil || len(ents) != 0 {
		t.Fatalf("scratch area after verify: %v %v", ents, err)
	}
	corruptPacks(t, n)
	v = verify()
	if v.Ok || len(v.Problems) == 0 {
		t.Fatalf("verify of a corrupted repository: %+v", v)
	}
	t.Logf("problems: %q", v.Problems)
}

// TestRetention makes backups "days apart" (restic backup --time) and
// checks retention keeps exactly the newest backup of each of the last
// N days, M weeks and K months, with all its snapshots.
func TestRetention(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.writeFile(t, "a.txt", []byte("a"))
	at := map[string]time.Time{
		"b1": time.Date(2026, 10, 15, 12, 0, 0, 0, time.UTC), // Thu, week 42
		"b2": time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC), // Fri, week 47
		"b3": time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC), // Sat, week 48
		"b4": time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC), // Mon, week 49
		"b5": time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),  // Tue, week 49
		"b6": time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC),  // Tue, week 49
	}
	n.m.snapshotTime = func(id string) time.Time { return at[id] }
	for _, id := range []string{"b1", "b2", "b3", "b4", "b5"} {
		n.backup(t, id, nil, nil)
	}
	// Failed items: retention is skipped (a database that is not there).
	res := n.backup(t, "b6", []*agentpb.BackupDatabase{mariaDB(n.user + "_gone")}, &agentpb.BackupRetention{Daily: 1})
	if len(res.Failed) != 1 || len(res.ForgottenBackupIds) != 0 {
		t.Fatalf("partial backup: %+v", res)
	}
	// daily 2: Dec 1 (b6), Nov 30 (b4); weekly 2: week 49 (b6), week 48
	// (b3); monthly 2: December (b6), November (b4).
	res = n.backup(t, "b6", nil, &agentpb.BackupRetention{Daily: 2, Weekly: 2, Monthly: 2})
	if !slices.Equal(res.ForgottenBackupIds, []string{"b1", "b2", "b5"}) {
		t.Fatalf("forgotten %v", res.ForgottenBackupIds)
	}
	s, err := n.m.open(ctxT(t), n.env, n.repo(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.release()
	snaps, err := s.rr.snapshots(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string][]string{}
	for _, sn := range snaps {
		kinds[sn.tag(tagBackup)] = append(kinds[sn.tag(tagBackup)], sn.tag(tagKind))
	}
	if len(kinds) != 3 || len(kinds["b3"]) != 3 || len(kinds["b4"]) != 3 || len(kinds["b6"]) < 3 { // files, zone, state
		t.Fatalf("left: %v", kinds)
	}
}

// TestForget removes one backup, then the whole local repository.
func TestForget(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.writeFile(t, "a.txt", []byte("a"))
	n.backup(t, "b1", nil, nil)
	n.backup(t, "b2", nil, nil)
	r := mustApply(t, n.env, n.m.NewForgetBackup(&agentpb.ForgetBackupAction{BackupId: "b1", Repository: n.repo()})).(*agentpb.ForgetResult)
	if len(r.RemovedSnapshotIds) != 3 { // files, zone, state
		t.Fatalf("forget b1: %+v", r)
	}
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_ZONE}); actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_NOT_FOUND {
		t.Fatalf("restore of a forgotten backup: %v", err)
	}
	// Again: nothing to do.
	r = mustApply(t, n.env, n.m.NewForgetBackup(&agentpb.ForgetBackupAction{BackupId: "b1", Repository: n.repo()})).(*agentpb.ForgetResult)
	if len(r.RemovedSnapshotIds) != 0 {
		t.Fatalf("second forget: %+v", r)
	}
	// A dump DropDatabase kept in the same directory survives "all".
	keep := filepath.Join(n.env.Profile.BackupDir, n.user, "db", "x.sql.gz")
	if err := os.MkdirAll(filepath.Dir(keep), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = mustApply(t, n.env, n.m.NewForgetBackup(&agentpb.ForgetBackupAction{All: true, Repository: n.repo()})).(*agentpb.ForgetResult)
	if len(r.RemovedSnapshotIds) != 3 {
		t.Fatalf("forget all: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(n.env.Profile.BackupDir, n.user, "config")); !os.IsNotExist(err) {
		t.Fatalf("repository still there: %v", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("database dump removed: %v", err)
	}
	// A new backup starts a new repository.
	n.backup(t, "b3", nil, nil)
}

// corruptPacks flips 16 bytes in the middle of each of the repository's
// pack files.
func corruptPacks(t *testing.T, n *node) {
	t.Helper()
	n2 := 0
	_ = filepath.Walk(filepath.Join(n.env.Profile.BackupDir, n.user, "data"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		buf := make([]byte, 16)
		off := fi.Size() / 2
		_, _ = f.ReadAt(buf, off)
		for i := range buf {
			buf[i] ^= 0xff
		}
		_, err = f.WriteAt(buf, off)
		n2++
		return err
	})
	if n2 == 0 {
		t.Fatal("no pack files")
	}
}

// TestVerifyNeedsSpace: without room for the snapshot plus the margin on
// the homes' filesystem, verify fails and says so before restoring.
func TestVerifyNeedsSpace(t *testing.T) {
	n := newNode(t, nodeOpts{})
	n.writeFile(t, "a.bin", randBytes(64<<10))
	n.backup(t, "b1", nil, nil)
	old := verifyMargin
	verifyMargin = 1 << 62
	t.Cleanup(func() { verifyMargin = old })
	_, err := apply(t, n.env, n.m.NewVerifyBackup(&agentpb.VerifyBackupAction{BackupId: "b1", Repository: n.repo()}))
	if actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE || !strings.Contains(err.Error(), "not enough space to verify") {
		t.Fatalf("verify without space: %v", err)
	}
	t.Logf("error: %v", err)
	if ents, _ := os.ReadDir(filepath.Join(n.env.Profile.HomeBase, scratchDir)); len(ents) != 0 {
		t.Fatalf("scratch area: %v", ents)
	}
}
