package db

import (
	"bufio"
	"bytes"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// hostilePgDump is the body of a dump that, while its role owns the
// database, sets the database's search_path to a schema of its own whose
// aclexplode and quote_ident would, called by the admin, make a tenant
// role a superuser and write a marker row; it also makes the database
// opens it to PUBLIC. readOnlyPgDump makes it read-only for later
// sessions.
const readOnlyPgDump = `DO $$
BEGIN
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET default_transaction_read_only = on', pg_catalog.current_database());
END
$$;
`

const hostilePgDump = `SET statement_timeout = 0;
CREATE TABLE public.marker (who text);
CREATE SCHEMA evil;
CREATE FUNCTION evil.aclexplode(acl aclitem[], OUT grantor oid, OUT grantee oid, OUT privilege_type text, OUT is_grantable boolean)
    RETURNS SETOF record LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.marker VALUES (current_user);
    EXECUTE 'ALTER ROLE alice_v SUPERUSER';
    RETURN QUERY SELECT * FROM pg_catalog.aclexplode(acl);
END;
$$;
CREATE FUNCTION evil.quote_ident(text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.marker VALUES (current_user);
    EXECUTE 'ALTER ROLE alice_v SUPERUSER';
    RETURN pg_catalog.quote_ident($1);
END;
$$;
DO $$
BEGIN
    EXECUTE pg_catalog.format('ALTER DATABASE %I SET search_path = evil, pg_catalog, public', pg_catalog.current_database());
    EXECUTE pg_catalog.format('ALTER ROLE CURRENT_USER IN DATABASE %I SET search_path = evil', pg_catalog.current_database());
    EXECUTE pg_catalog.format('GRANT CONNECT ON DATABASE %I TO PUBLIC', pg_catalog.current_database());
END
$$;
`

// A dump that sets its database's search_path to its own schema (and
// other settings) while its load owns the database changes nothing for
// the admin's later connections: the settings are reset after the load
// and the admin's connections pin their search_path, so the shadowing
// functions never run as a superuser — after ImportUntrustedPostgres and
// ImportPostgresDump alike.
func TestImportPostgresSearchPathHijack(t *testing.T) {
	env, srv := pgEnv(t)
	ctx := ctxT(t)
	const owner = "alice"
	name := owner + "_shop"
	mustApply(t, env, ensureDB(pg, name, owner))
	const user = owner + "_u"
	mustApply(t, env, ensureUser(pg, user, owner, pw1, map[string][]string{name: {"ALL"}}))
	const victim = owner + "_v"
	mustApply(t, env, ensureUser(pg, victim, owner, pw2, nil))

	check := func(what string) {
		t.Helper()
		mc := srv.MustConnect(t, "postgres")
		defer mc.Close(ctx)
		var super, connect bool
		if err := mc.QueryRow(ctx, "SELECT rolsuper, has_database_privilege($1, $2, 'CONNECT') FROM pg_roles WHERE rolname = $1", victim, name).Scan(&super, &connect); err != nil {
			t.Fatal(err)
		}
		if super {
			t.Errorf("%s: %s was made a superuser", what, victim)
			_, _ = mc.Exec(ctx, "ALTER ROLE "+pgIdent(victim)+" NOSUPERUSER")
		}
		if connect {
			t.Errorf("%s: %s (PUBLIC) may connect to %s", what, victim, name)
		}
		var settings []string
		if err := mc.QueryRow(ctx, `SELECT COALESCE(array_agg(array_to_string(s.setconfig, ',')), '{}') FROM pg_db_role_setting s
			JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1`, name).Scan(&settings); err != nil {
			t.Fatal(err)
		}
		if len(settings) != 0 {
			t.Errorf("%s: settings left on the database: %q", what, settings)
		}
		// The database's user reaches the dump's table; the admin's
		// calls of aclexplode/quote_ident left no row.
		uc, err := pgx.Connect(ctx, srv.ConnString(user, pw1, name))
		if err != nil {
			t.Fatalf("%s: connect as %s: %v", what, user, err)
		}
		defer uc.Close(ctx)
		var n int
		if err := uc.QueryRow(ctx, "SELECT count(*) FROM public.marker").Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: marker rows %d %v", what, n, err)
		}
		if _, err := uc.Exec(ctx, "INSERT INTO public.marker VALUES ('x'); DELETE FROM public.marker"); err != nil {
			t.Errorf("%s: write as %s: %v", what, user, err)
		}
	}

	if err := testModule.ImportUntrustedPostgres(ctx, env, name, strings.NewReader("--\n-- dump\n--\n\n"+hostilePgDump)); err != nil {
		t.Fatalf("untrusted: %v", err)
	}
	check("ImportUntrustedPostgres")
	// The module's later work in the database (checksums, grants) runs
	// with the pinned search_path.
	if _, err := testModule.Checksums(ctx, env, pg, name); err != nil {
		t.Errorf("checksums: %v", err)
	}
	mustApply(t, env, ensureUser(pg, user, owner, "", map[string][]string{name: {"ALL"}}))
	check("checksums and grants after ImportUntrustedPostgres")

	const key = "abcdef0123456789"
	dump := "--\n-- PostgreSQL database dump\n--\n\n\\restrict " + key + "\n\n" + hostilePgDump + readOnlyPgDump +
		"--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict " + key + "\n"
	if err := testModule.ImportPostgresDump(ctx, env, name, strings.NewReader(dump)); err != nil {
		t.Fatalf("dump: %v", err)
	}
	check("ImportPostgresDump")

	// Even with the setting left on the database, the admin's own
	// connections resolve names in pg_catalog.
	adm := srv.MustConnect(t, "postgres")
	defer adm.Close(ctx)
	if _, err := adm.Exec(ctx, "ALTER DATABASE "+pgIdent(name)+" SET search_path = evil, pg_catalog"); err != nil {
		t.Fatal(err)
	}
	mustApply(t, env, ensureUser(pg, user, owner, "", map[string][]string{name: {"CONNECT"}}))
	mustApply(t, env, ensureUser(pg, user, owner, "", map[string][]string{name: {"ALL"}}))
	if _, err := testModule.Checksums(ctx, env, pg, name); err != nil {
		t.Errorf("checksums: %v", err)
	}
	var super bool
	if err := adm.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", victim).Scan(&super); err != nil || super {
		t.Errorf("with the database's search_path set: %s superuser %v %v", victim, super, err)
	}
	if _, err := adm.Exec(ctx, "ALTER DATABASE "+pgIdent(name)+" RESET ALL"); err != nil {
		t.Fatal(err)
	}
}

