package backup

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

// rawDBSnapshot stores sql as backup id's dump of database name, as if
// the account had put it there.
func (n *node) rawDBSnapshot(t *testing.T, id, engine, name, sql string) {
	t.Helper()
	ctx := ctxT(t)
	s, err := n.m.open(ctx, n.env, n.repo(), true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.release()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.rr.startBackup(ctx, pr, nil, "--host", n.env.Node,
		"--tag", tagBackup+"="+id+","+tagKind+"="+kindDatabase+","+tagDB+"="+engine+"/"+name,
		"--stdin", "--stdin-filename", dbPath(engine, name))
	pr.Close()
	if err != nil {
		t.Fatal(err)
	}
	_, _ = pw.WriteString(sql)
	pw.Close()
	if _, err := b.wait(); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreRefusesUnguardedDump: a database dump without the line that
// puts the client in sandbox (MariaDB) or restricted (PostgreSQL) mode is
// refused before the client reads any of it, so a \! in it runs nothing;
// the database restored in place is left as it was.
func TestRestoreRefusesUnguardedDump(t *testing.T) {
	n := newNode(t, nodeOpts{maria: true, pg: true})
	ctx := ctxT(t)
	mdb, pdb := n.user+"_shop", n.user+"_blog"
	for _, d := range []*agentpb.BackupDatabase{mariaDB(mdb), pgDB(pdb)} {
		if err := n.dbm.RecreateDatabase(ctx, n.env, d.Engine, d.Name, false); err != nil {
			t.Fatal(err)
		}
	}
	root := n.maria.MustRoot(t)
	for _, q := range []string{"CREATE TABLE " + mdb + ".t (id INT PRIMARY KEY, v TEXT)", "INSERT INTO " + mdb + ".t VALUES (1,'one')"} {
		if _, err := root.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	marker := filepath.Join(t.TempDir(), "pwned")
	n.writeFile(t, "a.txt", []byte("a"))
	n.backup(t, "b1", nil, nil)
	n.rawDBSnapshot(t, "b1", "mariadb", mdb, "-- MariaDB dump\n\\! touch "+marker+"\nDROP TABLE t;\n")
	n.rawDBSnapshot(t, "b1", "postgresql", pdb, "--\n-- PostgreSQL database dump\n--\n\n\\! touch "+marker+"\nCREATE TABLE x (i int);\n")

	_, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: mariaDB(mdb), InPlace: true})
	if err == nil || !strings.Contains(err.Error(), "refusing to import") || !strings.Contains(err.Error(), "the database was put back as it was") {
		t.Fatalf("restore of an unguarded MariaDB dump: %v", err)
	}
	t.Logf("mariadb: %v", err)
	if got := mariaRows(t, root, "SELECT id, v FROM "+mdb+".t ORDER BY id"); !slices.Equal(got, []string{"1=one"}) {
		t.Fatalf("rows after the refused restore: %v", got)
	}
	_, err = n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: pgDB(pdb), DatabaseInto: n.user + "_blog2"})
	if err == nil || !strings.Contains(err.Error(), `refusing to import a dump that does not start with "\\restrict "`) {
		t.Fatalf("restore of an unguarded PostgreSQL dump: %v", err)
	}
	t.Logf("postgresql: %v", err)
	// In place: the PostgreSQL database is put back from its safety dump
	// (which carries \restrict, so psql loads it).
	pc := n.pg.MustConnect(t, pdb)
	if _, err := pc.Exec(ctx, "CREATE TABLE posts (id int PRIMARY KEY, title text); INSERT INTO posts VALUES (1, 'first')"); err != nil {
		t.Fatal(err)
	}
	pc.Close(ctx)
	_, err = n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: pgDB(pdb), InPlace: true})
	if err == nil || !strings.Contains(err.Error(), "the database was put back as it was") {
		t.Fatalf("in-place restore of an unguarded PostgreSQL dump: %v", err)
	}
	var title string
	if err := n.pg.MustConnect(t, pdb).QueryRow(ctx, "SELECT title FROM posts WHERE id = 1").Scan(&title); err != nil || title != "first" {
		t.Fatalf("postgres after the refused restore: %q %v", title, err)
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("the dump's \\! ran: %v", err)
	}
}
