package backup

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

func TestMain(m *testing.M) {
	os.Exit(m.Run())
}

func mariaDB(name string) *agentpb.BackupDatabase {
	return &agentpb.BackupDatabase{Name: name, Engine: validate.EngineMariaDB}
}

func pgDB(name string) *agentpb.BackupDatabase {
	return &agentpb.BackupDatabase{Name: name, Engine: validate.EnginePostgreSQL}
}

func mariaRows(t *testing.T, root *sql.DB, q string) []string {
	t.Helper()
	rows, err := root.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id int
		var v string
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d=%s", id, v))
	}
	return out
}

// TestBackupAndRestore backs up a home with files (and a maildir), a
// MariaDB and a PostgreSQL database; then deletes a file and drops
// tables, and restores each item separately: files byte for byte,
// databases row for row, in place and side by side. An incremental
// backup after a one-file change adds about that change.
func TestBackupAndRestore(t *testing.T) {
	n := newNode(t, nodeOpts{maria: true, pg: true})
	ctx := ctxT(t)
	files := map[string][]byte{
		"public_html/index.html":                       []byte("<h1>hello</h1>\n"),
		"public_html/img/logo.bin":                     randBytes(300 << 10),
		"docs/a.txt":                                   []byte("a\n"),
		"mail/example.com/info/Maildir/cur/1.host:2,S": []byte("Subject: hi\n\nbody\n"),
	}
	for rel, b := range files {
		n.writeFile(t, rel, b)
	}
	mdb, pdb := n.user+"_shop", n.user+"_blog"
	for _, d := range []*agentpb.BackupDatabase{mariaDB(mdb), pgDB(pdb)} {
		if err := n.dbm.RecreateDatabase(ctx, n.env, d.Engine, d.Name, false); err != nil {
			t.Fatal(err)
		}
	}
	root := n.maria.MustRoot(t)
	for _, q := range []string{
		"CREATE TABLE " + mdb + ".t (id INT PRIMARY KEY, v VARCHAR(20))",
		"INSERT INTO " + mdb + ".t VALUES (1,'one'),(2,'two'),(3,'three')",
		"CREATE USER '" + n.user + "_app'@'localhost' IDENTIFIED BY 'Old-Passw0rd!'",
	} {
		if _, err := root.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	pc := n.pg.MustConnect(t, pdb)
	for _, q := range []string{"CREATE TABLE posts (id int PRIMARY KEY, title text)", "INSERT INTO posts VALUES (1,'first'),(2,'second')"} {
		if _, err := pc.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	res := n.backup(t, "b1", []*agentpb.BackupDatabase{mariaDB(mdb), pgDB(pdb)}, nil)
	if len(res.Failed) != 0 || len(res.SnapshotIds) != 5 || !res.Contents.Files ||
		!slices.Equal(res.Contents.Databases, []string{mdb, pdb}) || !slices.Equal(res.Contents.Zones, []string{"example.com"}) {
		t.Fatalf("backup: %+v", res)
	}
	if res.FileCount < 4 || res.SizeBytes < 300<<10 || res.AddedBytes == 0 {
		t.Fatalf("backup figures: %+v", res)
	}
	if fi, err := os.Stat(filepath.Join(n.env.Profile.BackupDir, n.user)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("repository dir: %v %v", fi, err)
	}

	// Incremental: one small file changed adds about that much.
	n.writeFile(t, "docs/a.txt", randBytes(4<<10))
	res2 := n.backup(t, "b2", nil, nil)
	if res2.AddedBytes > 64<<10 || len(res2.Failed) != 0 {
		t.Fatalf("incremental backup added %d bytes: %+v", res2.AddedBytes, res2)
	}
	t.Logf("first backup added %d bytes, incremental %d", res.AddedBytes, res2.AddedBytes)

	// Damage: a file deleted, a table dropped in each database, a user's
	// password changed.
	if err := os.Remove(filepath.Join(n.home, "public_html/img/logo.bin")); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Exec("DROP TABLE " + mdb + ".t"); err != nil {
		t.Fatal(err)
	}
	if _, err := pc.Exec(ctx, "DROP TABLE posts"); err != nil {
		t.Fatal(err)
	}

	// One file, in place.
	rr, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_FILES, Path: "public_html/img/logo.bin", InPlace: true})
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, filepath.Join(n.home, "public_html/img/logo.bin"), files["public_html/img/logo.bin"])
	if rr.Files != 1 || rr.Bytes != 300<<10 {
		t.Fatalf("restore result %+v", rr)
	}
	// A folder side by side: the changed docs/a.txt as it was in b1.
	rr, err = n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_FILES, Path: "docs"})
	if err != nil {
		t.Fatal(err)
	}
	if rr.IntoPath != "restored-b1/docs" {
		t.Fatalf("into %q", rr.IntoPath)
	}
	checkFile(t, filepath.Join(n.home, "restored-b1/docs/a.txt"), files["docs/a.txt"])
	if b, _ := os.ReadFile(filepath.Join(n.home, "docs/a.txt")); bytes.Equal(b, files["docs/a.txt"]) {
		t.Fatal("side-by-side restore overwrote the current file")
	}
	// Side by side twice into the same place: a conflict, nothing replaced.
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_FILES, Path: "docs"}); actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_CONFLICT {
		t.Fatalf("second side-by-side restore: %v", err)
	}
	// A path that is not in the backup.
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_FILES, Path: "nope"}); actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_NOT_FOUND {
		t.Fatalf("restore of a missing path: %v", err)
	}

	// MariaDB in place: the dropped table is back, row for row.
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: mariaDB(mdb), InPlace: true}); err != nil {
		t.Fatal(err)
	}
	if got := mariaRows(t, root, "SELECT id, v FROM "+mdb+".t ORDER BY id"); !slices.Equal(got, []string{"1=one", "2=two", "3=three"}) {
		t.Fatalf("mariadb rows after restore: %v", got)
	}
	// PostgreSQL side by side into a new database; the old one untouched.
	into := n.user + "_blogold"
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: pgDB(pdb), DatabaseInto: into}); err != nil {
		t.Fatal(err)
	}
	pc2 := n.pg.MustConnect(t, into)
	rows, err := pc2.Query(ctx, "SELECT id::text || '=' || title FROM posts ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		got = append(got, s)
	}
	rows.Close()
	if !slices.Equal(got, []string{"1=first", "2=second"}) {
		t.Fatalf("postgres rows after restore: %v", got)
	}
	// Side by side into an existing database is refused.
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: pgDB(pdb), DatabaseInto: into}); actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_CONFLICT {
		t.Fatalf("restore into an existing database: %v", err)
	}
	// Another account's database is refused before anything runs.
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: pgDB(pdb), DatabaseInto: "other_blog"}); err == nil {
		t.Fatal("restore into another account's database accepted")
	}

	// ZONE returns the control plane's state and the zone files, byte
	// for byte.
	rr, err = n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_ZONE})
	if err != nil || string(rr.StateJson) != `{"sites":["example.com"]}` {
		t.Fatalf("zone restore: %v %s", err, rr.GetStateJson())
	}
	if zf := rr.GetZoneFiles(); len(zf) != 1 || zf[0].GetName() != "example.com" || zf[0].GetText() != testZoneFile || len(rr.GetFailed()) != 0 {
		t.Fatalf("zone restore: zone files %v, failed %v", zf, rr.GetFailed())
	}

	// ALL on a node "without PostgreSQL": the rest is restored, the
	// database reported, and the database user's password hash is back.
	if _, err := root.Exec("ALTER USER '" + n.user + "_app'@'localhost' IDENTIFIED BY 'New-Passw0rd!'"); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Exec("DROP TABLE " + mdb + ".t"); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(n.home, "public_html/index.html")); err != nil {
		t.Fatal(err)
	}
	n.m.missingEngine = func(e string) bool { return e == validate.EnginePostgreSQL }
	rr, err = n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_ALL, InPlace: true})
	n.m.missingEngine = nil
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.Failed) != 1 || rr.Failed[0].Item != "database:"+pdb || rr.Failed[0].Error != "postgresql is not installed on this node" {
		t.Fatalf("partial restore: failed %v", rr.Failed)
	}
	for _, want := range []string{"state", "files", "database:" + mdb} {
		if !slices.Contains(rr.Restored, want) {
			t.Fatalf("restored %v lacks %s", rr.Restored, want)
		}
	}
	for rel, b := range files {
		if rel != "docs/a.txt" {
			checkFile(t, filepath.Join(n.home, rel), b)
		}
	}
	checkFile(t, filepath.Join(n.home, "docs/a.txt"), files["docs/a.txt"]) // in place: as in b1
	if got := mariaRows(t, root, "SELECT id, v FROM "+mdb+".t ORDER BY id"); len(got) != 3 {
		t.Fatalf("mariadb rows after ALL: %v", got)
	}
	udb, err := n.maria.Open(n.user+"_app", "Old-Passw0rd!", "")
	if err != nil {
		t.Fatal(err)
	}
	defer udb.Close()
	if err := udb.PingContext(ctx); err != nil {
		t.Fatalf("database user's old password (restored hash): %v", err)
	}
	// Restored files belong to the account; nothing is left staged.
	assertOwned(t, n.home)
	if ents, _ := os.ReadDir(filepath.Join(n.env.Profile.HomeBase, scratchDir)); len(ents) != 0 {
		t.Fatalf("scratch area not empty: %v", ents)
	}
	if strings.Contains(n.log.String(), n.password) {
		t.Fatal("password in the log")
	}
	var doc map[string]any
	_ = json.Unmarshal(rr.StateJson, &doc)
	if doc["sites"] == nil {
		t.Fatalf("state %s", rr.StateJson)
	}
}