// A dump that commits halfway (a COMMIT; of its own) and then fails
// leaves the database empty; the BEGIN;/COMMIT; around large objects
// that pg_dump writes do not end the load's transaction.
func TestImportUntrustedPostgresInnerCommit(t *testing.T) {
	env, srv := pgEnv(t)
	ctx := ctxT(t)
	const owner = "alice"
	name := owner + "_shop"
	mustApply(t, env, ensureDB(pg, name, owner))
	mustApply(t, env, ensureUser(pg, owner+"_u", owner, pw1, map[string][]string{name: {"ALL"}}))
	tables := func() int {
		t.Helper()
		c := srv.MustConnect(t, name)
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	bad := "CREATE TABLE public.a (i int);\nCOMMIT;\nCREATE TABLE public.b (i int);\nSELECT no_such_function();\n"
	if err := testModule.ImportUntrustedPostgres(ctx, env, name, strings.NewReader(bad)); err == nil {
		t.Fatal("failing dump imported")
	}
	if n := tables(); n != 0 {
		t.Errorf("a failed load with an inner COMMIT left %d tables", n)
	}
	lo := "CREATE TABLE public.t (i integer, o oid);\nSELECT pg_catalog.lo_create('16388');\n" +
		"COPY public.t (i, o) FROM stdin;\n1\t16388\n\\.\n" +
		"BEGIN;\nSELECT pg_catalog.lo_open('16388', 131072);\nSELECT pg_catalog.lowrite(0, '\\x68656c6c6f');\nSELECT pg_catalog.lo_close(0);\nCOMMIT;\n"
	if err := testModule.ImportUntrustedPostgres(ctx, env, name, strings.NewReader(lo)); err != nil {
		t.Fatalf("large object dump: %v", err)
	}
	c := srv.MustConnect(t, name)
	defer c.Close(ctx)
	var got []byte
	if err := c.QueryRow(ctx, "SELECT lo_get(o) FROM public.t").Scan(&got); err != nil || string(got) != "hello" {
		t.Errorf("large object %q %v", got, err)
	}
}

func TestPlainFilterLargeObjects(t *testing.T) {
	// pg_dump's layout: blank lines after BEGIN; and between objects.
	in := "a\nBEGIN;\n\nSELECT pg_catalog.lo_open('1', 131072);\nSELECT pg_catalog.lowrite(0, '\\x68');\nSELECT pg_catalog.lo_close(0);\n\n" +
		"SELECT pg_catalog.lo_open('2', 131072);\nSELECT pg_catalog.lo_close(0);\n\nCOMMIT;\n" +
		"BEGIN;\n\nCREATE TABLE x ();\nCOMMIT;\nEND;\nBEGIN;\n"
	f := &plainFilter{r: bufio.NewReaderSize(strings.NewReader(in), 64), atStart: true, done: func() error { return nil }}
	got, err := io.ReadAll(f)
	want := "a\nSELECT pg_catalog.lo_open('1', 131072);\nSELECT pg_catalog.lowrite(0, '\\x68');\nSELECT pg_catalog.lo_close(0);\n\n" +
		"SELECT pg_catalog.lo_open('2', 131072);\nSELECT pg_catalog.lo_close(0);\n\n" +
		"BEGIN;\n\nCREATE TABLE x ();\nCOMMIT;\nEND;\nBEGIN;\n\nCOMMIT;\n"
	if err != nil || string(got) != want {
		t.Errorf("%q %v, want %q", got, err, want)
	}
}

// A dump that ends early, between two statements and without an error,
// commits nothing: the load commits only after pg_dump's completion line.
// The dump is pg_dump's own, with two large objects: the BEGIN;/COMMIT;
// it writes around them do not end the load's transaction.
func TestImportPostgresDumpTruncated(t *testing.T) {
	env, srv := pgEnv(t)
	ctx := ctxT(t)
	const owner = "alice"
	src, dst := owner+"_src", owner+"_trunc"
	mustApply(t, env, ensureDB(pg, src, owner))
	mustApply(t, env, ensureDB(pg, dst, owner))
	sc := srv.MustConnect(t, src)
	defer sc.Close(ctx)
	if _, err := sc.Exec(ctx, "CREATE TABLE public.t (i integer, o oid); "+
		"INSERT INTO public.t VALUES (1, lo_from_bytea(0, 'hi')), (2, lo_from_bytea(0, 'there')); CREATE TABLE public.after (i int)"); err != nil {
		t.Fatal(err)
	}
	dc, err := testModule.DumpCommand(ctx, env, "postgresql", src)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, dc.Argv[0], dc.Argv[1:]...)
	cmd.Env = dc.Env
	dump, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if !strings.Contains(string(dump), "BEGIN;\n\nSELECT pg_catalog.lo_open") {
		t.Fatalf("pg_dump wrote its large objects otherwise:\n%s", dump)
	}
	// What psql is given ends the load's transaction once, at the end.
	f := &plainFilter{r: bufio.NewReader(bytes.NewReader(dump)), atStart: true, done: func() error { return nil }}
	filtered, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(filtered), "\nCOMMIT;\n"); n != 1 || !strings.HasSuffix(string(filtered), "\nCOMMIT;\n") {
		t.Fatalf("the filtered dump ends a transaction %d times:\n%s", n, filtered)
	}
	tables := func() []string {
		t.Helper()
		c := srv.MustConnect(t, dst)
		defer c.Close(ctx)
		rows, err := c.Query(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	// Cut after the large objects' COMMIT;, before the completion line.
	end := strings.Index(string(dump), "-- PostgreSQL database dump complete")
	cut := strings.LastIndex(string(dump[:end]), "COMMIT;\n") + len("COMMIT;\n")
	err = testModule.ImportPostgresDump(ctx, env, dst, bytes.NewReader(dump[:cut]))
	if err == nil || !strings.Contains(err.Error(), "completion line") {
		t.Fatalf("truncated dump: %v, want an incomplete dump refused", err)
	}
	if got := tables(); len(got) != 0 {
		t.Fatalf("a truncated dump left tables %v", got)
	}
	if err := testModule.ImportPostgresDump(ctx, env, dst, bytes.NewReader(dump)); err != nil {
		t.Fatalf("complete dump: %v", err)
	}
	if got := tables(); strings.Join(got, ",") != "after,t" {
		t.Fatalf("tables %v, want after,t", got)
	}
	c := srv.MustConnect(t, dst)
	defer c.Close(ctx)
	var los []string
	rows, err := c.Query(ctx, "SELECT convert_from(lo_get(o), 'UTF8') FROM public.t ORDER BY i")
	if err == nil {
		los, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || strings.Join(los, ",") != "hi,there" {
		t.Errorf("large objects %q %v", los, err)
	}
}
