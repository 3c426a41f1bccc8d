package migrate

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// restoreDump runs restore-database with dump on its stdin.
func restoreDump(t *testing.T, p *pair, engine, name, dump string) error {
	t.Helper()
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
	s.Stderr = &stderr
	s.Stdin = strings.NewReader(dump)
	if err := s.Run("restore-database " + engine + " " + name); err != nil {
		return fmt.Errorf("%w: %s", err, stderr.String())
	}
	return nil
}

func randName(t *testing.T) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// A hostile MariaDB dump cannot reach beyond its database: it is loaded
// by a user holding privileges on that database only, in sandbox mode.
func TestRestoreHostileMariaDB(t *testing.T) {
	var dbName string
	p := newPairWith(t, pairOpts{maria: true}, func(user string) []*agentpb.BackupDatabase {
		dbName = user + "_shop"
		return []*agentpb.BackupDatabase{{Engine: "mariadb", Name: dbName}}
	})
	outfile := filepath.Join(os.TempDir(), "npt-outfile-"+randName(t))
	shell := filepath.Join(os.TempDir(), "npt-shell-"+randName(t))
	t.Cleanup(func() { _ = os.Remove(outfile); _ = os.Remove(shell) })
	const head, trailer = `/*M!999999\- enable the sandbox mode */` + "\n", "-- Dump completed on 2026-01-01\n"
	for _, stmt := range []string{
		"CREATE USER 'npt_evil'@'%' IDENTIFIED BY 'x';",
		"GRANT ALL PRIVILEGES ON *.* TO 'npt_evil2'@'%' IDENTIFIED BY 'x';",
		"GRANT ALL PRIVILEGES ON mysql.* TO CURRENT_USER;",
		"SELECT 'x' INTO OUTFILE '" + outfile + "';",
		"SELECT User FROM mysql.user;",
		"\\! touch " + shell,
	} {
		dump := head + "CREATE TABLE t (i INT);\n" + stmt + "\n" + trailer
		err := restoreDump(t, p, "mariadb", dbName, dump)
		if err == nil {
			t.Errorf("%s: restored", stmt)
		}
		t.Logf("%s: %v", stmt, err)
	}
	dst := p.dst.maria.MustRoot(t)
	var n int
	if err := dst.QueryRow("SELECT COUNT(*) FROM mysql.user WHERE User LIKE 'npt\\_evil%' OR User LIKE 'npimport\\_%'").Scan(&n); err != nil || n != 0 {
		t.Errorf("users left or made: %d %v", n, err)
	}
	for _, f := range []string{outfile, shell} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s written: %v", f, err)
		}
	}
	// A normal dump still restores.
	if err := restoreDump(t, p, "mariadb", dbName, head+"CREATE TABLE t (i INT);\nINSERT INTO t VALUES (7);\n"+trailer); err != nil {
		t.Fatal(err)
	}
	if err := dst.QueryRow("SELECT i FROM " + dbName + ".t").Scan(&n); err != nil || n != 7 {
		t.Errorf("normal dump: %d %v", n, err)
	}
}

// A hostile PostgreSQL dump runs no psql meta-command and nothing a
// superuser could: it is loaded by a role that owns only its database,
// psql restricted with a key the dump cannot know.
func TestRestoreHostilePostgres(t *testing.T) {
	var dbName string
	p := newPairWith(t, pairOpts{pg: true}, func(user string) []*agentpb.BackupDatabase {
		dbName = user + "_app"
		return []*agentpb.BackupDatabase{{Engine: "postgresql", Name: dbName}}
	})
	ctx := ctxT(t)
	shell := filepath.Join(os.TempDir(), "npt-shell-"+randName(t))
	prog := filepath.Join(os.TempDir(), "npt-prog-"+randName(t))
	t.Cleanup(func() { _ = os.Remove(shell); _ = os.Remove(prog) })
	const key = "abcdef0123456789"
	head := "--\n-- PostgreSQL database dump\n--\n\n\\restrict " + key + "\n\nSET statement_timeout = 0;\n"
	const trailer = "--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict " + key + "\n"
	for _, stmt := range []string{
		"\\! touch " + shell,
		"\\unrestrict " + key + "\n\\! touch " + shell,
		"COPY (SELECT 1) TO PROGRAM 'touch " + prog + "';",
		"CREATE ROLE npt_evil SUPERUSER LOGIN;",
		"ALTER ROLE CURRENT_USER SUPERUSER;",
		"\\connect postgres",
		"\\copy (SELECT 1) TO '" + shell + "'",
		"SELECT pg_read_file('/etc/passwd');",
	} {
		dump := head + "CREATE TABLE public.t (i int);\n" + stmt + "\n" + trailer
		err := restoreDump(t, p, "postgresql", dbName, dump)
		if err == nil {
			t.Errorf("%s: restored", stmt)
		}
		t.Logf("%s: %v", stmt, err)
	}
	for _, f := range []string{shell, prog} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s written: %v", f, err)
		}
	}
	admin := p.dst.pg.MustConnect(t, "postgres")
	var n int
	if err := admin.QueryRow(ctx, "SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE 'npt\\_evil%' OR rolname LIKE 'npimport\\_%'").Scan(&n); err != nil || n != 0 {
		t.Errorf("roles left or made: %d %v", n, err)
	}
	// A normal dump still restores, and the database is the admin's again.
	if err := restoreDump(t, p, "postgresql", dbName, head+"CREATE TABLE public.t (i int);\nINSERT INTO public.t VALUES (7);\n"+trailer); err != nil {
		t.Fatal(err)
	}
	var owner string
	if err := admin.QueryRow(ctx, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", dbName).Scan(&owner); err != nil || strings.HasPrefix(owner, "npimport_") {
		t.Errorf("database owner %q %v", owner, err)
	}
	dst := p.dst.pg.MustConnect(t, dbName)
	if err := dst.QueryRow(ctx, "SELECT i FROM t").Scan(&n); err != nil || n != 7 {
		t.Errorf("normal dump: %d %v", n, err)
	}
	// What the dump made is owned by no superuser (nor the import's role).
	var tOwner string
	var super bool
	if err := dst.QueryRow(ctx, "SELECT r.rolname, r.rolsuper FROM pg_tables t JOIN pg_roles r ON r.rolname = t.tableowner WHERE t.tablename = 't'").Scan(&tOwner, &super); err != nil ||
		super || tOwner == owner || strings.HasPrefix(tOwner, "npimport_") {
		t.Errorf("table owner %q (superuser %v), database owner %q: %v", tOwner, super, owner, err)
	}
}
