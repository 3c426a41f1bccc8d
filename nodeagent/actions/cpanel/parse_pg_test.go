package cpanel

import (
	"slices"
	"strings"
	"testing"
)

func TestParsePgUsers(t *testing.T) {
	in := `CREATE USER "cpuser_a" WITH PASSWORD E'md50123456789abcdef0123456789abcdef';
CREATE USER cpuser_B WITH PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b';
CREATE USER "we""ird" WITH PASSWORD E'it\'s';
CREATE USER "cpuser_a" WITH PASSWORD E'other';
DROP USER x;
CREATE USER "x" WITH PASSWORD E'unterminated;
`
	users, bad := ParsePgUsers([]byte(in))
	want := []PgUser{
		{"cpuser_a", "md50123456789abcdef0123456789abcdef"},
		{"cpuser_b", "SCRAM-SHA-256$4096:c2FsdA==$a:b"},
		{`we"ird`, "it's"},
	}
	if !slices.Equal(users, want) || !slices.Equal(bad, []int{5, 6}) {
		t.Errorf("%q %v", users, bad)
	}
}

func TestParsePgGrants(t *testing.T) {
	in := `GRANT "cpuser_shop" TO "cpuser";
GRANT ALL ON DATABASE "cpuser_shop" TO "cpuser_u";
grant all privileges on database cpuser_blog to cpuser_u;
GRANT ALL ON DATABASE "cpuser_shop" TO "cpuser_u";
GRANT SELECT ON t TO u;
`
	g, bad := ParsePgGrants([]byte(in))
	if !slices.Equal(g["cpuser"], []string{"cpuser_shop"}) || !slices.Equal(g["cpuser_u"], []string{"cpuser_shop", "cpuser_blog"}) || len(g) != 2 || !slices.Equal(bad, []int{5}) {
		t.Errorf("%v %v", g, bad)
	}
}

// FuzzPgParsers: no input panics the psql_users.sql and psql_grants.sql
// parsers, and what they return has no line break or NUL (names and
// hashes reach the report and, validated, the API).
func FuzzPgParsers(f *testing.F) {
	f.Add([]byte(`CREATE USER "a_b" WITH PASSWORD E'md5x';` + "\n"))
	f.Add([]byte(`GRANT ALL ON DATABASE "a_b" TO "a_c";` + "\n" + `GRANT "a_b" TO a;`))
	f.Add([]byte(`CREATE USER "q""" WITH PASSWORD E'\\\''';`))
	f.Fuzz(func(t *testing.T, b []byte) {
		users, _ := ParsePgUsers(b)
		for _, u := range users {
			if u.Name == "" || strings.ContainsAny(u.Name+u.Hash, "\n\x00") {
				t.Errorf("user %q", u)
			}
		}
		grants, _ := ParsePgGrants(b)
		for u, dbs := range grants {
			for _, d := range dbs {
				if u == "" || d == "" || strings.ContainsAny(u+d, "\n\x00") {
					t.Errorf("grant %q %q", u, d)
				}
			}
		}
	})
}
