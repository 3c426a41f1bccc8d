package migrate

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

// The last pass of a MariaDB database sends only the tables that changed
// since the earlier pass (real servers on both sides): nothing for an
// unchanged database, one small table when one row changed, the table
// again when only its AUTO_INCREMENT moved, and the whole database when a
// table appeared or went.
func TestFinalSyncIncrementalMariaDB(t *testing.T) {
	dbName := ""
	var dbs []*agentpb.BackupDatabase
	p := newPairWith(t, pairOpts{maria: true}, func(user string) []*agentpb.BackupDatabase {
		dbName = user + "_shop"
		dbs = []*agentpb.BackupDatabase{{Engine: "mariadb", Name: dbName}}
		return dbs
	})
	src := p.src.maria.MustRoot(t)
	dst := p.dst.maria.MustRoot(t)
	exec := func(c *sql.DB, qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := c.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	exec(src,
		"CREATE DATABASE "+dbName,
		"CREATE TABLE "+dbName+".items (id INT PRIMARY KEY, name VARCHAR(64))",
		"INSERT INTO "+dbName+".items VALUES (1, 'one'), (2, 'two')",
		"CREATE TABLE "+dbName+".big (id INT AUTO_INCREMENT PRIMARY KEY, body TEXT)",
		"INSERT INTO "+dbName+".big (body) SELECT REPEAT('x', 1000) FROM information_schema.COLUMNS LIMIT 1000",
		"CREATE TABLE "+dbName+".`odd ``name` (i INT)",
	)
	pass := func(final bool) *agentpb.SyncMigrationResult {
		t.Helper()
		// The last pass with the home: files and databases go at once.
		r := p.sync(t, final, final, dbs...)
		if len(r.GetFailed()) > 0 || len(r.GetDatabases()) != 1 {
			t.Fatalf("result %v\nsource log: %s\ntarget log: %s", r, p.src.log, p.dst.log)
		}
		return r
	}
	same := func(what string) {
		t.Helper()
		for _, tb := range []string{"items", "big", "`odd ``name`"} {
			q := "CHECKSUM TABLE " + dbName + "." + tb
			var n, a, b string
			if err := src.QueryRow(q).Scan(&n, &a); err != nil {
				t.Fatal(err)
			}
			if err := dst.QueryRow(q).Scan(&n, &b); err != nil {
				t.Fatalf("%s: %s on the target: %v", what, tb, err)
			}
			if a != b {
				t.Fatalf("%s: table %s: checksum %s here, %s on the target", what, tb, a, b)
			}
		}
	}
	full := pass(false).GetDatabaseBytes()
	t.Logf("first pass: %d bytes", full)
	if full < 1000*1000 {
		t.Fatalf("first pass sent %d bytes", full)
	}
	same("first pass")

	// Unchanged: nothing is sent.
	if n := pass(true).GetDatabaseBytes(); n != 0 {
		t.Errorf("unchanged database: last pass sent %d bytes, want 0", n)
	}
	if !strings.Contains(p.src.log.String(), "no table changed") {
		t.Errorf("source log: %s", p.src.log)
	}

	// One row of the small table: that table only.
	exec(src, "UPDATE "+dbName+".items SET name = 'zwei' WHERE id = 2")
	n := pass(true).GetDatabaseBytes()
	t.Logf("one row changed: %d bytes", n)
	if n == 0 || n > full/10 {
		t.Errorf("one row changed: last pass sent %d bytes (the whole database is %d)", n, full)
	}
	var name string
	if err := dst.QueryRow("SELECT name FROM " + dbName + ".items WHERE id = 2").Scan(&name); err != nil || name != "zwei" {
		t.Fatalf("changed row on the target: %q %v", name, err)
	}
	same("one row changed")

	// A row added and deleted again: same rows, AUTO_INCREMENT moved, so
	// the next id must not be reused on the target.
	exec(src, "INSERT INTO "+dbName+".big (body) VALUES ('gone')", "DELETE FROM "+dbName+".big WHERE body = 'gone'")
	if n := pass(true).GetDatabaseBytes(); n == 0 {
		t.Error("AUTO_INCREMENT moved: nothing sent")
	}
	autoInc := func(c *sql.DB) (v int64) {
		t.Helper()
		if err := c.QueryRow("SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'big'", dbName).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if a, b := autoInc(src), autoInc(dst); a != b {
		t.Errorf("AUTO_INCREMENT %d here, %d on the target", a, b)
	}

	// A new table: the whole database.
	exec(src, "CREATE TABLE "+dbName+".fresh (i INT)", "INSERT INTO "+dbName+".fresh VALUES (5)")
	if n := pass(true).GetDatabaseBytes(); n < full {
		t.Errorf("new table: last pass sent %d bytes, want the whole database (%d)", n, full)
	}
	var i int
	if err := dst.QueryRow("SELECT i FROM " + dbName + ".fresh").Scan(&i); err != nil || i != 5 {
		t.Fatalf("new table on the target: %d %v", i, err)
	}
	// A table dropped: the whole database, and it goes on the target.
	exec(src, "DROP TABLE "+dbName+".fresh")
	if n := pass(true).GetDatabaseBytes(); n < full {
		t.Errorf("dropped table: last pass sent %d bytes, want the whole database", n)
	}
	if err := dst.QueryRow("SELECT i FROM " + dbName + ".fresh").Scan(&i); err == nil {
		t.Error("dropped table still on the target")
	}
	same("after the whole copies")
	// A changed table on the target only (someone wrote there): sent again.
	exec(dst, "DELETE FROM "+dbName+".items WHERE id = 1")
	if n := pass(true).GetDatabaseBytes(); n == 0 || n > full/10 {
		t.Errorf("target's table changed: last pass sent %d bytes", n)
	}
	same("target changed")
}

// PostgreSQL: an unchanged database sends nothing on the last pass; a
// changed row, or a sequence that moved, sends the whole database (its
// tables are not replaced one by one).
func TestFinalSyncIncrementalPostgres(t *testing.T) {
	var dbName string
	var dbs []*agentpb.BackupDatabase
	p := newPairWith(t, pairOpts{pg: true}, func(user string) []*agentpb.BackupDatabase {
		dbName = user + "_app"
		dbs = []*agentpb.BackupDatabase{{Engine: "postgresql", Name: dbName}}
		return dbs
	})
	ctx := ctxT(t)
	admin := p.src.pg.MustConnect(t, "postgres")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+dbName); err != nil {
		t.Fatal(err)
	}
	src := p.src.pg.MustConnect(t, dbName)
	for _, q := range []string{
		"CREATE TABLE items (id SERIAL PRIMARY KEY, name TEXT, t INT)",
		"INSERT INTO items (name) SELECT 'row ' || g FROM generate_series(1, 500) g",
		"CREATE VIEW v AS SELECT id FROM items",
	} {
		if _, err := src.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	pass := func(final bool) uint64 {
		t.Helper()
		r := p.sync(t, false, final, dbs...)
		if len(r.GetFailed()) > 0 || len(r.GetDatabases()) != 1 {
			t.Fatalf("result %v\nsource log: %s\ntarget log: %s", r, p.src.log, p.dst.log)
		}
		return r.GetDatabaseBytes()
	}
	full := pass(false)
	if n := pass(true); n != 0 {
		t.Errorf("unchanged database: last pass sent %d bytes, want 0\nsource log: %s", n, p.src.log)
	}
	if _, err := src.Exec(ctx, "UPDATE items SET name = 'changed' WHERE id = 7"); err != nil {
		t.Fatal(err)
	}
	if n := pass(true); n < full/2 {
		t.Errorf("changed row: last pass sent %d bytes, want the whole database (%d)", n, full)
	}
	// A new connection: the whole copy dropped the database.
	dst := p.dst.pg.MustConnect(t, dbName)
	var name string
	if err := dst.QueryRow(ctx, "SELECT name FROM items WHERE id = 7").Scan(&name); err != nil || name != "changed" {
		t.Fatalf("changed row on the target: %q %v", name, err)
	}
	// Rows as they were, the sequence moved.
	if _, err := src.Exec(ctx, "SELECT nextval('items_id_seq')"); err != nil {
		t.Fatal(err)
	}
	if n := pass(true); n == 0 {
		t.Error("sequence moved: nothing sent")
	}
	dst = p.dst.pg.MustConnect(t, dbName)
	var next int
	if err := dst.QueryRow(ctx, "SELECT last_value FROM items_id_seq").Scan(&next); err != nil || next != 501 {
		t.Errorf("target's sequence at %d, want 501 (%v)", next, err)
	}
	if n := pass(true); n != 0 {
		t.Errorf("unchanged again: last pass sent %d bytes", n)
	}
}

// restore-tables loads a hostile dump as restore-database does: by a user
// with rights on that database only, in sandbox mode, guard and
// completion line required; another database of the node is out of its
// reach, and the database's other tables stay.
func TestRestoreTablesHostile(t *testing.T) {
	var dbName string
	p := newPairWith(t, pairOpts{maria: true}, func(user string) []*agentpb.BackupDatabase {
		dbName = user + "_shop"
		return []*agentpb.BackupDatabase{{Engine: "mariadb", Name: dbName}}
	})
	dst := p.dst.maria.MustRoot(t)
	other := p.user + "_other"
	for _, q := range []string{
		"CREATE DATABASE " + dbName, "CREATE TABLE " + dbName + ".keep (i INT)", "INSERT INTO " + dbName + ".keep VALUES (1)",
		"CREATE DATABASE " + other, "CREATE TABLE " + other + ".x (i INT)",
	} {
		if _, err := dst.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = dst.Exec("DROP DATABASE IF EXISTS " + other) })
	outfile := filepath.Join(os.TempDir(), "npt-outfile-"+randName(t))
	shell := filepath.Join(os.TempDir(), "npt-shell-"+randName(t))
	t.Cleanup(func() { _ = os.Remove(outfile); _ = os.Remove(shell) })
	const head, trailer = `/*M!999999\- enable the sandbox mode */` + "\n", "-- Dump completed on 2026-01-01\n"
	run := func(dump string) error {
		c, err := p.client(t, "", p.user)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := c.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var stderr bytes.Buffer
		s.Stderr, s.Stdin = &stderr, strings.NewReader(dump)
		if err := s.Run("restore-tables mariadb " + dbName); err != nil {
			return fmt.Errorf("%w: %s", err, stderr.String())
		}
		return nil
	}
	for _, stmt := range []string{
		"CREATE USER 'npt_evil'@'%' IDENTIFIED BY 'x';",
		"GRANT ALL PRIVILEGES ON *.* TO 'npt_evil2'@'%' IDENTIFIED BY 'x';",
		"DROP TABLE " + other + ".x;",
		"SELECT 'x' INTO OUTFILE '" + outfile + "';",
		"\\! touch " + shell,
	} {
		if err := run(head + "DROP TABLE IF EXISTS t;\nCREATE TABLE t (i INT);\n" + stmt + "\n" + trailer); err == nil {
			t.Errorf("%s: restored", stmt)
		} else {
			t.Logf("%s: %v", stmt, err)
		}
	}
	if err := run("CREATE TABLE t (i INT);\n" + trailer); err == nil {
		t.Error("dump without its guard line restored")
	}
	if err := run(head + "CREATE TABLE IF NOT EXISTS t2 (i INT);\n"); err == nil {
		t.Error("dump without its completion line accepted")
	}
	var n int
	if err := dst.QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'npt\\_evil%' OR User LIKE 'npimport\\_%'").Scan(&n); err != nil || n != 0 {
		t.Errorf("users left or made: %d %v", n, err)
	}
	if err := dst.QueryRow("SELECT COUNT(*) FROM " + other + ".x").Scan(&n); err != nil {
		t.Errorf("the other database's table: %v", err)
	}
	for _, f := range []string{outfile, shell} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s written: %v", f, err)
		}
	}
	// A normal one replaces its table and leaves the others.
	if err := run(head + "DROP TABLE IF EXISTS t;\nCREATE TABLE t (i INT);\nINSERT INTO t VALUES (7);\n" + trailer); err != nil {
		t.Fatal(err)
	}
	if err := dst.QueryRow("SELECT i FROM " + dbName + ".t").Scan(&n); err != nil || n != 7 {
		t.Errorf("normal dump: %d %v", n, err)
	}
	if err := dst.QueryRow("SELECT i FROM " + dbName + ".keep").Scan(&n); err != nil || n != 1 {
		t.Errorf("other table: %d %v", n, err)
	}
}
