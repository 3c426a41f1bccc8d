package db

import (
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// A dump from another system — plain with owners and grants of roles that
// do not exist here, without or with \restrict, or pg_dump's tar format —
// imports through the restricted loader; hostile ones run nothing outside
// the database and leave nothing behind.
func TestImportUntrustedPostgres(t *testing.T) {
	env, srv := pgEnv(t)
	ctx := ctxT(t)
	const owner = "alice"
	name := owner + "_shop"
	mustApply(t, env, ensureDB("postgresql", name, owner))
	const user, pw = owner + "_u", "Imported-Pass-42"
	mustApply(t, env, ensureUser("postgresql", user, owner, pw, map[string][]string{name: {"ALL"}}))
	count := func(q string) int {
		t.Helper()
		c := srv.MustConnect(t, name)
		defer c.Close(ctx)
		var n int
		if err := c.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}

	plain := `--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
CREATE EXTENSION IF NOT EXISTS plpgsql WITH SCHEMA pg_catalog;
COMMENT ON EXTENSION plpgsql IS 'PL/pgSQL procedural language';
COMMENT ON SCHEMA public IS 'standard public schema';
CREATE TABLE public.items (id integer NOT NULL, name text);
ALTER TABLE public.items OWNER TO cpuser_old;
CREATE VIEW public.v AS SELECT items.name FROM public.items;
CREATE FUNCTION public.whoami() RETURNS text LANGUAGE sql SECURITY DEFINER AS 'SELECT current_user::text';
CREATE VIEW public.roles AS SELECT rolname FROM pg_catalog.pg_authid;
ALTER TABLE public.v OWNER TO cpuser_old;
COPY public.items (id, name) FROM stdin;
1	apple
2	GRANT ALL ON TABLE public.items TO cpuser_old;
\.
REVOKE ALL ON TABLE public.items FROM PUBLIC;
GRANT ALL ON TABLE public.items TO cpuser_old;
`
	for _, c := range []struct {
		name, dump string
		rows       int
	}{
		{"plain", plain, 2},
		{"plain restrict", strings.Replace(plain, "SET statement_timeout", "\\restrict KEY1\n\nSET statement_timeout", 1) + "\n\\unrestrict KEY1\n", 2},
		{"tar", readFile(t, "testdata/pgdump-shop.tar"), 2},
	} {
		if err := testModule.ImportUntrustedPostgres(ctx, env, name, strings.NewReader(c.dump)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if n := count("SELECT COUNT(*) FROM public.items"); n != c.rows {
			t.Errorf("%s: %d rows", c.name, n)
		}
		// The database's user keeps its grant and reaches the objects.
		uc, err := pgx.Connect(ctx, srv.ConnString(user, pw, name))
		if err != nil {
			t.Fatalf("%s: connect as %s: %v", c.name, user, err)
		}
		var n int
		if err := uc.QueryRow(ctx, "SELECT COUNT(*) FROM public.v").Scan(&n); err != nil || n != c.rows {
			t.Errorf("%s: as %s: %d %v", c.name, user, n, err)
		}
		if _, err := uc.Exec(ctx, "INSERT INTO public.items VALUES (99, 'new')"); err != nil {
			t.Errorf("%s: insert as %s: %v", c.name, user, err)
		}
		// What the dump made runs as the user, never as the admin.
		if c.name != "tar" {
			var who string
			if err := uc.QueryRow(ctx, "SELECT public.whoami()").Scan(&who); err != nil || who != user {
				t.Errorf("%s: SECURITY DEFINER function runs as %q %v", c.name, who, err)
			}
			if err := uc.QueryRow(ctx, "SELECT COUNT(*) FROM public.roles").Scan(&n); err == nil {
				t.Errorf("%s: a view of the dump reads pg_authid (%d rows)", c.name, n)
			}
		}
		_ = uc.Close(ctx)
	}
	// The row that looks like a GRANT is data and was kept.
	if err := testModule.ImportUntrustedPostgres(ctx, env, name, strings.NewReader(plain)); err != nil {
		t.Fatal(err)
	}
	if n := count("SELECT COUNT(*) FROM public.items WHERE name LIKE 'GRANT ALL%'"); n != 1 {
		t.Errorf("COPY row dropped: %d", n)
	}

	shell := filepath.Join(os.TempDir(), "npt-shell-"+randHex(t))
	prog := filepath.Join(os.TempDir(), "npt-prog-"+randHex(t))
	t.Cleanup(func() { _ = os.Remove(shell); _ = os.Remove(prog) })
	tarDump := readFile(t, "testdata/pgdump-shop.tar")
	for _, d := range []string{
		"\\! touch " + shell + "\n",
		"CREATE TABLE t (i int);\n\\! touch " + shell + "\n",
		"\\unrestrict KEY1\n\\! touch " + shell + "\n",
		"--\n\\restrict KEY1\n\\unrestrict KEY1\n\\! touch " + shell + "\n",
		"COPY (SELECT 1) TO PROGRAM 'touch " + prog + "';\n",
		"CREATE ROLE npt_evil SUPERUSER LOGIN;\n",
		"ALTER ROLE CURRENT_USER SUPERUSER;\n",
		"SELECT pg_read_file('/etc/passwd');\n",
		"\\connect postgres\n",
		"COMMIT;\n\\! touch " + shell + "\n",
		// The dump cannot run as another role.
		"set role " + pgtestAdmin + ";\nCREATE TABLE t (i int);\n",
		"RESET ROLE; SET SESSION ROLE " + pgtestAdmin + ";\n",
		// A truncated tar archive commits nothing.
		tarDump[:1500],
	} {
		err := testModule.ImportUntrustedPostgres(ctx, env, name, strings.NewReader(d))
		if err == nil {
			t.Errorf("%.60q imported", d)
		}
		t.Logf("%.60q: %v", d, err)
	}
	for _, f := range []string{shell, prog} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s written: %v", f, err)
		}
	}
	if n := count("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"); n != 0 {
		t.Errorf("a failed import left %d tables", n)
	}
	if n := count("SELECT COUNT(*) FROM pg_roles WHERE rolname LIKE 'npt\\_evil%' OR rolname LIKE 'npimport\\_%'"); n != 0 {
		t.Errorf("roles left or made: %d", n)
	}
	var dba string
	c := srv.MustConnect(t, "postgres")
	defer c.Close(ctx)
	if err := c.QueryRow(ctx, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", name).Scan(&dba); err != nil || strings.HasPrefix(dba, "npimport_") {
		t.Errorf("database owner %q %v", dba, err)
	}
}

const pgtestAdmin = "npanel"

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func randHex(t *testing.T) string {
	t.Helper()
	f, err := os.CreateTemp("", "x")
	if err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	_ = os.Remove(f.Name())
	return filepath.Base(f.Name())
}

func TestPlainFilter(t *testing.T) {
	in := "a\nALTER TABLE x OWNER TO y;\nCOPY t (a) FROM stdin;\nGRANT x;\n\\.\nGRANT ALL ON t TO u;\n\\unrestrict K\nend"
	f := &plainFilter{r: bufio.NewReaderSize(strings.NewReader(in), 64), unrestrict: "K", atStart: true, done: func() error { return nil }}
	got, err := io.ReadAll(f)
	want := "a\nCOPY t (a) FROM stdin;\nGRANT x;\n\\.\nend\nCOMMIT;\n"
	if err != nil || string(got) != want || !f.committed {
		t.Errorf("%q %v, want %q", got, err, want)
	}
	f = &plainFilter{r: bufio.NewReaderSize(strings.NewReader(in), 64), atStart: true, done: func() error { return errors.New("x") }}
	got, _ = io.ReadAll(f)
	if strings.Contains(string(got), "COMMIT") || f.err == nil {
		t.Errorf("committed after a failure: %q", got)
	}
}