func checkFile(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d backed up", p, len(got), len(want))
	}
}

// assertOwned checks every entry under home is the account's.
func assertOwned(t *testing.T, home string) {
	t.Helper()
	_ = filepath.Walk(home, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st := statOf(fi); st.uid != testUID || st.gid != testUID {
			t.Errorf("%s owned by %d:%d", p, st.uid, st.gid)
		}
		return nil
	})
}

// TestFailedDumpLeavesNoSnapshot: mariadb-dump fails half way (a view on
// a dropped table) after writing part of the dump; the database is
// reported failed, no snapshot of it stays in the repository, and the
// rest of the backup is kept (partial).
func TestFailedDumpLeavesNoSnapshot(t *testing.T) {
	n := newNode(t, nodeOpts{maria: true})
	ctx := ctxT(t)
	n.writeFile(t, "a.txt", []byte("a"))
	good, broken := n.user+"_good", n.user+"_broken"
	for _, d := range []string{good, broken} {
		if err := n.dbm.RecreateDatabase(ctx, n.env, validate.EngineMariaDB, d, false); err != nil {
			t.Fatal(err)
		}
	}
	root := n.maria.MustRoot(t)
	for _, q := range []string{
		"CREATE TABLE " + good + ".t (id INT PRIMARY KEY)",
		"CREATE TABLE " + broken + ".a (id INT PRIMARY KEY)",
		"INSERT INTO " + broken + ".a VALUES (1),(2)",
		"CREATE TABLE " + broken + ".gone (id INT)",
		"CREATE VIEW " + broken + ".v AS SELECT id FROM " + broken + ".gone",
		"DROP TABLE " + broken + ".gone",
	} {
		if _, err := root.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	res := n.backup(t, "b1", []*agentpb.BackupDatabase{mariaDB(broken), mariaDB(good)}, &agentpb.BackupRetention{Daily: 1})
	if len(res.Failed) != 1 || res.Failed[0].Item != "database:"+broken {
		t.Fatalf("failed %v", res.Failed)
	}
	if !slices.Equal(res.Contents.Databases, []string{good}) || !res.Contents.Files || len(res.SnapshotIds) != 4 {
		t.Fatalf("contents %+v", res)
	}
	s, err := n.m.open(ctx, n.env, n.repo(), false)
	if err != nil {
		t.Fatal(err)
	}
	defer s.release()
	snaps, err := s.rr.snapshots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, sn := range snaps {
		if sn.tag(tagDB) == "mariadb/"+broken {
			t.Fatalf("a snapshot of the failed dump is in the repository: %+v", sn)
		}
	}
	if len(snaps) != 4 {
		t.Fatalf("%d snapshots, want 4 (files, good, zone, state)", len(snaps))
	}
}

// A PostgreSQL restore creates nothing owned by a superuser: the dump is
// the account's SQL, and a SECURITY DEFINER function or a view owned by
// one would run as one. What it made belongs to the database's owner
// role, in place and side by side alike.
func TestRestorePostgresOwnsNothingAsSuperuser(t *testing.T) {
	n := newNode(t, nodeOpts{pg: true})
	ctx := ctxT(t)
	pdb := n.user + "_app"
	if err := n.dbm.RecreateDatabase(ctx, n.env, validate.EnginePostgreSQL, pdb, false); err != nil {
		t.Fatal(err)
	}
	pc := n.pg.MustConnect(t, pdb)
	for _, q := range []string{
		"CREATE TABLE notes (id int PRIMARY KEY, body text)",
		"INSERT INTO notes VALUES (1, 'kept')",
		"CREATE VIEW note_ids AS SELECT id FROM notes",
		"CREATE FUNCTION whoami() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text'",
	} {
		if _, err := pc.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if res := n.backup(t, "b1", []*agentpb.BackupDatabase{pgDB(pdb)}, nil); len(res.Failed) != 0 {
		t.Fatalf("backup: %+v", res.Failed)
	}
	superOwned := func(db string) []string {
		c := n.pg.MustConnect(t, db)
		rows, err := c.Query(ctx, `SELECT o.kind || ' ' || o.name FROM (
			SELECT 'relation' AS kind, c.relname::text AS name, c.relowner AS owner FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
			UNION ALL SELECT 'function', p.proname::text, p.proowner FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace) o
			JOIN pg_roles r ON r.oid = o.owner WHERE r.rolsuper ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: pgDB(pdb), InPlace: true}); err != nil {
		t.Fatal(err)
	}
	into := n.user + "_appold"
	if _, err := n.restore(t, &agentpb.RestoreBackupAction{BackupId: "b1", What: agentpb.RestoreWhat_RESTORE_WHAT_DATABASE, Database: pgDB(pdb), DatabaseInto: into}); err != nil {
		t.Fatal(err)
	}
	for _, db := range []string{pdb, into} {
		if got := superOwned(db); len(got) != 0 {
			t.Fatalf("%s after the restore: owned by a superuser: %v", db, got)
		}
		var body, who string
		c := n.pg.MustConnect(t, db)
		if err := c.QueryRow(ctx, "SELECT body FROM notes WHERE id = 1").Scan(&body); err != nil || body != "kept" {
			t.Fatalf("%s: row %q, %v", db, body, err)
		}
		if err := c.QueryRow(ctx, "SELECT whoami()").Scan(&who); err != nil || who == "postgres" || !strings.HasPrefix(who, "np-owner-") {
			t.Fatalf("%s: the SECURITY DEFINER function runs as %q (%v), want the database's owner role", db, who, err)
		}
	}
}
