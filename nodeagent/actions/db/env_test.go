package db

import (
	"bytes"
	"context"
	"database/sql"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	mdbtest "github.com/npanel/npanel/internal/testenv/mariadb"
	pgtest "github.com/npanel/npanel/internal/testenv/postgres"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/nodeagent/services"
	"github.com/npanel/npanel/protos/agentpb"
)

// testPrefix makes a prefix the database daemons' users can traverse.
func testPrefix(t testing.TB) *platform.Profile {
	t.Helper()
	prefix, err := os.MkdirTemp("", "npt-dbprefix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(prefix) })
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	return platform.Debian12(prefix)
}

// testModule is the database module of the one agent a test binary of
// this package plays.
var testModule = NewModule()

func testLogger() *slog.Logger {
	if os.Getenv("NPANEL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.DiscardHandler)
}

// mariaEnv starts a private MariaDB where p.DB() expects it and returns an
// Env for the actions. The agent's admin account does not exist yet: the
// first action bootstraps it over root's socket login, as on a fresh
// supervised node.
func mariaEnv(t testing.TB) (*actions.Env, *mdbtest.Server) {
	t.Helper()
	mdbtest.Require(t)
	p := testPrefix(t)
	d := p.DB()
	for _, dir := range []string{d.MariaDBDataDir, d.MariaDBRunDir, d.MariaDBTmpDir} {
		if err := mkdirPublicParents(p.Prefix, dir); err != nil {
			t.Fatal(err)
		}
	}
	srv := mdbtest.StartWith(t, mdbtest.Layout{
		DataDir: d.MariaDBDataDir, RunDir: d.MariaDBRunDir, Socket: d.MariaDBSocket,
		PIDFile: d.MariaDBPIDFile, TmpDir: d.MariaDBTmpDir,
	})
	env := &actions.Env{Node: "test", Logger: testLogger(), Profile: p, DataDir: t.TempDir()}
	t.Cleanup(testModule.Close) // before the server stops (cleanups run last-first)
	return env, srv
}

// pgEnv starts a private PostgreSQL where p.DB() expects it, with the admin
// credentials in the agent's DataDir.
func pgEnv(t testing.TB) (*actions.Env, *pgtest.Server) {
	t.Helper()
	pgtest.Require(t)
	p := testPrefix(t)
	d := p.DB()
	if err := mkdirPublicParents(p.Prefix, d.PgDataDir, d.PgSocketDir); err != nil {
		t.Fatal(err)
	}
	srv := pgtest.StartWith(t, pgtest.Layout{DataDir: d.PgDataDir, SocketDir: d.PgSocketDir})
	env := &actions.Env{Node: "test", Logger: testLogger(), Profile: p, DataDir: t.TempDir()}
	if err := writeSecretFile(filepath.Join(env.DataDir, PostgresAdminFile), []byte(srv.Pgpass())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(testModule.Close)
	return env, srv
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func engineEnum(e string) agentpb.DatabaseEngine {
	if e == "postgresql" {
		return agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL
	}
	return agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB
}

// apply validates and applies a, as the agent does.
func apply(t testing.TB, env *actions.Env, a actions.Action) (any, error) {
	t.Helper()
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a.Apply(ctxT(t), env)
}

func mustApply(t testing.TB, env *actions.Env, a actions.Action) any {
	t.Helper()
	r, err := apply(t, env, a)
	if err != nil {
		t.Fatalf("%s: %v", a.Name(), err)
	}
	return r
}

func ensureDB(engine, name, owner string) *EnsureDatabase {
	return testModule.NewEnsureDatabase(&agentpb.EnsureDatabaseAction{Name: name, Owner: owner, Engine: engineEnum(engine)})
}

func dropDB(engine, name, owner string) *DropDatabase {
	return testModule.NewDropDatabase(&agentpb.DropDatabaseAction{Name: name, Owner: owner, Engine: engineEnum(engine)})
}

func ensureUser(engine, name, owner, pw string, grants map[string][]string, hosts ...string) *EnsureDatabaseUser {
	req := &agentpb.EnsureDatabaseUserAction{Name: name, Owner: owner, Engine: engineEnum(engine), Password: pw, Hosts: hosts}
	names := make([]string, 0, len(grants))
	for d := range grants {
		names = append(names, d)
	}
	slices.Sort(names)
	for _, d := range names {
		req.Grants = append(req.Grants, &agentpb.DatabaseGrant{Database: d, Privileges: grants[d]})
	}
	return testModule.NewEnsureDatabaseUser(req)
}

func dropUser(engine, name, owner string) *DropDatabaseUser {
	return testModule.NewDropDatabaseUser(&agentpb.DropDatabaseUserAction{Name: name, Owner: owner, Engine: engineEnum(engine)})
}

func listDBs(engine, owner string) *ListDatabases {
	return testModule.NewListDatabases(&agentpb.ListDatabasesAction{Username: owner, Engine: engineEnum(engine)})
}

// mariaState is the set of databases and users on a MariaDB server, the
// thing the injection tests prove unchanged.
func mariaState(t testing.TB, db *sql.DB) (dbs, users []string) {
	t.Helper()
	rows, err := db.Query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		dbs = append(dbs, s)
	}
	rows.Close()
	rows, err = db.Query("SELECT CONCAT(User, '@', Host) FROM mysql.user ORDER BY 1")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		users = append(users, s)
	}
	rows.Close()
	return dbs, users
}

func optimizeReq(name, owner, engine string) *agentpb.OptimizeDatabaseAction {
	return &agentpb.OptimizeDatabaseAction{Name: name, Owner: owner, Engine: engineEnum(engine)}
}

// runSpec starts a spec's daemon the way a supervisor would (binary, args,
// env), stopped by PID at cleanup.
func runSpec(t testing.TB, s services.Spec) {
	t.Helper()
	cmd := exec.Command(s.Binary, s.Args...)
	cmd.Env = s.Env
	if cmd.Env == nil {
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", s.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		sig := s.StopSignal
		if sig == 0 {
			sig = syscall.SIGTERM
		}
		_ = cmd.Process.Signal(sig)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", s.Name, out.String())
		}
	})
}

// waitReady polls the spec's Ready for up to 30 s.
func waitReady(t testing.TB, s services.Spec) error {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.Ready(ctx)
		cancel()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// loginAs logs in as user with pw over the engine's socket and runs a query.
func loginAs(t testing.TB, env *actions.Env, engine, user, pw string) error {
	t.Helper()
	d := env.Profile.DB()
	if engine == "postgresql" {
		c, err := pgx.Connect(context.Background(), (&postgres{paths: d, user: user, pw: pw}).connString(pgMaintenanceDB))
		if err != nil {
			return err
		}
		defer c.Close(context.Background())
		var one int
		return c.QueryRow(context.Background(), "SELECT 1").Scan(&one)
	}
	db, err := mariadbPool(d.MariaDBSocket, user, pw)
	if err != nil {
		return err
	}
	defer db.Close()
	var one int
	return db.QueryRow("SELECT 1").Scan(&one)
}
