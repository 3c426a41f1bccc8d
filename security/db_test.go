package security

import (
	"context"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// dbState is what a refused database change must leave as it was: a1's and
// b1's database users and grants, as recorded.
func (c *cluster) dbState(t *testing.T) [][]client.DatabaseUser {
	t.Helper()
	var out [][]client.DatabaseUser
	for _, tn := range []*tenant{c.a1, c.b1} {
		us, err := c.admin.DatabaseUsers(context.Background(), tn.ID)
		if err != nil {
			t.Fatal(err)
		}
		for i := range us {
			us[i].State, us[i].Reason = "", nil
		}
		out = append(out, us)
	}
	return out
}

// dbRefused is a vector whose call must fail with one of codes, leave the
// recorded users and grants unchanged, and leave b1's data reachable by
// b1 alone.
func dbRefused(name, attempt string, codes []string, call func(c *cluster) error) vector {
	return vector{name: name, attempt: attempt, refusal: strings.Join(codes, " or ") + "; users and grants unchanged; b1's data intact",
		run: func(t *testing.T, c *cluster) {
			unchanged(t, "database users and grants", func() [][]client.DatabaseUser { return c.dbState(t) },
				func() { wantCode(t, name, call(c), codes...) })
			got, err := c.mysqlQuery(c.b1.dbUser, dbPassword, c.b1.db, "SELECT v FROM secrets")
			if err != nil || !slices.Equal(got, []string{"b1-secret"}) {
				t.Fatalf("b1's data after the refusal: %v %v", got, err)
			}
		}}
}

// sqlDenied is a vector in which a1's database user runs stmt on node-a's
// MariaDB: it must fail (or, for a query, return nothing of b1 or of the
// server's own tables).
func sqlDenied(name, stmt string) vector {
	return vector{name: "mariadb " + name, attempt: "a1's database user runs: " + truncate(stmt),
		refusal: "access denied by MariaDB's grants",
		run: func(t *testing.T, c *cluster) {
			s := strings.ReplaceAll(stmt, "B_DB", c.b1.db)
			s = strings.ReplaceAll(s, "B_USER", c.b1.dbUser)
			s = strings.ReplaceAll(s, "A_DB", c.a1.db)
			rows, err := c.mysqlQuery(c.a1.dbUser, dbPassword, c.a1.db, s)
			if err == nil {
				t.Fatalf("%s: succeeded with %v", s, rows)
			}
		}}
}

// sqlEmpty is a vector in which a1's database user runs a query that must
// not reveal anything of b1 (or the server's secrets).
func sqlEmpty(name, query string, leaks ...string) vector {
	return vector{name: "mariadb " + name, attempt: "a1's database user runs: " + query,
		refusal: "no row names b1's database or user",
		run: func(t *testing.T, c *cluster) {
			rows, err := c.mysqlQuery(c.a1.dbUser, dbPassword, c.a1.db, query)
			if err != nil {
				return // refused outright is fine too
			}
			for _, r := range rows {
				for _, l := range append(leaks, c.b1.db, c.b1.dbUser, "b1-secret", "root:") {
					if strings.Contains(r, l) {
						t.Fatalf("%s: row %q leaks %q", query, r, l)
					}
				}
			}
		}}
}

func dbVectors() []vector {
	ctx := context.Background()
	inv := []string{"INVALID_INPUT"}
	var vs []vector

	// --- identifiers ---------------------------------------------------------------
	idents := []struct{ name, s string }{
		{"backtick", "x`; DROP DATABASE mysql; -- "},
		{"single quote", "x'"},
		{"double quote", `x"`},
		{"percent wildcard", "%"},
		{"underscore-percent wildcard", "_%"},
		{"escaped wildcard", `x\_%`},
		{"semicolon", "x;y"},
		{"space", "x y"},
		{"NUL", "x\x00y"},
		{"newline", "x\ny"},
		{"slash", "x/y"},
		{"traversal", "../mysql"},
		{"dot", "x.y"},
		{"at sign", "x@localhost"},
		{"non-ASCII", "xé"},
		{"overlong", strings.Repeat("x", 200)},
		{"empty", ""},
	}
	for _, id := range idents {
		vs = append(vs,
			dbRefused("database name "+id.name, "createDatabase named "+truncate(id.s), inv, func(c *cluster) error {
				_, err := c.a1.owner.CreateDatabase(ctx, c.a1.ID, id.s, "")
				return err
			}),
			dbRefused("database user name "+id.name, "createDatabaseUser named "+truncate(id.s), inv, func(c *cluster) error {
				_, err := c.a1.owner.CreateDatabaseUser(ctx, c.a1.ID, id.s, "", "")
				return err
			}),
			dbRefused("grant on database "+id.name, "setDatabasePrivileges on database "+truncate(prefixed(id.s)), []string{"INVALID_INPUT", "NOT_FOUND"}, func(c *cluster) error {
				_, err := c.a1.owner.SetDatabasePrivileges(ctx, c.a1.ID, c.a1.Username+"_"+id.s, c.a1.dbUser, []string{"ALL"})
				return err
			}),
		)
	}

	// --- other accounts' and the system's databases and users -----------------
	systemDBs := []string{"mysql", "information_schema", "performance_schema", "sys", "postgres", "template0", "template1"}
	for _, db := range systemDBs {
		vs = append(vs,
			dbRefused("grant on system database "+db, "a1's owner grants its user ALL on "+db, []string{"INVALID_INPUT", "NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
				_, err := c.a1.owner.SetDatabasePrivileges(ctx, c.a1.ID, db, c.a1.dbUser, []string{"ALL"})
				return err
			}),
			dbRefused("delete system database "+db, "a1's owner calls deleteDatabase on "+db, []string{"INVALID_INPUT", "NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
				_, err := c.a1.owner.DeleteDatabase(ctx, c.a1.ID, db)
				return err
			}),
		)
	}
	for _, u := range []string{"root", "mysql", "mariadb.sys", "postgres", "npanel"} {
		vs = append(vs, dbRefused("change password of system user "+u, "a1's owner changes the password of "+u, []string{"INVALID_INPUT", "NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.ChangeDatabaseUserPassword(ctx, c.a1.ID, u, "Owned-password-123")
			return err
		}))
	}
	vs = append(vs,
		dbRefused("grant own user on other account's database", "a1's owner grants a1's user ALL on b1's database", []string{"INVALID_INPUT", "NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.SetDatabasePrivileges(ctx, c.a1.ID, c.b1.db, c.a1.dbUser, []string{"ALL"})
			return err
		}),
		dbRefused("grant other account's user on own database", "a1's owner grants b1's user on a1's database", []string{"INVALID_INPUT", "NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.SetDatabasePrivileges(ctx, c.a1.ID, c.a1.db, c.b1.dbUser, []string{"ALL"})
			return err
		}),
		dbRefused("grant through other account's id", "a1's owner calls setDatabasePrivileges with b1's account id", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.SetDatabasePrivileges(ctx, c.b1.ID, c.b1.db, c.b1.dbUser, []string{})
			return err
		}),
		dbRefused("revoke other account's grant", "reseller A revokes b1's user's grant through b1's account", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.resA.SetDatabasePrivileges(ctx, c.b1.ID, c.b1.db, c.b1.dbUser, []string{})
			return err
		}),
		dbRefused("delete other account's database", "a1's owner deletes b1's database through a1's account", []string{"INVALID_INPUT", "NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.DeleteDatabase(ctx, c.a1.ID, c.b1.db)
			return err
		}),
		dbRefused("delete database through other account's id", "a1's owner deletes b1's database by b1's account id", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.DeleteDatabase(ctx, c.b1.ID, c.b1.db)
			return err
		}),
		dbRefused("delete other account's user", "a1's owner deletes b1's database user", []string{"INVALID_INPUT", "NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.DeleteDatabaseUser(ctx, c.a1.ID, c.b1.dbUser)
			return err
		}),
		dbRefused("change other account's user's password", "a1's owner sets b1's database user's password", []string{"INVALID_INPUT", "NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.ChangeDatabaseUserPassword(ctx, c.a1.ID, c.b1.dbUser, "Owned-password-123")
			return err
		}),
		dbRefused("change password through other account's id", "reseller A sets b1's user's password by b1's account id", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.resA.ChangeDatabaseUserPassword(ctx, c.b1.ID, c.b1.dbUser, "Owned-password-123")
			return err
		}),
		dbRefused("optimize other account's database", "a1's owner optimizes b1's database", []string{"INVALID_INPUT", "NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.OptimizeDatabase(ctx, c.a1.ID, c.b1.db)
			return err
		}),
		dbRefused("create database on other account", "a1's owner creates a database on b1's account", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.CreateDatabase(ctx, c.b1.ID, "evil", "")
			return err
		}),
		dbRefused("create database user on other account", "reseller A creates a database user on b1's account", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.resA.CreateDatabaseUser(ctx, c.b1.ID, "evil", "", "")
			return err
		}),
		dbRefused("privilege SUPER", "setDatabasePrivileges [SUPER]", inv, privs("SUPER")),
		dbRefused("privilege FILE", "setDatabasePrivileges [FILE]", inv, privs("FILE")),
		dbRefused("privilege PROCESS", "setDatabasePrivileges [PROCESS]", inv, privs("PROCESS")),
		dbRefused("privilege GRANT OPTION", "setDatabasePrivileges [GRANT OPTION]", inv, privs("GRANT OPTION")),
		dbRefused("privilege CREATE USER", "setDatabasePrivileges [CREATE USER]", inv, privs("CREATE USER")),
		dbRefused("privilege SHUTDOWN", "setDatabasePrivileges [SHUTDOWN]", inv, privs("SHUTDOWN")),
		dbRefused("privilege injection", "setDatabasePrivileges [\"SELECT ON *.* TO x; --\"]", inv, privs("SELECT ON *.* TO x; --")),
		dbRefused("privilege ALL PRIVILEGES WITH GRANT", "setDatabasePrivileges [\"ALL WITH GRANT OPTION\"]", inv, privs("ALL WITH GRANT OPTION")),
		dbRefused("password with NUL", "createDatabaseUser with a password holding a NUL byte", inv, func(c *cluster) error {
			_, err := c.a1.owner.CreateDatabaseUser(ctx, c.a1.ID, "nul", "abcdefgh\x00ijklmnop", "")
			return err
		}),
		dbRefused("password with newline", "changeDatabaseUserPassword with a newline", inv, func(c *cluster) error {
			_, err := c.a1.owner.ChangeDatabaseUserPassword(ctx, c.a1.ID, c.a1.dbUser, "abcdefgh\nijklmnop")
			return err
		}),
		dbRefused("password too short", "changeDatabaseUserPassword with \"x\"", inv, func(c *cluster) error {
			_, err := c.a1.owner.ChangeDatabaseUserPassword(ctx, c.a1.ID, c.a1.dbUser, "x")
			return err
		}),
		dbRefused("unknown engine", "createDatabase with engine ORACLE", []string{"GRAPHQL_VALIDATION_FAILED", "INVALID_INPUT"}, func(c *cluster) error {
			return c.a1.owner.Do(ctx, `mutation($a:ID!){createDatabase(account:$a,name:"ora",engine:ORACLE){name}}`, map[string]any{"a": c.a1.ID}, nil)
		}),
		vector{name: "password with quotes is stored verbatim", attempt: "a database password holding ' \" ; -- (set by the fixture) used to break out of the SQL that sets it",
			refusal: "the exact password logs in; a prefix of it does not", run: func(t *testing.T, c *cluster) {
				if err := c.mysql(c.a1.dbUser, dbPassword, c.a1.db); err != nil {
					t.Fatalf("exact password: %v", err)
				}
				if err := c.mysql(c.a1.dbUser, "Db-p4ss", c.a1.db); err == nil {
					t.Fatal("a prefix of the password logs in")
				}
			}},
		vector{name: "mariadb default database of other account", attempt: "a1's user connects with b1's database as default",
			refusal: "access denied", run: func(t *testing.T, c *cluster) {
				if err := c.mysql(c.a1.dbUser, dbPassword, c.b1.db); err == nil {
					t.Fatal("connected")
				}
			}},
	)

	// --- the real MariaDB, as a1's database user --------------------------------
	vs = append(vs,
		sqlDenied("select other database", "SELECT v FROM B_DB.secrets"),
		sqlDenied("use other database", "USE B_DB"),
		sqlDenied("insert into other database", "INSERT INTO B_DB.secrets VALUES ('owned')"),
		sqlDenied("drop other database", "DROP DATABASE B_DB"),
		sqlDenied("create database with other prefix", "CREATE DATABASE B_DB_evil"),
		sqlDenied("create database of its own", "CREATE DATABASE A_DB_extra"),
		sqlDenied("grant itself other database", "GRANT ALL ON B_DB.* TO CURRENT_USER()"),
		sqlDenied("create user", "CREATE USER 'evil'@'%' IDENTIFIED BY 'x'"),
		sqlDenied("set other user's password", "SET PASSWORD FOR 'B_USER'@'localhost' = PASSWORD('owned')"),
		sqlDenied("show other user's grants", "SHOW GRANTS FOR 'B_USER'@'localhost'"),
		sqlDenied("read mysql.user", "SELECT user FROM mysql.user"),
		sqlDenied("read mysql.global_priv", "SELECT user FROM mysql.global_priv"),
		sqlDenied("write outfile", "SELECT 'x' INTO OUTFILE '/tmp/npanel-sec-outfile'"),
		sqlDenied("set global", "SET GLOBAL general_log_file = '/tmp/npanel-sec-log'"),
		sqlDenied("shutdown", "SHUTDOWN"),
		sqlDenied("install plugin", "INSTALL SONAME 'ha_blackhole'"),
		sqlDenied("create function from library", "CREATE FUNCTION sys_exec RETURNS INT SONAME 'lib_mysqludf_sys.so'"),
		sqlDenied("flush privileges", "FLUSH PRIVILEGES"),
		sqlDenied("kill a connection", "KILL 1"),
		sqlEmpty("load_file", "SELECT LOAD_FILE('/etc/passwd')"),
		sqlEmpty("show databases", "SHOW DATABASES"),
		sqlEmpty("schemata", "SELECT schema_name FROM information_schema.schemata"),
		sqlEmpty("other database's tables", "SELECT table_name FROM information_schema.tables WHERE table_schema NOT IN ('information_schema')"),
		sqlEmpty("processlist", "SELECT user FROM information_schema.processlist"),
		sqlEmpty("user privileges", "SELECT grantee FROM information_schema.user_privileges"),
		sqlEmpty("schema privileges", "SELECT grantee FROM information_schema.schema_privileges"),
	)

	// --- PostgreSQL --------------------------------------------------------------------
	vs = append(vs,
		vector{name: "postgres other account's database", attempt: "a1's PostgreSQL user connects to b1's PostgreSQL database and reads it",
			refusal: "connection refused by CONNECT privilege, or no access to the table", run: func(t *testing.T, c *cluster) {
				a, b := c.pgTenants(t)
				conn, err := c.pgConnect(a.user, dbPassword, b.db)
				if err != nil {
					return
				}
				defer conn.Close(context.Background())
				var v string
				if err := conn.QueryRow(context.Background(), "SELECT v FROM secrets").Scan(&v); err == nil {
					t.Fatalf("read b1's PostgreSQL data: %q", v)
				}
			}},
		vector{name: "postgres create database", attempt: "a1's PostgreSQL user runs CREATE DATABASE",
			refusal: "permission denied", run: func(t *testing.T, c *cluster) {
				a, _ := c.pgTenants(t)
				if err := c.pgExec(a.user, a.db, "CREATE DATABASE npanel_sec_evil"); err == nil {
					t.Fatal("created a database")
				}
			}},
		vector{name: "postgres create role", attempt: "a1's PostgreSQL user runs CREATE ROLE ... SUPERUSER",
			refusal: "permission denied", run: func(t *testing.T, c *cluster) {
				a, _ := c.pgTenants(t)
				if err := c.pgExec(a.user, a.db, "CREATE ROLE npanel_sec_evil SUPERUSER LOGIN"); err == nil {
					t.Fatal("created a role")
				}
			}},
		vector{name: "postgres read pg_authid", attempt: "a1's PostgreSQL user reads password hashes from pg_authid",
			refusal: "permission denied", run: func(t *testing.T, c *cluster) {
				a, _ := c.pgTenants(t)
				if err := c.pgExec(a.user, a.db, "SELECT rolpassword FROM pg_authid"); err == nil {
					t.Fatal("read pg_authid")
				}
			}},
		vector{name: "postgres copy from program", attempt: "a1's PostgreSQL user runs COPY ... FROM PROGRAM 'id'",
			refusal: "permission denied", run: func(t *testing.T, c *cluster) {
				a, _ := c.pgTenants(t)
				if err := c.pgExec(a.user, a.db, "CREATE TEMP TABLE x(v text); COPY x FROM PROGRAM 'id'"); err == nil {
					t.Fatal("ran a program")
				}
			}},
		vector{name: "postgres read server file", attempt: "a1's PostgreSQL user runs pg_read_file('/etc/passwd')",
			refusal: "permission denied", run: func(t *testing.T, c *cluster) {
				a, _ := c.pgTenants(t)
				if err := c.pgExec(a.user, a.db, "SELECT pg_read_file('/etc/passwd')"); err == nil {
					t.Fatal("read a server file")
				}
			}},
		vector{name: "postgres alter other role", attempt: "a1's PostgreSQL user changes b1's role's password",
			refusal: "permission denied", run: func(t *testing.T, c *cluster) {
				a, b := c.pgTenants(t)
				if err := c.pgExec(a.user, a.db, "ALTER ROLE "+pgx.Identifier{b.user}.Sanitize()+" PASSWORD 'owned-password'"); err == nil {
					t.Fatal("altered b1's role")
				}
			}},
	)

	vs = append(vs, vector{name: "databases beyond the plan", attempt: "a1's owner creates databases until its plan's 3 are used, then one more",
		refusal: "QUOTA_EXCEEDED; a1 never holds more than 3", run: func(t *testing.T, c *cluster) {
			for i := 1; ; i++ {
				_, err := c.a1.owner.CreateDatabase(ctx, c.a1.ID, "quota"+strconv.Itoa(i), "")
				if err != nil {
					wantCode(t, "createDatabase", err, "QUOTA_EXCEEDED")
					break
				}
				if i > 3 {
					t.Fatalf("%d more databases accepted on a 3-database plan", i)
				}
			}
			dbs, err := c.admin.Databases(ctx, c.a1.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(dbs) > 3 {
				t.Fatalf("a1 holds %d databases: %+v", len(dbs), dbs)
			}
		}})

	// Regression vectors of issue 23's findings are added here after their
	// fixes merge (they fail on the code this suite was written against):
	//   2  many aliases of databases(account:) writing a task per read
	//   6  MariaDB/PostgreSQL data readable by other users
	return vs
}

