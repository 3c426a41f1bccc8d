package db

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/npanel/npanel/validate"
)

// superuserOwned counts the objects of the connected database a superuser
// owns, outside the catalogs.
func superuserOwned(t *testing.T, ctx context.Context, c *pgx.Conn) int {
	t.Helper()
	var n int
	err := c.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_class o JOIN pg_namespace s ON s.oid = o.relnamespace JOIN pg_roles r ON r.oid = o.relowner
		 WHERE r.rolsuper AND s.nspname NOT IN ('pg_catalog', 'information_schema') AND s.nspname NOT LIKE 'pg\_toast%')
		+ (SELECT count(*) FROM pg_proc o JOIN pg_namespace s ON s.oid = o.pronamespace JOIN pg_roles r ON r.oid = o.proowner
		 WHERE r.rolsuper AND s.nspname NOT IN ('pg_catalog', 'information_schema'))
		+ (SELECT count(*) FROM pg_type o JOIN pg_namespace s ON s.oid = o.typnamespace JOIN pg_roles r ON r.oid = o.typowner
		 WHERE r.rolsuper AND s.nspname NOT IN ('pg_catalog', 'information_schema') AND s.nspname NOT LIKE 'pg\_toast%')`).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runsAs calls the SECURITY DEFINER function fn as conn's user and
// checks it does not run as a superuser but as want.
func runsAs(t *testing.T, ctx context.Context, c *pgx.Conn, fn, want string) {
	t.Helper()
	var who string
	var super bool
	if err := c.QueryRow(ctx, "SELECT u, (SELECT rolsuper FROM pg_roles WHERE rolname = u) FROM "+fn+"() u").Scan(&who, &super); err != nil {
		t.Fatalf("%s(): %v", fn, err)
	}
	if super || who != want {
		t.Errorf("%s() runs as %q (superuser %v), want %q", fn, who, super, want)
	}
}

func roleExists(t *testing.T, ctx context.Context, c *pgx.Conn, role string) bool {
	t.Helper()
	var ok bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&ok); err != nil {
		t.Fatal(err)
	}
	return ok
}

// The owner role's name is one no tenant role can have.
func TestPgOwnerRoleName(t *testing.T) {
	r := pgOwnerRole("alice_shop")
	if !strings.HasPrefix(r, "np-owner-") || len(r) != len("np-owner-")+16 || r == pgOwnerRole("alice_shop2") {
		t.Fatalf("%q", r)
	}
	if validate.DatabaseUser(r, "np") == nil || validate.DatabaseName(r, "np") == nil {
		t.Fatalf("%q is a valid tenant name", r)
	}
}

// A migration's dump (ImportPostgresDump) with a SECURITY DEFINER function
// and a view over pg_authid: nothing it made is owned by a superuser, the
// function runs as the database's owner role, the view is refused, and
// the database's user still reads and writes the tables. Dropping the
// database drops its owner role.
func TestImportPostgresDumpOwner(t *testing.T) {
	env, srv := pgEnv(t)
	ctx := ctxT(t)
	const owner = "alice"
	name := owner + "_mig"
	mustApply(t, env, ensureDB(pg, name, owner))
	const user = owner + "_u"
	mustApply(t, env, ensureUser(pg, user, owner, pw1, map[string][]string{name: {"ALL"}}))
	const key = "abcdef0123456789"
	dump := "--\n-- PostgreSQL database dump\n--\n\n\\restrict " + key + "\n\nSET statement_timeout = 0;\n" +
		"SELECT pg_catalog.set_config('search_path', '', false);\n" +
		"CREATE TABLE public.items (id integer NOT NULL, name text);\n" +
		"CREATE SEQUENCE public.s;\n" +
		"CREATE FUNCTION public.whoami() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text';\n" +
		"CREATE FUNCTION public.secrets() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM pg_catalog.pg_authid';\n" +
		"CREATE VIEW public.roles AS SELECT rolname, rolpassword FROM pg_catalog.pg_authid;\n" +
		"COPY public.items (id, name) FROM stdin;\n1\tapple\n2\tpear\n\\.\n" +
		"--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict " + key + "\n"
	for pass := range 2 { // a migration loads the database more than once
		if err := testModule.ImportPostgresDump(ctx, env, name, strings.NewReader(dump)); err != nil {
			t.Fatalf("pass %d: %v", pass, err)
		}
	}
	role := pgOwnerRole(name)
	admin := srv.MustConnect(t, name)
	if n := superuserOwned(t, ctx, admin); n != 0 {
		t.Errorf("%d objects owned by a superuser", n)
	}
	var tOwner string
	if err := admin.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'items'").Scan(&tOwner); err != nil || tOwner != role {
		t.Errorf("table owner %q %v, want %q", tOwner, err, role)
	}
	var dba string
	if err := admin.QueryRow(ctx, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", name).Scan(&dba); err != nil || dba != pgtestAdmin {
		t.Errorf("database owner %q %v", dba, err)
	}
	var super, login bool
	if err := admin.QueryRow(ctx, "SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = $1", role).Scan(&super, &login); err != nil || super || login {
		t.Errorf("owner role: super %v login %v %v", super, login, err)
	}
	admin.Close(ctx)

	uc, err := pgx.Connect(ctx, srv.ConnString(user, pw1, name))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	defer uc.Close(ctx)
	runsAs(t, ctx, uc, "public.whoami", role)
	var n int
	if err := uc.QueryRow(ctx, "SELECT public.secrets()").Scan(&n); err == nil {
		t.Errorf("a SECURITY DEFINER function of the dump reads pg_authid (%d rows)", n)
	}
	if err := uc.QueryRow(ctx, "SELECT count(*) FROM public.roles").Scan(&n); err == nil {
		t.Errorf("a view of the dump reads pg_authid (%d rows)", n)
	}
	if _, err := uc.Exec(ctx, "INSERT INTO public.items VALUES (3, 'plum')"); err != nil {
		t.Errorf("insert as %s: %v", user, err)
	}
	if err := uc.QueryRow(ctx, "SELECT count(*) FROM public.items").Scan(&n); err != nil || n != 3 {
		t.Errorf("select as %s: %d %v", user, n, err)
	}
	if err := uc.QueryRow(ctx, "SELECT nextval('public.s')").Scan(&n); err != nil {
		t.Errorf("sequence as %s: %v", user, err)
	}
	uc.Close(ctx)

	mc := srv.MustConnect(t, "postgres")
	if !roleExists(t, ctx, mc, role) {
		t.Fatal("no owner role")
	}
	mustApply(t, env, dropDB(pg, name, owner))
	if roleExists(t, ctx, mc, role) {
		t.Error("owner role left after the database was dropped")
	}
	if n := func() int {
		var n int
		_ = mc.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'npimport\\_%'").Scan(&n)
		return n
	}(); n != 0 {
		t.Errorf("%d import roles left", n)
	}
}

// A dropped user's objects go to the database's owner role, not to the
// admin: its SECURITY DEFINER function, called by another user, runs as no
// superuser, and the other user keeps the grants it had on its tables.
// A grant to the owner role elsewhere does not keep it from being dropped
// with its database.
func TestPostgresDropUserOwner(t *testing.T) {
	env, srv := pgEnv(t)
	ctx := ctxT(t)
	const owner = "alice"
	name := owner + "_shop"
	mustApply(t, env, ensureDB(pg, name, owner))
	mustApply(t, env, ensureDB(pg, owner+"_other", owner))
	const a, b = owner + "_a", owner + "_b"
	mustApply(t, env, ensureUser(pg, a, owner, pw1, map[string][]string{name: {"ALL"}, owner + "_other": {"ALL"}}))
	mustApply(t, env, ensureUser(pg, b, owner, pw2, map[string][]string{name: {"ALL"}}))
	ac, err := pgx.Connect(ctx, srv.ConnString(a, pw1, name))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CREATE TABLE public.t (id int)",
		"INSERT INTO public.t VALUES (1)",
		"GRANT ALL ON public.t TO " + b,
		"CREATE FUNCTION public.whoami() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text'",
		"CREATE VIEW public.v AS SELECT id FROM public.t",
		"GRANT SELECT ON public.v TO " + b,
	} {
		if _, err := ac.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	ac.Close(ctx)
	// Someone grants on their own object to the owner role in another
	// database: that must not keep the role alive.
	oc, err := pgx.Connect(ctx, srv.ConnString(a, pw1, owner+"_other"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oc.Exec(ctx, "CREATE TABLE public.x (i int)"); err != nil {
		t.Fatal(err)
	}
	oc.Close(ctx)

	mustApply(t, env, dropUser(pg, a, owner))
	role := pgOwnerRole(name)
	admin := srv.MustConnect(t, name)
	if n := superuserOwned(t, ctx, admin); n != 0 {
		t.Errorf("%d objects owned by a superuser", n)
	}
	var fOwner string
	if err := admin.QueryRow(ctx, "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'whoami'").Scan(&fOwner); err != nil || fOwner != role {
		t.Errorf("function owner %q %v, want %q", fOwner, err, role)
	}
	admin.Close(ctx)
	other := srv.MustConnect(t, owner+"_other")
	if _, err := other.Exec(ctx, "GRANT SELECT ON public.x TO "+pgIdent(role)); err != nil {
		t.Fatal(err)
	}
	other.Close(ctx)

	bc, err := pgx.Connect(ctx, srv.ConnString(b, pw2, name))
	if err != nil {
		t.Fatal(err)
	}
	runsAs(t, ctx, bc, "public.whoami", role)
	var n int
	if _, err := bc.Exec(ctx, "INSERT INTO public.t VALUES (2)"); err != nil {
		t.Errorf("insert as %s: %v", b, err)
	}
	if err := bc.QueryRow(ctx, "SELECT count(*) FROM public.v").Scan(&n); err != nil || n != 2 {
		t.Errorf("select as %s: %d %v", b, n, err)
	}
	bc.Close(ctx)

	mc := srv.MustConnect(t, "postgres")
	mustApply(t, env, dropDB(pg, name, owner))
	if roleExists(t, ctx, mc, role) {
		t.Error("owner role left after the database was dropped")
	}
	if roleExists(t, ctx, mc, a) {
		t.Error("dropped user still exists")
	}
	// Dropping a user who owned nothing, and the other database, leave no
	// owner role either.
	mustApply(t, env, dropUser(pg, b, owner))
	mustApply(t, env, dropDB(pg, owner+"_other", owner))
	if err := mc.QueryRow(context.Background(), "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'np-owner-%'").Scan(&n); err != nil || n != 0 {
		t.Errorf("%d owner roles left %v", n, err)
	}
}
