package db

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	pgtest "github.com/npanel/npanel/internal/testenv/postgres"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

const pg = validate.EnginePostgreSQL

func pgUserConn(t testing.TB, env *actions.Env, user, pw, db string) (*pgx.Conn, error) {
	t.Helper()
	return pgx.Connect(context.Background(), (&postgres{paths: env.Profile.DB(), user: user, pw: pw}).connString(db))
}

func TestPostgresLifecycle(t *testing.T) {
	env, srv := pgEnv(t)
	ctx := ctxT(t)
	if r := mustApply(t, env, ensureDB(pg, "alice_shop", "alice")).(*agentpb.DatabaseResult); r.Existed {
		t.Fatal("new database reported existing")
	}
	if r := mustApply(t, env, ensureDB(pg, "alice_shop", "alice")).(*agentpb.DatabaseResult); !r.Existed {
		t.Fatal("repeat ensure")
	}
	mustApply(t, env, ensureDB(pg, "alice_other", "alice"))
	u := mustApply(t, env, ensureUser(pg, "alice_app", "alice", pw1, map[string][]string{"alice_shop": {"ALL"}})).(*agentpb.DatabaseUserResult)
	if u.Existed {
		t.Fatal("new user existed")
	}
	c, err := pgUserConn(t, env, "alice_app", pw1, "alice_shop")
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	for _, q := range []string{"CREATE TABLE t (id int primary key, v text)", "INSERT INTO t VALUES (1, 'a'), (2, 'b')"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	c.Close(ctx)
	// No CONNECT on the other database (PUBLIC's default was revoked).
	if c, err := pgUserConn(t, env, "alice_app", pw1, "alice_other"); err == nil {
		c.Close(ctx)
		t.Fatal("user connected to a database it has no grant on")
	}
	// Idempotent; password kept; password changed.
	if u = mustApply(t, env, ensureUser(pg, "alice_app", "alice", pw1, map[string][]string{"alice_shop": {"ALL"}})).(*agentpb.DatabaseUserResult); u.PasswordChanged || !u.Existed {
		t.Fatalf("repeat: %+v", u)
	}
	mustApply(t, env, ensureUser(pg, "alice_app", "alice", "", map[string][]string{"alice_shop": {"ALL"}}))
	if u = mustApply(t, env, ensureUser(pg, "alice_app", "alice", pw2, map[string][]string{"alice_shop": {"ALL"}})).(*agentpb.DatabaseUserResult); !u.PasswordChanged {
		t.Fatal("password change not reported")
	}
	if err := loginAs(t, env, pg, "alice_app", pw1); err == nil {
		t.Fatal("old password works")
	}
	if err := loginAs(t, env, pg, "alice_app", pw2); err != nil {
		t.Fatalf("new password: %v", err)
	}
	// Converge down to CONNECT: no more CREATE in schema public.
	mustApply(t, env, ensureUser(pg, "alice_app", "alice", "", map[string][]string{"alice_shop": {"CONNECT"}}))
	c, err = pgUserConn(t, env, "alice_app", pw2, "alice_shop")
	if err != nil {
		t.Fatalf("login with new password: %v", err)
	}
	if _, err := c.Exec(ctx, "CREATE TABLE t2 (i int)"); err == nil {
		t.Fatal("CREATE allowed after converging to CONNECT")
	}
	c.Close(ctx)
	// Cross-account grant refused.
	mustApply(t, env, ensureDB(pg, "bob_data", "bob"))
	if _, err := apply(t, env, ensureUser(pg, "alice_app", "alice", "", map[string][]string{"bob_data": {"ALL"}})); !errors.Is(err, ErrForeignDatabase) {
		t.Fatalf("cross-account: %v", err)
	}
	if _, err := apply(t, env, ensureUser(pg, "alice_app", "alice", "", nil, "10.0.0.1")); err == nil {
		t.Fatal("remote host accepted for PostgreSQL")
	}

	// List: size, tables, users.
	l := mustApply(t, env, listDBs(pg, "alice")).(*agentpb.ListDatabasesResult)
	if len(l.Databases) != 2 || l.Databases[1].Name != "alice_shop" {
		t.Fatalf("list %+v", l)
	}
	shop := l.Databases[1]
	admin := srv.MustConnect(t, "alice_shop")
	var size int64
	_ = admin.QueryRow(ctx, "SELECT pg_database_size('alice_shop')").Scan(&size)
	if shop.Tables != 1 || shop.SizeBytes != size || !slices.Equal(shop.Users, []string{"alice_app"}) {
		t.Fatalf("alice_shop: %+v (size %d)", shop, size)
	}
	if o := mustApply(t, env, testModule.NewOptimizeDatabase(optimizeReq("alice_shop", "alice", pg))).(*agentpb.DatabaseResult); o.Tables != 1 {
		t.Fatalf("optimize %+v", o)
	}

	// Drop the user: its table is kept (reassigned to the database's owner role).
	if r := mustApply(t, env, dropUser(pg, "alice_app", "alice")).(*agentpb.DatabaseUserResult); !r.Existed {
		t.Fatal("drop user: not found")
	}
	var n int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("table after user drop: %d %v", n, err)
	}
	if r := mustApply(t, env, dropUser(pg, "alice_app", "alice")).(*agentpb.DatabaseUserResult); r.Existed {
		t.Fatal("second drop found the user")
	}
	admin.Close(ctx)

	// Drop the database: dump first, then restore it with psql.
	r := mustApply(t, env, dropDB(pg, "alice_shop", "alice")).(*agentpb.DatabaseResult)
	if !r.Existed || filepath.Dir(r.Dump) != filepath.Join(env.Profile.BackupDir, "alice", "db") {
		t.Fatalf("drop %+v", r)
	}
	if fi, err := os.Stat(r.Dump); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dump %v %v", fi, err)
	}
	if r := mustApply(t, env, dropDB(pg, "alice_shop", "alice")).(*agentpb.DatabaseResult); r.Existed {
		t.Fatal("second drop existed")
	}
	mustApply(t, env, ensureDB(pg, "alice_restored", "alice"))
	text := gunzip(t, r.Dump)
	if !bytes.Contains(text, []byte("CREATE TABLE public.t")) {
		t.Fatal("dump lacks CREATE TABLE")
	}
	d := env.Profile.DB()
	cmd := exec.Command(d.Psql, "--host="+d.PgSocketDir, "--username="+d.PgAdminUser, "--no-password", "-v", "ON_ERROR_STOP=1", "--dbname=alice_restored")
	cmd.Env = []string{"PGPASSFILE=" + filepath.Join(env.DataDir, PostgresAdminFile)}
	cmd.Stdin = bytes.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v: %s", err, out)
	}
	rc := srv.MustConnect(t, "alice_restored")
	rows, _ := rc.Query(ctx, "SELECT id::text || '|' || v FROM t ORDER BY id")
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || !slices.Equal(got, []string{"1|a", "2|b"}) {
		t.Fatalf("restored %v %v", got, err)
	}
}

