package migrate

import (
	"strings"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

// A database with rows is streamed from the source's MariaDB into the
// target's (two real servers, one per prefix), twice (the second pass
// replaces the first); a database not authorized is refused.
func TestSyncDatabaseMariaDB(t *testing.T) {
	dbName := ""
	var dbs []*agentpb.BackupDatabase
	p := newPairWith(t, pairOpts{maria: true}, func(user string) []*agentpb.BackupDatabase {
		dbName = user + "_shop"
		dbs = []*agentpb.BackupDatabase{{Engine: "mariadb", Name: dbName}}
		return dbs
	})
	src := p.src.maria.MustRoot(t)
	for _, q := range []string{
		"CREATE DATABASE " + dbName,
		"CREATE TABLE " + dbName + ".items (id INT PRIMARY KEY, name VARCHAR(64), note TEXT)",
		"INSERT INTO " + dbName + ".items VALUES (1, 'one', 'a\\nb'), (2, 'two', NULL), (3, 'ünïcödé', REPEAT('x', 10000))",
	} {
		if _, err := src.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	r := p.sync(t, false, false, dbs...)
	if len(r.GetFailed()) > 0 || len(r.GetDatabases()) != 1 || r.GetDatabaseBytes() == 0 {
		t.Fatalf("result %v\nsource log: %s\ntarget log: %s", r, p.src.log, p.dst.log)
	}
	dst := p.dst.maria.MustRoot(t)
	checksum := func() (string, string) {
		var a, b, n string
		if err := src.QueryRow("CHECKSUM TABLE "+dbName+".items").Scan(&n, &a); err != nil {
			t.Fatal(err)
		}
		if err := dst.QueryRow("CHECKSUM TABLE "+dbName+".items").Scan(&n, &b); err != nil {
			t.Fatal(err)
		}
		return a, b
	}
	if a, b := checksum(); a != b {
		t.Fatalf("table checksum source %s, target %s", a, b)
	}
	if _, err := src.Exec("INSERT INTO " + dbName + ".items VALUES (4, 'four', '')"); err != nil {
		t.Fatal(err)
	}
	r = p.sync(t, false, true, dbs...)
	if len(r.GetFailed()) > 0 {
		t.Fatal(r.GetFailed())
	}
	var n int
	if err := dst.QueryRow("SELECT COUNT(*) FROM " + dbName + ".items").Scan(&n); err != nil || n != 4 {
		t.Fatalf("target rows %d, %v", n, err)
	}
	if a, b := checksum(); a != b {
		t.Fatalf("after the second pass: table checksum source %s, target %s", a, b)
	}
	t.Logf("database bytes per pass: %d", r.GetDatabaseBytes())

	// A database of the account's that the authorization does not list.
	other := p.user + "_other"
	if _, err := src.Exec("CREATE DATABASE " + other); err != nil {
		t.Fatal(err)
	}
	r = p.sync(t, false, false, &agentpb.BackupDatabase{Engine: "mariadb", Name: other})
	if len(r.GetFailed()) != 1 || !strings.Contains(r.GetFailed()[0].GetError(), "refused") {
		t.Fatalf("unauthorized database: %v", r)
	}
	var exists int
	_ = dst.QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?", other).Scan(&exists)
	if exists != 0 {
		t.Error("unauthorized database created on the target")
	}
}

// The same stream into PostgreSQL (pg_dump into psql).
func TestSyncDatabasePostgres(t *testing.T) {
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
		"CREATE TABLE items (id INT PRIMARY KEY, name TEXT)",
		"INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 500) g",
	} {
		if _, err := src.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	r := p.sync(t, false, false, dbs...)
	if len(r.GetFailed()) > 0 || len(r.GetDatabases()) != 1 {
		t.Fatalf("result %v\nsource log: %s\ntarget log: %s", r, p.src.log, p.dst.log)
	}
	dst := p.dst.pg.MustConnect(t, dbName)
	var n int
	var sum string
	if err := dst.QueryRow(ctx, "SELECT COUNT(*), md5(string_agg(name, ',' ORDER BY id)) FROM items").Scan(&n, &sum); err != nil || n != 500 {
		t.Fatalf("target rows %d, %v", n, err)
	}
	var want string
	if err := src.QueryRow(ctx, "SELECT md5(string_agg(name, ',' ORDER BY id)) FROM items").Scan(&want); err != nil || want != sum {
		t.Fatalf("rows differ: %s vs %s (%v)", want, sum, err)
	}
}
