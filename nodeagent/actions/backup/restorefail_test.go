package backup

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

// TestInPlaceRestorePutsBack restores a MariaDB database in place from a
// backup whose packs are corrupted, so the dump stream fails after the
// database was dropped: the restore fails, says so, and the database has
// its rows as they were before; no safety dump is left behind.
func TestInPlaceRestorePutsBack(t *testing.T) {
	n := newNode(t, nodeOpts{maria: true})
	mdb := n.user + "_shop"
	if err := n.dbm.RecreateDatabase(ctxT(t), n.env, "mariadb", mdb, false); err != nil {
		t.Fatal(err)
	}
	root := n.maria.MustRoot(t)
	exec := func(q string) {
		t.Helper()
		if _, err := root.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec("CREATE TABLE " + mdb + ".t (id INT PRIMARY KEY, v MEDIUMTEXT)")
	exec("INSERT INTO " + mdb + ".t VALUES (1, REPEAT('x', 200000))")
	n.backup(t, "b1", []*agentpb.BackupDatabase{mariaDB(mdb)}, nil)
	exec("UPDATE " + mdb + ".t SET v = 'one'")
	exec("INSERT INTO " + mdb + ".t VALUES (2,'two')")
	corruptPacks(t, n)

	_, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: mariaDB(mdb), InPlace: true})
	if err == nil || !strings.Contains(err.Error(), "restore failed; the database was put back as it was") {
		t.Fatalf("in-place restore from a corrupted backup: %v", err)
	}
	t.Logf("error: %v", err)
	if got := mariaRows(t, root, "SELECT id, v FROM "+mdb+".t ORDER BY id"); !slices.Equal(got, []string{"1=one", "2=two"}) {
		t.Fatalf("rows after the failed restore: %v", got)
	}
	// As one item of ALL: reported, the database still as it was.
	rr, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_ALL, InPlace: true})
	if err == nil {
		for _, f := range rr.Failed {
			if f.Item == "database:"+mdb && !strings.Contains(f.Error, "the database was put back as it was") {
				t.Fatalf("ALL reported %q", f.Error)
			}
		}
	}
	if got := mariaRows(t, root, "SELECT id, v FROM "+mdb+".t ORDER BY id"); !slices.Equal(got, []string{"1=one", "2=two"}) {
		t.Fatalf("rows after the failed ALL restore: %v", got)
	}
	ents, _ := os.ReadDir(filepath.Join(n.env.Profile.BackupDir, n.user, "db"))
	for _, e := range ents {
		t.Errorf("left in the dump area: %s", e.Name())
	}
}