func TestPostgresInjection(t *testing.T) {
	env, srv := pgEnv(t)
	admin := srv.MustConnect(t, "postgres")
	injectionTest(t, env, pg, func() []string {
		rows, err := admin.Query(context.Background(), `SELECT 'db:' || datname FROM pg_database
			UNION ALL SELECT 'role:' || rolname FROM pg_roles ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		s, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestPostgresModuleSetupSupervised(t *testing.T) {
	pgtest.Require(t)
	p := testPrefix(t)
	e := &actions.Env{Node: "test", Logger: testLogger(), Profile: p, DataDir: t.TempDir()}
	specs, err := testModule.Setup(ctxT(t), e)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(specs, func(s services.Spec) bool { return s.Name == "postgresql" })
	if i < 0 {
		t.Fatalf("no postgresql spec: %+v", specs)
	}
	runSpec(t, specs[i])
	t.Cleanup(testModule.Close)
	if err := waitReady(t, specs[i]); err != nil {
		t.Fatal(err)
	}
	if v, err := specs[i].Version(ctxT(t)); err != nil || !strings.HasPrefix(v, "15") {
		t.Fatalf("version %q %v", v, err)
	}
	mustApply(t, e, ensureDB(pg, "erin_x", "erin"))
	mustApply(t, e, ensureUser(pg, "erin_u", "erin", pw1, map[string][]string{"erin_x": {"ALL"}}))
	c, err := pgUserConn(t, e, "erin_u", pw1, "erin_x")
	if err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
}
