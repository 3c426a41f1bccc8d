package cpanel_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/npanel/npanel/internal/cpaneltest"
	pgtest "github.com/npanel/npanel/internal/testenv/postgres"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/protos/agentpb"
)

// pgFixture is a fixture with a private PostgreSQL (and no MariaDB).
func pgFixture(t testing.TB) (*fixture, *pgtest.Server) {
	t.Helper()
	pgtest.Require(t)
	dbm := db.NewModule()
	f := newFixture(t, dbm)
	d := f.p.DB()
	for _, dir := range []string{d.PgDataDir, d.PgSocketDir} {
		if err := mkdirPublic(f.p.Prefix, dir); err != nil {
			t.Fatal(err)
		}
	}
	srv := pgtest.StartWith(t, pgtest.Layout{DataDir: d.PgDataDir, SocketDir: d.PgSocketDir})
	if err := os.WriteFile(filepath.Join(f.env.DataDir, db.PostgresAdminFile), []byte(srv.Pgpass()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dbm.Close)
	return f, srv
}

// The archive's PostgreSQL dumps — pg_dump's tar format as pkgacct writes
// it, and a plain one with the old server's owners and grants — are
// restored into the account's databases; a MariaDB dump of the same name
// is not confused with them.
func TestImportPostgres(t *testing.T) {
	f, srv := pgFixture(t)
	o := cpaneltest.Default(cpaneltest.LayoutBackup)
	o.Databases = nil
	o.PgDatabases = []cpaneltest.PgDatabase{
		{Name: "cpuser_shop", User: "cpuser_shopper", Password: "pg-secret-1"},
		{Name: "cpuser_blog", User: "cpuser_blogger", Password: "pg-secret-2", Plain: true, Rows: 5},
	}
	p := cpaneltest.Build(t, f.p.Cpanel().ImportDir, o)
	shop, blog := f.user+"_shop", f.user+"_blog"
	ctx := context.Background()
	// As the controller leaves them: the databases, a user holding both.
	user := f.user + "_shopper"
	admin := srv.MustConnect(t, "postgres")
	for _, q := range []string{
		"CREATE DATABASE " + shop, "CREATE DATABASE " + blog,
		"REVOKE ALL ON DATABASE " + shop + " FROM PUBLIC", "REVOKE ALL ON DATABASE " + blog + " FROM PUBLIC",
		"CREATE ROLE " + user + " LOGIN PASSWORD 'Pg-pass-123'",
		"GRANT ALL ON DATABASE " + shop + " TO " + user, "GRANT ALL ON DATABASE " + blog + " TO " + user,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		for _, q := range []string{"DROP DATABASE IF EXISTS " + shop, "DROP DATABASE IF EXISTS " + blog, "DROP ROLE IF EXISTS " + user} {
			_, _ = admin.Exec(context.Background(), q)
		}
		_ = admin.Close(context.Background())
	})
	res, err := f.importArchive(t, &agentpb.ImportCpanelBackupAction{Path: filepath.Base(p), Username: f.user,
		Databases: map[string]string{"cpuser_shop": shop, "cpuser_blog": blog}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failed) > 0 {
		t.Fatalf("failed: %v", res.Failed)
	}
	for name, want := range map[string]int{shop: cpaneltest.PgTarRows, blog: 5} {
		c := srv.MustConnect(t, name)
		var n int
		if err := c.QueryRow(ctx, "SELECT COUNT(*) FROM items_v").Scan(&n); err != nil || n != want {
			t.Errorf("%s: %d rows, %v", name, n, err)
		}
		var owner string
		if err := c.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'items'").Scan(&owner); err != nil || owner != user {
			t.Errorf("%s: items owned by %q %v", name, owner, err)
		}
		_ = c.Close(ctx)
	}
	// The user, with its password, uses what the dump made.
	c, err := pgx.Connect(ctx, srv.ConnString(user, "Pg-pass-123", shop))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	if err := c.QueryRow(ctx, "SELECT public.item_count()").Scan(&n); err != nil || n != cpaneltest.PgTarRows {
		t.Errorf("item_count() %d %v", n, err)
	}
	if err := c.QueryRow(ctx, "SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE 'npimport\\_%'").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d import roles left, %v", n, err)
	}
}
