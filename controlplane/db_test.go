package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/internal/testenv/mariadb"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

func waitAccountActive(t *testing.T, c *client.Client, id string) {
	t.Helper()
	testenv.WaitFor(t, 60*time.Second, "account "+id+" ACTIVE", func() bool {
		a, err := c.Account(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if a != nil && a.Status == "FAILED" {
			t.Fatalf("account %s FAILED: %s", id, deref(a.Reason))
		}
		return a != nil && a.Status == "ACTIVE"
	})
}

func findDB(dbs []client.Database, name string) *client.Database {
	for i := range dbs {
		if dbs[i].Name == name {
			return &dbs[i]
		}
	}
	return nil
}

// An account's databases end to end: the API drives a real MariaDB that the
// agent supervises under its prefix; the account's users log in over its
// socket; plan limits, tenant boundaries and secrets hold.
func TestDatabasesEndToEnd(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/mariadbd")
	if os.Geteuid() != 0 {
		t.Skip("creating Linux users and running mariadbd needs root")
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "db-1", testenv.WithModules(t, "db"))
	ctx := testenv.Context(t)
	testenv.WaitFor(t, 10*time.Second, "db-1 READY", func() bool { return nodeStatus(t, s, "db-1") == "READY" })
	testenv.WaitFor(t, 90*time.Second, "mariadb running", func() bool {
		svcs, _, err := s.Admin.Services(ctx, "db-1")
		if err != nil {
			t.Fatal(err)
		}
		for _, sv := range svcs {
			if sv.Name == "mariadb" && sv.State == "RUNNING" {
				return true
			}
		}
		return false
	})
	prof, err := platform.DetectProfile(ag.Config.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	socket := prof.DB().MariaDBSocket

	// Tenants: reseller A owns accounts A and A2 (each with its own user
	// login), reseller B owns account B.
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "db", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 2, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"dbresa", "dbresb"} {
		if _, err := s.Admin.CreateReseller(ctx, r, resellerPassword, 3, 1000, []string{"db"}, ""); err != nil {
			t.Fatal(err)
		}
	}
	resA, resB := login(t, s, "dbresa", resellerPassword), login(t, s, "dbresb", resellerPassword)
	mkAccount := func(c *client.Client) *client.Account {
		u := testUsername(t)
		a, err := c.CreateAccount(ctx, client.CreateAccountInput{Username: u, Domain: u + ".example.com", Plan: "db"})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	acctA, acctA2, acctB := mkAccount(resA), mkAccount(resA), mkAccount(resB)
	for _, a := range []*client.Account{acctA, acctA2, acctB} {
		waitAccountActive(t, s.Admin, a.ID)
	}
	if err := resA.CreateUser(ctx, "dbownera", resellerPassword, acctA.Username); err != nil {
		t.Fatal(err)
	}
	if err := resA.CreateUser(ctx, "dbownera2", resellerPassword, acctA2.Username); err != nil {
		t.Fatal(err)
	}
	userA, userA2 := login(t, s, "dbownera", resellerPassword), login(t, s, "dbownera2", resellerPassword)
	ua := acctA.Username
	dbName, dbUser := ua+"_app", ua+"_web"

	// The account's own user (role USER) creates a database and a user; the
	// generated password comes back once.
	d, err := userA.CreateDatabase(ctx, acctA.ID, "app", "")
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != dbName || d.State != "ACTIVE" || d.Engine != "MARIADB" {
		t.Fatalf("createDatabase: %+v", d)
	}
	up, err := userA.CreateDatabaseUser(ctx, acctA.ID, "web", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if up.User.Name != dbUser || up.User.State != "ACTIVE" || up.Password == nil || len(*up.Password) < 20 {
		t.Fatalf("createDatabaseUser: %+v", up)
	}
	password := *up.Password
	secrets := []string{password}
	if _, err := userA.CreateDatabaseUser(ctx, acctA.ID, "web", "", ""); client.CodeOf(err) != "CONFLICT" {
		t.Errorf("second createDatabaseUser of one name: %v", err)
	}
	if err := mariadb.QueryAs(socket, dbUser, password, dbName, "SELECT 1"); err == nil {
		t.Fatal("a user without grants could use the database")
	}

	// Grant, use, revoke.
	u, err := userA.SetDatabasePrivileges(ctx, acctA.ID, dbName, dbUser, []string{"ALL"})
	if err != nil {
		t.Fatal(err)
	}
	if u.State != "ACTIVE" || len(u.Grants) != 1 || u.Grants[0].Database != dbName || !slices.Contains(u.Grants[0].Privileges, "SELECT") {
		t.Fatalf("grant ALL: %+v", u)
	}
	if err := mariadb.QueryAs(socket, dbUser, password, dbName,
		"CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", "INSERT INTO t VALUES (1, 'one'), (2, 'two')", "SELECT COUNT(*) FROM t"); err != nil {
		t.Fatalf("as %s: %v", dbUser, err)
	}
	if _, err := userA.SetDatabasePrivileges(ctx, acctA.ID, dbName, dbUser, nil); err != nil {
		t.Fatal(err)
	}
	if err := mariadb.QueryAs(socket, dbUser, password, dbName, "SELECT * FROM t"); err == nil {
		t.Fatal("revoked user still reads the database")
	}
	if u, err = userA.SetDatabasePrivileges(ctx, acctA.ID, dbName, dbUser, []string{"select", "INSERT"}); err != nil || !slices.Equal(u.Grants[0].Privileges, []string{"INSERT", "SELECT"}) {
		t.Fatalf("grant SELECT,INSERT: %+v %v", u, err)
	}
	if err := mariadb.QueryAs(socket, dbUser, password, dbName, "INSERT INTO t VALUES (3, 'three')"); err != nil {
		t.Fatal(err)
	}
	if err := mariadb.QueryAs(socket, dbUser, password, dbName, "DROP TABLE t"); err == nil {
		t.Fatal("DROP allowed with SELECT,INSERT only")
	}
	if _, err := userA.SetDatabasePrivileges(ctx, acctA.ID, dbName, dbUser, []string{"SELECT; DROP DATABASE x"}); client.CodeOf(err) != "INVALID_INPUT" {
		t.Errorf("injected privilege: %v", err)
	}

	// Sizes and tables from the node's report, which the leader refreshes
	// after each change to the account's databases (the grants above).
	var dbs []client.Database
	testenv.WaitFor(t, 60*time.Second, "the node's report of "+dbName, func() bool {
		dbs, err = userA.Databases(ctx, acctA.ID)
		if err != nil {
			t.Fatal(err)
		}
		got := findDB(dbs, dbName)
		return got != nil && got.Live && got.Tables != nil && *got.Tables == 1 && got.MeasuredAt != nil &&
			got.SizeBytes != nil && *got.SizeBytes > 0 && slices.Contains(got.Users, dbUser)
	})
	t.Logf("%s: %d bytes in %d tables, users %v", dbName, *dbs[0].SizeBytes, *dbs[0].Tables, dbs[0].Users)

	// Passwords: the caller's own (strength checked), the old one stops working.
	if _, err := userA.ChangeDatabaseUserPassword(ctx, acctA.ID, dbUser, "short"); client.CodeOf(err) != "INVALID_INPUT" {
		t.Errorf("weak password: %v", err)
	}
	const chosen = "Quartz-Meadow-7319"
	secrets = append(secrets, chosen)
	if p, err := userA.ChangeDatabaseUserPassword(ctx, acctA.ID, dbUser, chosen); err != nil || p.Password != nil || p.User.State != "ACTIVE" {
		t.Fatalf("changeDatabaseUserPassword: %+v %v", p, err)
	}
	if err := mariadb.QueryAs(socket, dbUser, chosen, dbName, "SELECT 1"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	if err := mariadb.QueryAs(socket, dbUser, password, dbName, "SELECT 1"); err == nil {
		t.Fatal("old password still accepted")
	}

	// optimize
	if o, err := userA.OptimizeDatabase(ctx, acctA.ID, dbName); err != nil || o.Status != "SUCCEEDED" || o.Tables == nil || *o.Tables != 1 {
		t.Fatalf("optimizeDatabase: %+v %v", o, err)
	}

	// The plan allows two databases: the third is refused and nothing is written.
	if _, err := resA.CreateDatabase(ctx, acctA.ID, "second", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := resA.CreateDatabase(ctx, acctA.ID, "third", ""); client.CodeOf(err) != "QUOTA_EXCEEDED" {
		t.Fatalf("third database on a two-database plan: %v", err)
	}
	set, err := s.Store().GetDatabases(ctx, acctA.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := set.Databases[ua+"_third"]; ok || len(set.Databases) != 2 {
		t.Fatalf("refused database was recorded: %v", set.Databases)
	}
	if n := queuedExcept(t, s.Store(), "db-1", "listDatabases"); n != 0 {
		t.Errorf("queue after a refused creation: %d tasks besides status listings", n)
	}
	for _, bad := range []string{"", "Bad", "a-b", "x;drop", "_x", strings.Repeat("a", 60), "ä"} {
		if _, err := userA.CreateDatabase(ctx, acctA.ID, bad, ""); client.CodeOf(err) != "INVALID_INPUT" {
			t.Errorf("database name %q: %v", bad, err)
		}
	}

	// Tenant boundaries: B's database cannot be granted to A's user, through
	// either account; reseller B and the user of A2 cannot touch A.
	bDB := acctB.Username + "_data"
	if _, err := resB.CreateDatabase(ctx, acctB.ID, "data", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := userA.SetDatabasePrivileges(ctx, acctA.ID, bDB, dbUser, []string{"SELECT"}); client.CodeOf(err) != "INVALID_INPUT" {
		t.Errorf("grant on another account's database: %v", err)
	}
	if _, err := s.Admin.SetDatabasePrivileges(ctx, acctB.ID, bDB, dbUser, []string{"SELECT"}); client.CodeOf(err) != "INVALID_INPUT" {
		t.Errorf("grant to another account's user: %v", err)
	}
	if _, err := userA.SetDatabasePrivileges(ctx, acctB.ID, bDB, dbUser, []string{"SELECT"}); client.CodeOf(err) != "NOT_FOUND" {
		t.Errorf("user of A on account B: %v", err)
	}
	for name, c := range map[string]*client.Client{"reseller B": resB, "user of A2": userA2} {
		if _, err := c.Databases(ctx, acctA.ID); client.CodeOf(err) != "NOT_FOUND" {
			t.Errorf("%s lists A's databases: %v", name, err)
		}
		if _, err := c.CreateDatabase(ctx, acctA.ID, "intruder", ""); client.CodeOf(err) != "NOT_FOUND" {
			t.Errorf("%s creates in A: %v", name, err)
		}
		if _, err := c.DeleteDatabase(ctx, acctA.ID, dbName); client.CodeOf(err) != "NOT_FOUND" {
			t.Errorf("%s deletes A's database: %v", name, err)
		}
		if _, err := c.ChangeDatabaseUserPassword(ctx, acctA.ID, dbUser, "Another-Pass-99"); client.CodeOf(err) != "NOT_FOUND" {
			t.Errorf("%s changes A's user's password: %v", name, err)
		}
	}
	if _, err := userA2.DeleteDatabase(ctx, acctA2.ID, dbName); client.CodeOf(err) != "INVALID_INPUT" {
		t.Errorf("A2 names A's database on its own account: %v", err)
	}

	// PostgreSQL where the node runs it (account B has one database left).
	if _, err := os.Stat(prof.DB().Postgres); err == nil {
		testenv.WaitFor(t, 90*time.Second, "postgresql running", func() bool {
			svcs, _, err := s.Admin.Services(ctx, "db-1")
			if err != nil {
				t.Fatal(err)
			}
			return slices.ContainsFunc(svcs, func(sv client.Service) bool { return sv.Name == "postgresql" && sv.State == "RUNNING" })
		})
		pgDB, pgUser := acctB.Username+"_pg", acctB.Username+"_pgu"
		if d, err := resB.CreateDatabase(ctx, acctB.ID, "pg", "postgresql"); err != nil || d.State != "ACTIVE" || d.Engine != "POSTGRESQL" {
			t.Fatalf("createDatabase postgresql: %+v %v", d, err)
		}
		pu, err := resB.CreateDatabaseUser(ctx, acctB.ID, "pgu", "", "postgresql")
		if err != nil || pu.Password == nil || pu.User.State != "ACTIVE" {
			t.Fatalf("createDatabaseUser postgresql: %+v %v", pu, err)
		}
		secrets = append(secrets, *pu.Password)
		if _, err := resB.SetDatabasePrivileges(ctx, acctB.ID, bDB, pgUser, []string{"SELECT"}); client.CodeOf(err) != "INVALID_INPUT" {
			t.Errorf("PostgreSQL user on a MariaDB database: %v", err)
		}
		if u, err := resB.SetDatabasePrivileges(ctx, acctB.ID, pgDB, pgUser, []string{"ALL"}); err != nil || u.State != "ACTIVE" {
			t.Fatalf("grant on postgresql: %+v %v", u, err)
		}
		q := url.Values{"host": {prof.DB().PgSocketDir}, "port": {strconv.Itoa(prof.DB().PgPort)}, "user": {pgUser},
			"password": {*pu.Password}, "dbname": {pgDB}, "sslmode": {"disable"}, "connect_timeout": {"10"}}
		conn, err := pgx.Connect(ctx, "postgres:///?"+q.Encode())
		if err != nil {
			t.Fatalf("connect to postgresql as %s: %v", pgUser, err)
		}
		_, err = conn.Exec(ctx, "CREATE TEMPORARY TABLE t (id int)")
		conn.Close(ctx)
		if err != nil {
			t.Fatalf("as %s: %v", pgUser, err)
		}
		var dbsB []client.Database
		testenv.WaitFor(t, 60*time.Second, "the node's report of "+pgDB, func() bool {
			dbsB, err = resB.Databases(ctx, acctB.ID)
			if err != nil {
				t.Fatal(err)
			}
			got := findDB(dbsB, pgDB)
			return got != nil && got.Live && got.Engine == "POSTGRESQL" && got.SizeBytes != nil && *got.SizeBytes > 0
		})
		t.Logf("%s (postgresql): %d bytes, users %v", pgDB, *findDB(dbsB, pgDB).SizeBytes, findDB(dbsB, pgDB).Users)
	} else {
		t.Logf("PostgreSQL is not installed (%s): its part skipped", prof.DB().Postgres)
	}

	// Delete dumps first, then drops; the user's grant on it goes too.
	del, err := userA.DeleteDatabase(ctx, acctA.ID, dbName)
	if err != nil {
		t.Fatal(err)
	}
	if del.State != "DELETED" || del.Dump == nil || del.DumpBytes == nil || *del.DumpBytes <= 0 {
		t.Fatalf("deleteDatabase: %+v", del)
	}
	if fi, err := os.Stat(*del.Dump); err != nil || fi.Size() != *del.DumpBytes || !strings.HasPrefix(*del.Dump, prof.BackupDir) {
		t.Fatalf("dump %s: %v %v", *del.Dump, fi, err)
	}
	t.Logf("dumped to %s (%d bytes)", *del.Dump, *del.DumpBytes)
	if err := mariadb.QueryAs(socket, dbUser, chosen, dbName, "SELECT 1"); err == nil || !strings.Contains(err.Error(), "denied") && !strings.Contains(err.Error(), "Unknown database") {
		t.Fatalf("dropped database still reachable: %v", err)
	}
	dbs, err = userA.Databases(ctx, acctA.ID)
	if err != nil {
		t.Fatal(err)
	}
	if findDB(dbs, dbName) != nil || findDB(dbs, ua+"_second") == nil {
		t.Fatalf("databases after delete: %+v", dbs)
	}
	testenv.WaitFor(t, 10*time.Second, "grant on the dropped database revoked", func() bool {
		users, err := userA.DatabaseUsers(ctx, acctA.ID)
		if err != nil {
			t.Fatal(err)
		}
		return len(users) == 1 && len(users[0].Grants) == 0 && users[0].State == "ACTIVE"
	})

	// Drop the user.
	if du, err := userA.DeleteDatabaseUser(ctx, acctA.ID, dbUser); err != nil || du.State != "DELETED" {
		t.Fatalf("deleteDatabaseUser: %+v %v", du, err)
	}
	if err := mariadb.QueryAs(socket, dbUser, chosen, "", "SELECT 1"); err == nil {
		t.Fatal("dropped user can still log in")
	}

	// No password was ever written to etcd in the clear.
	resp, err := s.RawEtcd(t).Get(ctx, "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		for _, sec := range secrets {
			if strings.Contains(string(kv.Value), sec) || strings.Contains(string(kv.Key), sec) {
				t.Errorf("etcd key %s holds a database password", kv.Key)
			}
		}
	}

	// Deleting the account drops what it still has on the node (databases
	// dumped first) and forgets the records.
	if _, err := userA.CreateDatabase(ctx, acctA.ID, "last", ""); err != nil {
		t.Fatal(err)
	}
	lastUser, err := userA.CreateDatabaseUser(ctx, acctA.ID, "last", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := userA.SetDatabasePrivileges(ctx, acctA.ID, ua+"_last", ua+"_last", []string{"ALL"}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "last user can log in", func() bool {
		return mariadb.QueryAs(socket, ua+"_last", *lastUser.Password, ua+"_last", "SELECT 1") == nil
	})
	if _, err := s.Admin.AccountAction(ctx, "deleteAccount", acctA.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, "account deleted", func() bool {
		a, err := s.Admin.Account(ctx, acctA.ID)
		return err == nil && a == nil
	})
	if err := mariadb.QueryAs(socket, ua+"_last", *lastUser.Password, "", "SELECT 1"); err == nil {
		t.Error("a deleted account's database user can still log in")
	}
	if dumps, _ := filepath.Glob(filepath.Join(prof.BackupDir, ua, "db", ua+"_last-*")); len(dumps) != 1 {
		t.Errorf("dump of the deleted account's database: %v", dumps)
	}
	for _, pfx := range []string{"/npanel/databases/" + acctA.ID + "/", "/npanel/dbusers/" + acctA.ID + "/", "/npanel/dbseq/" + acctA.ID} {
		if r, err := s.RawEtcd(t).Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || r.Count != 0 {
			t.Errorf("%s after account deletion: %v %v", pfx, r.Count, err)
		}
	}
}

// The plan's database limit holds under concurrent creations on the store's
// per-account compare-and-swap, and a node that does not answer leaves
// databases() with the recorded state, flagged as not live.
func TestDatabaseQuotaRaceAndOfflineNode(t *testing.T) {
	s := testenv.StartServer(t)
	s.FakeNode(t, "fake-db", nil, 10, 10_000)
	ctx := testenv.Context(t)
	mustPlan(t, s.Admin, "basic", 100)
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "dbquota", Domain: "dbquota.example.com", Plan: "basic"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "account placed", func() bool {
		a, err := s.Admin.Account(ctx, acct.ID)
		return err == nil && a != nil && a.Node != nil
	})

	const limit, tries = 3, 12
	st := s.Store()
	errs := make(chan error, tries)
	for i := range tries {
		go func() {
			name := fmt.Sprintf("dbquota_d%d", i)
			err := st.ChangeDatabases(ctx, acct.ID, "test", func(set *store.DatabaseSet) (*store.DatabaseChange, error) {
				if len(set.Databases)+1 > limit {
					return nil, store.ErrQuotaExceeded
				}
				// Generation 0: a record no controller acts on, so the
				// silent node's queue below holds no task for it.
				return &store.DatabaseChange{Databases: []*store.Database{{Name: name, Owner: "dbquota", Engine: "mariadb"}}}, nil
			}, store.NewAuditEvent("test", "", "createDatabase", name, "ok"))
			errs <- err
		}()
	}
	ok := 0
	for range tries {
		switch err := <-errs; {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrQuotaExceeded):
			t.Fatal(err)
		}
	}
	set, err := st.GetDatabases(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ok != limit || len(set.Databases) != limit {
		t.Fatalf("%d creations succeeded, %d recorded; limit %d", ok, len(set.Databases), limit)
	}

	// The fake node never answers: recorded state, no size, live false,
	// and the read itself queues nothing.
	queued := queuedExcept(t, st, "fake-db", "listDatabases") // the account's own task
	start := time.Now()
	dbs, err := s.Admin.Databases(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(dbs) != limit || dbs[0].Live || dbs[0].SizeBytes != nil || dbs[0].State != "PENDING" {
		t.Fatalf("databases from an offline node: %+v", dbs)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("databases() took %s with the node silent", took)
	}
	if q := queuedExcept(t, st, "fake-db", "listDatabases"); q != queued {
		t.Errorf("the read queued %d tasks", q-queued)
	}
	// The leader's status refresh has one listing in flight for the
	// account at most (one engine), however many changes asked for one.
	if n := queuedExcept(t, st, "fake-db", ""); n-queued > 1 {
		t.Errorf("%d status listings queued for one account", n-queued)
	}
	// A password cannot be sealed to a node that never connected.
	if _, err := s.Admin.CreateDatabaseUser(ctx, acct.ID, "u1", "", ""); client.CodeOf(err) != "CONFLICT" {
		t.Errorf("createDatabaseUser on a node without a key: %v", err)
	}
	if _, err := s.Admin.CreateDatabase(ctx, acct.ID, "pg", "postgresql"); client.CodeOf(err) != "INVALID_INPUT" {
		t.Errorf("PostgreSQL on a node that does not run it: %v", err)
	}
}

// queuedExcept counts node's queued tasks whose action is not except.
func queuedExcept(t *testing.T, st *store.Store, node, except string) int {
	t.Helper()
	tasks, _, err := st.PendingTasks(context.Background(), node)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, task := range tasks {
		if except == "" || !strings.EqualFold(actionName(task), except) {
			n++
		}
	}
	return n
}

func actionName(t *agentpb.Task) string {
	m := t.ProtoReflect()
	if fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("action")); fd != nil {
		return fd.JSONName()
	}
	return ""
}

// The database controller on a node that answers only when the test says
// so: a mutation writes the spec and, with wait, answers PENDING when the
// node is silent; the controller writes the node's task and records its
// answer in the status, which the next read shows; a drop's tombstone
// carries the dump to the waiting deletion.
func TestDatabaseControllerAndWait(t *testing.T) {
	s := testenv.StartServer(t)
	s.FakeNode(t, "fake-dbw", nil, 10, 10_000)
	ctx := testenv.Context(t)
	mustPlan(t, s.Admin, "dbwait", 5)
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "dbwait", Domain: "dbwait.example.com", Plan: "dbwait"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "account placed", func() bool {
		a, err := s.Admin.Account(ctx, acct.ID)
		return err == nil && a != nil && a.Node != nil
	})
	st := s.Store()

	// wait: PT0S answers at once, PENDING; the controller queues the ensure.
	var created struct{ CreateDatabase client.Database }
	start := time.Now()
	if err := s.Admin.Do(ctx, `mutation($a:ID!){createDatabase(account:$a,name:"shop",wait:"PT0S"){name state}}`, map[string]any{"a": acct.ID}, &created); err != nil {
		t.Fatal(err)
	}
	if created.CreateDatabase.State != "PENDING" || time.Since(start) > 5*time.Second {
		t.Fatalf("createDatabase(wait: PT0S) after %s: %+v", time.Since(start), created.CreateDatabase)
	}
	ensure := nodeTask(t, st, "fake-dbw", "ensureDatabase")
	if ensure.GetGeneration() != 1 || ensure.GetEnsureDatabase().GetName() != "dbwait_shop" {
		t.Fatalf("ensure task: %v", ensure)
	}
	if err := s.Admin.Do(ctx, `mutation($a:ID!){optimizeDatabase(account:$a,name:"dbwait_shop"){status}}`, map[string]any{"a": acct.ID}, nil); client.CodeOf(err) != "CONFLICT" {
		t.Fatalf("optimizeDatabase of a PENDING database: %v", err)
	}

	// The node answers: the controller records ACTIVE.
	answer(t, st, "fake-dbw", ensure, &agentpb.DatabaseResult{Name: "dbwait_shop", Engine: "mariadb"})
	testenv.WaitFor(t, 10*time.Second, "database ACTIVE", func() bool {
		dbs, err := s.Admin.Databases(ctx, acct.ID)
		return err == nil && len(dbs) == 1 && dbs[0].State == "ACTIVE"
	})

	// A wait bounds the mutation on a silent node; the answer comes later.
	var opt struct{ OptimizeDatabase struct{ Status string } }
	start = time.Now()
	if err := s.Admin.Do(ctx, `mutation($a:ID!){optimizeDatabase(account:$a,name:"dbwait_shop",wait:"PT1S"){status}}`, map[string]any{"a": acct.ID}, &opt); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); opt.OptimizeDatabase.Status != "PENDING" || took < time.Second || took > 5*time.Second {
		t.Fatalf("optimizeDatabase(wait: PT1S) after %s: %+v", took, opt)
	}
	answer(t, st, "fake-dbw", nodeTask(t, st, "fake-dbw", "optimizeDatabase"), &agentpb.DatabaseResult{Name: "dbwait_shop", Tables: 3})

	// A deletion waits on the status; the node answers while it waits.
	type deleted struct{ DeleteDatabase client.DeletedDatabase }
	done := make(chan deleted, 1)
	go func() {
		var out deleted
		if err := s.Admin.Do(ctx, `mutation($a:ID!){deleteDatabase(account:$a,name:"dbwait_shop",wait:"PT20S"){name state reason dump dumpBytes}}`, map[string]any{"a": acct.ID}, &out); err != nil {
			t.Error(err)
		}
		done <- out
	}()
	drop := nodeTask(t, st, "fake-dbw", "dropDatabase")
	answer(t, st, "fake-dbw", drop, &agentpb.DatabaseResult{Name: "dbwait_shop", Dump: "/backups/dbwait_shop.sql.gz", DumpBytes: 804})
	select {
	case out := <-done:
		d := out.DeleteDatabase
		if d.State != "DELETED" || d.Dump == nil || *d.Dump != "/backups/dbwait_shop.sql.gz" || d.DumpBytes == nil || *d.DumpBytes != 804 {
			t.Fatalf("deleteDatabase: %+v", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("deleteDatabase did not answer")
	}
	if dbs, err := s.Admin.Databases(ctx, acct.ID); err != nil || len(dbs) != 0 {
		t.Fatalf("databases after the drop: %+v %v", dbs, err)
	}
}

// nodeTask waits for the one queued task of action on node and returns it.
func nodeTask(t *testing.T, st *store.Store, node, action string) *agentpb.Task {
	t.Helper()
	var found *agentpb.Task
	testenv.WaitFor(t, 10*time.Second, action+" queued", func() bool {
		tasks, _, err := st.PendingTasks(context.Background(), node)
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			if actionName(task) == action {
				found = task
				return true
			}
		}
		return false
	})
	return found
}

// answer completes task on node with a database result, as its agent would.
func answer(t *testing.T, st *store.Store, node string, task *agentpb.Task, res *agentpb.DatabaseResult) {
	t.Helper()
	r := &agentpb.TaskResult{TaskId: task.GetId(), Status: agentpb.TaskStatus_TASK_STATUS_SUCCEEDED, Generation: task.GetGeneration(),
		FinishedUnixNano: time.Now().UnixNano(), Result: &agentpb.TaskResult_Database{Database: res}}
	if ok, err := st.CompleteTask(context.Background(), node, r, store.NewAuditEvent("agent", "", "", "", "ok")); !ok || err != nil {
		t.Fatalf("complete %s: %v %v", task.GetId(), ok, err)
	}
}
