package migrate

import (
	"database/sql"
	"testing"

	"github.com/npanel/npanel/protos/agentpb"
)

// mariaPair is a pair of nodes with one MariaDB database of the account
// (empty, copied once), and the last pass of its sync.
func mariaPair(t *testing.T, suffix string) (src, dst *sql.DB, dbName string, pass func() int64, p *pair) {
	t.Helper()
	var dbs []*agentpb.BackupDatabase
	p = newPairWith(t, pairOpts{maria: true}, func(user string) []*agentpb.BackupDatabase {
		dbName = user + suffix
		dbs = []*agentpb.BackupDatabase{{Engine: "mariadb", Name: dbName}}
		return dbs
	})
	src = p.src.maria.MustRoot(t)
	dst = p.dst.maria.MustRoot(t)
	mustExec(t, src, "CREATE DATABASE "+dbName)
	sync := func(final bool) int64 {
		t.Helper()
		r := p.sync(t, false, final, dbs...)
		if len(r.GetFailed()) > 0 || len(r.GetDatabases()) != 1 {
			t.Fatalf("result %v\nsource log: %s\ntarget log: %s", r, p.src.log, p.dst.log)
		}
		return int64(r.GetDatabaseBytes())
	}
	sync(false)
	return src, dst, dbName, func() int64 { t.Helper(); return sync(true) }, p
}