func prefixed(s string) string { return "<a1>_" + s }

func privs(p ...string) func(c *cluster) error {
	return func(c *cluster) error {
		_, err := c.a1.owner.SetDatabasePrivileges(context.Background(), c.a1.ID, c.a1.db, c.a1.dbUser, p)
		return err
	}
}

// pgTenant is a PostgreSQL database and a user granted ALL on it.
type pgTenant struct{ db, user string }

// pgTenants creates (once) a PostgreSQL database and user for a1 and for
// b1, b1's holding a table, and returns them. It skips (fails in CI) when
// node-a runs no PostgreSQL.
func (c *cluster) pgTenants(t *testing.T) (pgTenant, pgTenant) {
	t.Helper()
	testenv.RequireDaemon(t, c.prof.DB().Postgres)
	c.pgOnce.Do(func() { c.pgErr = c.setupPostgres() })
	if c.pgErr != nil {
		t.Fatalf("PostgreSQL fixture: %v", c.pgErr)
	}
	return c.pgA, c.pgB
}

func (c *cluster) setupPostgres() error {
	ctx := context.Background()
	for _, x := range []struct {
		tn *tenant
		pg *pgTenant
	}{{c.a1, &c.pgA}, {c.b1, &c.pgB}} {
		if _, err := x.tn.owner.CreateDatabase(ctx, x.tn.ID, "pg", "postgresql"); err != nil {
			return err
		}
		if _, err := x.tn.owner.CreateDatabaseUser(ctx, x.tn.ID, "pgu", dbPassword, "postgresql"); err != nil {
			return err
		}
		x.pg.db, x.pg.user = x.tn.Username+"_pg", x.tn.Username+"_pgu"
		if _, err := x.tn.owner.SetDatabasePrivileges(ctx, x.tn.ID, x.pg.db, x.pg.user, []string{"ALL"}); err != nil {
			return err
		}
	}
	return c.pgExec(c.pgB.user, c.pgB.db, "CREATE TABLE secrets (v text); INSERT INTO secrets VALUES ('b1-secret')")
}

func (c *cluster) pgConnect(user, password, db string) (*pgx.Conn, error) {
	q := url.Values{"host": {c.prof.DB().PgSocketDir}, "port": {strconv.Itoa(c.prof.DB().PgPort)}, "user": {user},
		"password": {password}, "dbname": {db}, "connect_timeout": {"5"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, "postgres:///?"+q.Encode())
}

func (c *cluster) pgExec(user, db, sql string) error {
	conn, err := c.pgConnect(user, dbPassword, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = conn.Exec(ctx, sql)
	return err
}

func dbFindings() []vector { return nil }
