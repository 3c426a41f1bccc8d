package db

import (
	"bytes"
	"compress/gzip"
	"database/sql"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	mdbtest "github.com/npanel/npanel/internal/testenv/mariadb"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

const (
	pw1 = "Str0ng-Passw0rd!"
	pw2 = "An0ther-Secret#9"
)

func TestMariaDBDatabaseUserLifecycle(t *testing.T) {
	env, srv := mariaEnv(t)
	root := srv.MustRoot(t)
	const m = validate.EngineMariaDB

	r := mustApply(t, env, ensureDB(m, "alice_shop", "alice")).(*agentpb.DatabaseResult)
	if r.Existed {
		t.Fatal("new database reported as existing")
	}
	if r = mustApply(t, env, ensureDB(m, "alice_shop", "alice")).(*agentpb.DatabaseResult); !r.Existed {
		t.Fatal("second ensure did not see the database")
	}
	var cs string
	if err := root.QueryRow("SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='alice_shop'").Scan(&cs); err != nil || cs != "utf8mb4" {
		t.Fatalf("charset %q %v", cs, err)
	}
	fi, err := os.Stat(filepath.Join(env.DataDir, MariaDBAdminFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin credentials file: %v %v", fi, err)
	}

	u := mustApply(t, env, ensureUser(m, "alice_app", "alice", pw1, map[string][]string{"alice_shop": {"ALL"}})).(*agentpb.DatabaseUserResult)
	if u.Existed || u.PasswordChanged {
		t.Fatalf("first ensure: %+v", u)
	}
	// Connect as the user over the socket and use the database.
	udb, err := srv.Open("alice_app", pw1, "alice_shop")
	if err != nil {
		t.Fatal(err)
	}
	defer udb.Close()
	for _, q := range []string{"CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO t VALUES (1, 'a'), (2, 'b')"} {
		if _, err := udb.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var n int
	if err := udb.QueryRow("SELECT COUNT(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("count %d %v", n, err)
	}
	// The user sees no other database.
	if _, err := udb.Exec("CREATE DATABASE alice_other"); err == nil {
		t.Fatal("user could create a database it has no grant on")
	}

	// Idempotent: same spec, same password: nothing changes.
	u = mustApply(t, env, ensureUser(m, "alice_app", "alice", pw1, map[string][]string{"alice_shop": {"ALL"}})).(*agentpb.DatabaseUserResult)
	if !u.Existed || u.PasswordChanged {
		t.Fatalf("repeat ensure: %+v", u)
	}
	// Without a password: kept.
	mustApply(t, env, ensureUser(m, "alice_app", "alice", "", map[string][]string{"alice_shop": {"ALL"}}))
	// New password: the old one stops working.
	u = mustApply(t, env, ensureUser(m, "alice_app", "alice", pw2, map[string][]string{"alice_shop": {"all privileges"}})).(*agentpb.DatabaseUserResult)
	if !u.PasswordChanged {
		t.Fatal("password change not reported")
	}
	u = mustApply(t, env, ensureUser(m, "alice_app", "alice", pw2, map[string][]string{"alice_shop": {"ALL"}})).(*agentpb.DatabaseUserResult)
	if u.PasswordChanged {
		t.Fatal("same password twice reported a change")
	}
	if err := ping(srv, "alice_app", pw1); err == nil {
		t.Fatal("old password still works")
	}
	if err := ping(srv, "alice_app", pw2); err != nil {
		t.Fatalf("new password: %v", err)
	}

	// Converge down to SELECT only: INSERT is revoked.
	mustApply(t, env, ensureUser(m, "alice_app", "alice", "", map[string][]string{"alice_shop": {"SELECT"}}))
	sdb, _ := srv.Open("alice_app", pw2, "alice_shop")
	defer sdb.Close()
	if _, err := sdb.Exec("INSERT INTO t VALUES (3, 'c')"); err == nil {
		t.Fatal("INSERT allowed after converging to SELECT")
	}
	if err := sdb.QueryRow("SELECT COUNT(*) FROM t").Scan(&n); err != nil {
		t.Fatalf("SELECT after converging: %v", err)
	}
	var grants int
	_ = root.QueryRow("SELECT COUNT(*) FROM mysql.db WHERE User='alice_app'").Scan(&grants)
	if grants != 1 {
		t.Fatalf("%d mysql.db rows, want 1", grants)
	}
	// An extra host, then none; then no grants at all.
	u = mustApply(t, env, ensureUser(m, "alice_app", "alice", "", map[string][]string{"alice_shop": {"SELECT"}}, "10.1.2.0/24", "192.0.2.7")).(*agentpb.DatabaseUserResult)
	if !slices.Equal(u.Hosts, []string{"localhost", "10.1.2.0/255.255.255.0", "192.0.2.7"}) {
		t.Fatalf("hosts %v", u.Hosts)
	}
	_, users := mariaState(t, root)
	for _, want := range []string{"alice_app@10.1.2.0/255.255.255.0", "alice_app@192.0.2.7", "alice_app@localhost"} {
		if !slices.Contains(users, want) {
			t.Fatalf("users %v lack %s", users, want)
		}
	}
	mustApply(t, env, ensureUser(m, "alice_app", "alice", "", nil))
	_, users = mariaState(t, root)
	if slices.Contains(users, "alice_app@192.0.2.7") {
		t.Fatal("host not removed")
	}
	_ = root.QueryRow("SELECT COUNT(*) FROM mysql.db WHERE User='alice_app'").Scan(&grants)
	if grants != 0 {
		t.Fatalf("%d grants left", grants)
	}
	// A new user needs a password.
	if _, err := apply(t, env, ensureUser(m, "alice_nopw", "alice", "", nil)); err == nil || !strings.Contains(err.Error(), "password is required") {
		t.Fatalf("user without password: %v", err)
	}

	if r := mustApply(t, env, dropUser(m, "alice_app", "alice")).(*agentpb.DatabaseUserResult); !r.Existed {
		t.Fatal("drop did not find the user")
	}
	if r := mustApply(t, env, dropUser(m, "alice_app", "alice")).(*agentpb.DatabaseUserResult); r.Existed {
		t.Fatal("second drop found the user")
	}
	if err := ping(srv, "alice_app", pw2); err == nil {
		t.Fatal("dropped user can log in")
	}
}

func ping(srv *mdbtest.Server, user, pw string) error {
	db, err := srv.Open(user, pw, "")
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Ping()
}

func TestMariaDBCrossAccountGrantRefused(t *testing.T) {
	env, srv := mariaEnv(t)
	root := srv.MustRoot(t)
	const m = validate.EngineMariaDB
	mustApply(t, env, ensureDB(m, "bob_data", "bob"))

	a := ensureUser(m, "alice_app", "alice", pw1, map[string][]string{"bob_data": {"SELECT"}})
	if err := a.Validate(); !errors.Is(err, ErrForeignDatabase) {
		t.Fatalf("Validate: %v, want ErrForeignDatabase", err)
	}
	// Apply checks again even if Validate was skipped.
	if _, err := a.Apply(ctxT(t), env); !errors.Is(err, ErrForeignDatabase) {
		t.Fatalf("Apply: %v", err)
	}
	// And the engine refuses a spec that bypassed normalize.
	e, err := testModule.engineFor(ctxT(t), env, m)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ensureUser(ctxT(t), userSpec{name: "alice_app", owner: "alice", password: pw1, hosts: []string{"localhost"},
		grants: []*agentpb.DatabaseGrant{{Database: "bob_data", Privileges: []string{"SELECT"}}}}, testLogger())
	if !errors.Is(err, ErrForeignDatabase) {
		t.Fatalf("engine: %v", err)
	}
	// The user created before the refused grant was rolled back.
	_, users := mariaState(t, root)
	if slices.Contains(users, "alice_app@localhost") {
		t.Fatalf("half-made user left: %v", users)
	}
}

// TestMariaDBGrantWildcardEscaped: in GRANT a database name is a LIKE
// pattern, so an unescaped grant on alice_a_b would also cover alicexa_b,
// a database of account "alicexa".
func TestMariaDBGrantWildcardEscaped(t *testing.T) {
	env, srv := mariaEnv(t)
	const m = validate.EngineMariaDB
	mustApply(t, env, ensureDB(m, "alice_a_b", "alice"))
	mustApply(t, env, ensureDB(m, "alicexa_b", "alicexa"))
	mustApply(t, env, ensureUser(m, "alice_u", "alice", pw1, map[string][]string{"alice_a_b": {"ALL"}}))
	db, _ := srv.Open("alice_u", pw1, "")
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE alice_a_b.t (i INT)"); err != nil {
		t.Fatalf("own database: %v", err)
	}
	if _, err := db.Exec("CREATE TABLE alicexa_b.t (i INT)"); err == nil {
		t.Fatal("grant on alice_a_b reached alicexa_b")
	}
	l := mustApply(t, env, listDBs(m, "alice")).(*agentpb.ListDatabasesResult)
	if len(l.Databases) != 1 || l.Databases[0].Name != "alice_a_b" || !slices.Equal(l.Databases[0].Users, []string{"alice_u"}) {
		t.Fatalf("list: %+v", l)
	}
}

func TestMariaDBDropDumpsAndRestores(t *testing.T) {
	env, srv := mariaEnv(t)
	root := srv.MustRoot(t)
	const m = validate.EngineMariaDB
	mustApply(t, env, ensureDB(m, "carol_blog", "carol"))
	for _, q := range []string{
		"CREATE TABLE carol_blog.posts (id INT PRIMARY KEY, title VARCHAR(100), body BLOB)",
		"INSERT INTO carol_blog.posts VALUES (1, 'hello', 'x'), (2, 'it''s `quoted`', UNHEX('00FF10')), (3, 'ünïcode ✓', NULL)",
	} {
		if _, err := root.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	want := mariaRows(t, root, "carol_blog")

	r := mustApply(t, env, dropDB(m, "carol_blog", "carol")).(*agentpb.DatabaseResult)
	if !r.Existed || r.Dump == "" || r.DumpBytes == 0 {
		t.Fatalf("drop result %+v", r)
	}
	wantDir := filepath.Join(env.Profile.BackupDir, "carol", "db")
	if filepath.Dir(r.Dump) != wantDir || !strings.HasPrefix(filepath.Base(r.Dump), "carol_blog-") || !strings.HasSuffix(r.Dump, ".sql.gz") {
		t.Fatalf("dump at %s, want under %s", r.Dump, wantDir)
	}
	fi, err := os.Stat(r.Dump)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != r.DumpBytes {
		t.Fatalf("dump file %v %v", fi, err)
	}
	if ok, _ := (&mariadb{db: root}).databaseExists(ctxT(t), "carol_blog"); ok {
		t.Fatal("database still there")
	}
	// Absent: success, no dump.
	if r := mustApply(t, env, dropDB(m, "carol_blog", "carol")).(*agentpb.DatabaseResult); r.Existed || r.Dump != "" {
		t.Fatalf("second drop %+v", r)
	}

	// Restore with the mariadb client (argv, dump on stdin) into a new
	// database and compare.
	mustApply(t, env, ensureDB(m, "carol_restored", "carol"))
	sqlText := gunzip(t, r.Dump)
	if !bytes.Contains(sqlText, []byte("CREATE TABLE `posts`")) {
		t.Fatal("dump lacks CREATE TABLE")
	}
	cmd := exec.Command(mdbtest.Client, "--defaults-extra-file="+filepath.Join(env.DataDir, MariaDBAdminFile), "--socket="+srv.Socket, "carol_restored")
	cmd.Stdin = bytes.NewReader(sqlText)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v: %s", err, out)
	}
	if got := mariaRows(t, root, "carol_restored"); !slices.Equal(got, want) {
		t.Fatalf("restored rows %q, want %q", got, want)
	}
}

func mariaRows(t testing.TB, db *sql.DB, schema string) []string {
	t.Helper()
	rows, err := db.Query("SELECT CONCAT_WS('|', id, title, HEX(body)) FROM " + mysqlIdent(schema) + ".posts ORDER BY id")
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

func gunzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMariaDBListSizesAndOptimize(t *testing.T) {
	env, srv := mariaEnv(t)
	root := srv.MustRoot(t)
	const m = validate.EngineMariaDB
	mustApply(t, env, ensureDB(m, "dave_a", "dave"))
	mustApply(t, env, ensureDB(m, "dave_b", "dave"))
	mustApply(t, env, ensureDB(m, "davex_c", "davex")) // another account, same prefix letters
	for _, q := range []string{
		"CREATE TABLE dave_a.t1 (id INT PRIMARY KEY AUTO_INCREMENT, v TEXT)",
		"CREATE TABLE dave_a.t2 (id INT PRIMARY KEY)",
		"CREATE TABLE dave_a.t3 (id INT PRIMARY KEY) ENGINE=Aria",
		"CREATE VIEW dave_a.v AS SELECT id FROM dave_a.t2",
		"INSERT INTO dave_a.t1 (v) SELECT REPEAT('x', 1000) FROM information_schema.COLUMNS LIMIT 500",
		"ANALYZE TABLE dave_a.t1, dave_a.t2, dave_a.t3",
	} {
		if _, err := root.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	mustApply(t, env, ensureUser(m, "dave_rw", "dave", pw1, map[string][]string{"dave_a": {"ALL"}, "dave_b": {"SELECT"}}))
	mustApply(t, env, ensureUser(m, "dave_ro", "dave", pw2, map[string][]string{"dave_a": {"SELECT"}}))

	l := mustApply(t, env, listDBs(m, "dave")).(*agentpb.ListDatabasesResult)
	if len(l.Databases) != 2 || l.Databases[0].Name != "dave_a" || l.Databases[1].Name != "dave_b" {
		t.Fatalf("list %+v", l)
	}
	a, b := l.Databases[0], l.Databases[1]
	var size int64
	if err := root.QueryRow("SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA='dave_a' AND TABLE_TYPE='BASE TABLE'").Scan(&size); err != nil {
		t.Fatal(err)
	}
	if a.Tables != 3 || a.SizeBytes != size || a.SizeBytes < 500*1000 {
		t.Fatalf("dave_a: %+v, want 3 tables and %d bytes (>= 500 kB of rows)", a, size)
	}
	if b.Tables != 0 || b.SizeBytes != 0 {
		t.Fatalf("dave_b: %+v", b)
	}
	if !slices.Equal(a.Users, []string{"dave_ro", "dave_rw"}) || !slices.Equal(b.Users, []string{"dave_rw"}) {
		t.Fatalf("users: %v %v", a.Users, b.Users)
	}
	if l := mustApply(t, env, listDBs(m, "nobody")).(*agentpb.ListDatabasesResult); len(l.Databases) != 0 {
		t.Fatalf("nobody: %+v", l)
	}

	o := mustApply(t, env, testModule.NewOptimizeDatabase(optimizeReq("dave_a", "dave", m))).(*agentpb.DatabaseResult)
	if o.Tables != 3 {
		t.Fatalf("optimize %+v", o)
	}
	if _, err := apply(t, env, testModule.NewOptimizeDatabase(optimizeReq("dave_zzz", "dave", m))); err == nil {
		t.Fatal("optimize of a missing database succeeded")
	}
}

func TestMariaDBModuleSetupSupervised(t *testing.T) {
	mdbtest.Require(t)
	p := testPrefix(t)
	e := &actions.Env{Node: "test", Logger: testLogger(), Profile: p, DataDir: t.TempDir()}
	specs, err := testModule.Setup(ctxT(t), e)
	if err != nil {
		t.Fatal(err)
	}
	var spec *services.Spec
	for i := range specs {
		if specs[i].Name == "mariadb" {
			spec = &specs[i]
		}
	}
	if spec == nil {
		t.Fatalf("no mariadb spec in %+v", specs)
	}
	runSpec(t, *spec)
	t.Cleanup(testModule.Close)
	if err := waitReady(t, *spec); err != nil {
		t.Fatal(err)
	}
	v, err := spec.Version(ctxT(t))
	if err != nil || !strings.Contains(v, "MariaDB") {
		t.Fatalf("version %q %v", v, err)
	}
	mustApply(t, e, ensureDB(validate.EngineMariaDB, "erin_x", "erin"))
	// Setup again on an installed datadir is a no-op that succeeds.
	if _, err := testModule.Setup(ctxT(t), e); err != nil {
		t.Fatal(err)
	}
}