func mustExec(t *testing.T, c *sql.DB, qs ...string) {
	t.Helper()
	for _, q := range qs {
		if _, err := c.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// A system-versioned table changed after the earlier pass reaches the
// target (such a database goes whole: CHECKSUM TABLE of a versioned table
// never matches its copy).
func TestFinalSyncIncrementalMariaDBVersioned(t *testing.T) {
	src, dst, dbName, pass, p := mariaPair(t, "_ver")
	mustExec(t, src,
		"CREATE TABLE "+dbName+".plain (id INT PRIMARY KEY)",
		"INSERT INTO "+dbName+".plain VALUES (1)",
		"CREATE TABLE "+dbName+".ver (id INT PRIMARY KEY, v VARCHAR(16)) WITH SYSTEM VERSIONING",
		"INSERT INTO "+dbName+".ver VALUES (1, 'one'), (2, 'two')",
	)
	pass()
	mustExec(t, src, "UPDATE "+dbName+".ver SET v = 'zwei' WHERE id = 2", "INSERT INTO "+dbName+".ver VALUES (3, 'drei')")
	if n := pass(); n == 0 {
		t.Error("versioned table changed: nothing sent")
	}
	var v string
	if err := dst.QueryRow("SELECT GROUP_CONCAT(v ORDER BY id) FROM " + dbName + ".ver").Scan(&v); err != nil || v != "one,zwei,drei" {
		t.Fatalf("versioned table on the target: %q %v\nsource log: %s", v, err, p.src.log)
	}
	mustExec(t, src, "DELETE FROM "+dbName+".ver WHERE id = 1")
	pass()
	if err := dst.QueryRow("SELECT GROUP_CONCAT(v ORDER BY id) FROM " + dbName + ".ver").Scan(&v); err != nil || v != "zwei,drei" {
		t.Fatalf("versioned table on the target after a delete: %q %v", v, err)
	}
}

// A sequence used after the earlier pass never hands out a value again on
// the target; an unused one sends nothing.
func TestFinalSyncIncrementalMariaDBSequence(t *testing.T) {
	src, dst, dbName, pass, p := mariaPair(t, "_seq")
	mustExec(t, src,
		"CREATE TABLE "+dbName+".plain (id INT PRIMARY KEY)",
		"INSERT INTO "+dbName+".plain VALUES (1)",
		"CREATE SEQUENCE "+dbName+".seq",
	)
	pass()
	if n := pass(); n != 0 {
		t.Fatalf("unchanged: last pass sent %d bytes\nsource log: %s", n, p.src.log)
	}
	nextval := func(c *sql.DB) (v int64) {
		t.Helper()
		if err := c.QueryRow("SELECT NEXTVAL(" + dbName + ".seq)").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	state := func(c *sql.DB) (s string) {
		t.Helper()
		if err := c.QueryRow("SELECT CONCAT_WS(',', next_not_cached_value, minimum_value, maximum_value, start_value, increment, cache_size, cycle_option, cycle_count) FROM " + dbName + ".seq").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	var last int64
	for range 3 {
		last = nextval(src)
	}
	if n := pass(); n == 0 {
		t.Error("sequence used: nothing sent")
	}
	if a, b := state(src), state(dst); a != b {
		t.Errorf("sequence state %s here, %s on the target", a, b)
	}
	if next := nextval(dst); next <= last {
		t.Fatalf("target's sequence gives %d, the source gave %d already", next, last)
	}
	pass() // the target's use undone
	if n := pass(); n != 0 {
		t.Errorf("unchanged again: last pass sent %d bytes\nsource log: %s", n, p.src.log)
	}
	// Used within its cache: the state stays, and every value served is
	// below where the target starts.
	last = nextval(src)
	pass()
	if next := nextval(dst); next <= last {
		t.Fatalf("target's sequence gives %d, the source gave %d already", next, last)
	}
	// Moved by SETVAL.
	mustExec(t, src, "SELECT SETVAL("+dbName+".seq, 100000)")
	if n := pass(); n == 0 {
		t.Error("sequence moved: nothing sent")
	}
	if a, b := state(src), state(dst); a != b {
		t.Errorf("sequence state %s here, %s on the target", a, b)
	}
}

// The last pass of a PostgreSQL database sees large objects, enum values,
// row security and its policies, rules and domains changed after the
// earlier pass, and sends nothing when none did.
func TestFinalSyncIncrementalPostgresCatalog(t *testing.T) {
	var dbName string
	var dbs []*agentpb.BackupDatabase
	p := newPairWith(t, pairOpts{pg: true}, func(user string) []*agentpb.BackupDatabase {
		dbName = user + "_cat"
		dbs = []*agentpb.BackupDatabase{{Engine: "postgresql", Name: dbName}}
		return dbs
	})
	ctx := ctxT(t)
	admin := p.src.pg.MustConnect(t, "postgres")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+dbName); err != nil {
		t.Fatal(err)
	}
	src := p.src.pg.MustConnect(t, dbName)
	exec := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := src.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	exec(
		"CREATE TYPE mood AS ENUM ('sad', 'ok')",
		"CREATE TABLE items (id INT PRIMARY KEY, m mood, at TIMESTAMPTZ DEFAULT '2026-01-02 03:04:05.123+00', d DATE DEFAULT '2026-02-03',\n"+
			"f FLOAT8 DEFAULT 0.1, iv INTERVAL DEFAULT '1 day 02:03:04', b BYTEA DEFAULT '\\x00ff')",
		"INSERT INTO items (id, m) VALUES (1, 'ok')",
		"SELECT lo_from_bytea(424242, 'first blob')",
	)
	pass := func(final bool) uint64 {
		t.Helper()
		r := p.sync(t, false, final, dbs...)
		if len(r.GetFailed()) > 0 || len(r.GetDatabases()) != 1 {
			t.Fatalf("result %v\nsource log: %s\ntarget log: %s", r, p.src.log, p.dst.log)
		}
		return r.GetDatabaseBytes()
	}
	pass(false)
	if n := pass(true); n != 0 {
		t.Errorf("unchanged database: last pass sent %d bytes, want 0\nsource log: %s", n, p.src.log)
	}
	query := func(q string) (s string) {
		t.Helper()
		// A new connection each time: a whole copy drops the database.
		dst := p.dst.pg.MustConnect(t, dbName)
		if err := dst.QueryRow(ctx, q).Scan(&s); err != nil {
			t.Fatalf("%s on the target: %v\nsource log: %s", q, err, p.src.log)
		}
		return s
	}
	for _, c := range []struct{ what, change, check, want string }{
		{"new large object", "SELECT lo_from_bytea(434343, 'second blob')", "SELECT convert_from(lo_get(434343), 'UTF8')", "second blob"},
		{"large object written", "SELECT lo_put(424242, 0, '\\x46'::bytea)", "SELECT convert_from(lo_get(424242), 'UTF8')", "First blob"},
		{"large object unlinked", "SELECT lo_unlink(434343)", "SELECT count(*)::text FROM pg_largeobject_metadata WHERE oid = 434343", "0"},
		{"enum value", "ALTER TYPE mood ADD VALUE 'glad'", "SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = 'mood'::regtype", "sad,ok,glad"},
		{"row security", "ALTER TABLE items ENABLE ROW LEVEL SECURITY", "SELECT relrowsecurity::text FROM pg_class WHERE relname = 'items'", "true"},
		{"policy", "CREATE POLICY mine ON items USING (id > 0)", "SELECT count(*)::text FROM pg_policies WHERE policyname = 'mine'", "1"},
		{"rule", "CREATE RULE keep AS ON DELETE TO items DO INSTEAD NOTHING", "SELECT count(*)::text FROM pg_rules WHERE rulename = 'keep'", "1"},
		{"domain", "CREATE DOMAIN posint AS INT CHECK (VALUE > 0)", "SELECT count(*)::text FROM pg_type WHERE typname = 'posint'", "1"},
	} {
		exec(c.change)
		if n := pass(true); n == 0 {
			t.Errorf("%s: nothing sent", c.what)
		}
		if got := query(c.check); got != c.want {
			t.Errorf("%s: %q on the target, want %q", c.what, got, c.want)
		}
		if n := pass(true); n != 0 {
			t.Fatalf("%s, unchanged since: last pass sent %d bytes\nsource log: %s", c.what, n, p.src.log)
		}
	}
	// The target's server prints rows its own way: the same rows still
	// match.
	dstAdmin := p.dst.pg.MustConnect(t, "postgres")
	for _, set := range []string{"TimeZone = 'Asia/Tokyo'", "DateStyle = 'SQL, DMY'", "IntervalStyle = 'iso_8601'",
		"extra_float_digits = -2", "bytea_output = 'escape'"} {
		if _, err := dstAdmin.Exec(ctx, "ALTER ROLE CURRENT_USER SET "+set); err != nil {
			t.Fatal(err)
		}
	}
	if n := pass(true); n != 0 {
		t.Errorf("target printing rows otherwise: last pass sent %d bytes\nsource log: %s", n, p.src.log)
	}
}
