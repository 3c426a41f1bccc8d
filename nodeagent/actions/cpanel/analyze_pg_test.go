package cpanel

import (
	"os"
	"strings"
	"testing"

	"github.com/npanel/npanel/internal/cpaneltest"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// PostgreSQL databases, users with their SCRAM hashes and grants are
// reported for import; a user with an md5 hash gets a new password (nPanel
// authenticates with SCRAM); names both engines use are imported once.
func TestAnalyzePostgres(t *testing.T) {
	o := cpaneltest.Default(cpaneltest.LayoutBackup)
	o.PgDatabases = []cpaneltest.PgDatabase{
		{Name: "cpuser_shop", User: "cpuser_shopper", Password: "pg-secret-1"},
		{Name: "cpuser_blog", User: "cpuser_blogger", Password: "pg-secret-2", MD5: true, Plain: true, Rows: 2},
		{Name: "cpuser_wp", User: "cpuser_wpuser", Password: "pg-secret-3"}, // MariaDB's names
	}
	p := cpaneltest.Build(t, t.TempDir(), o)
	for _, username := range []string{"", "newname"} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		r, err := AnalyzeArchive(f, st.Size(), Limits{}, testSeal, username)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		to := username
		if to == "" {
			to = "cpuser"
		}
		md5Disp := dAdapt // nPanel's PostgreSQL takes SCRAM only
		for _, w := range []struct {
			kind, name string
			d          agentpb.ImportDisposition
		}{
			{"database", "cpuser_shop", dImport},
			{"database", "cpuser_blog", dImport},
			{"database", "cpuser_wp", dImport}, // the MariaDB one
			{"database_user", "cpuser_shopper", dImport},
			{"database_user", "cpuser_blogger", md5Disp},
			{"database_user", "cpuser_wpuser", dImport},
			{"database_user", "cpuser", dSkip},
			{"database", "cpuser_wp (PostgreSQL)", dSkip},
			{"database_user", "cpuser_wpuser (PostgreSQL)", dSkip},
		} {
			it := findItem(r, w.kind, w.name)
			if it == nil || it.Disposition != w.d {
				t.Errorf("%q: %s %s: %v, want %v", username, w.kind, w.name, it, w.d)
			}
		}
		engines := map[string]agentpb.DatabaseEngine{}
		for _, d := range r.Databases {
			if _, dup := engines[d.Name]; dup {
				t.Errorf("database %s twice", d.Name)
			}
			engines[d.Name] = d.Engine
		}
		if engines["cpuser_wp"] != agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB || engines["cpuser_shop"] != agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL || len(engines) != 3 {
			t.Errorf("databases %v", engines)
		}
		users := map[string]*agentpb.CpanelDatabaseUser{}
		for _, u := range r.DatabaseUsers {
			if users[u.Name] != nil {
				t.Errorf("user %s twice", u.Name)
			}
			users[u.Name] = u
		}
		shopper := users["cpuser_shopper"]
		if shopper == nil || shopper.Engine != agentpb.DatabaseEngine_DATABASE_ENGINE_POSTGRESQL || len(shopper.Grants) != 1 || shopper.Grants[0].Database != "cpuser_shop" || shopper.Grants[0].Privileges[0] != "ALL" {
			t.Fatalf("shopper %v", shopper)
		}
		h, err := pki.Unseal(testKey, shopper.SealedPasswordHash, agentpb.DatabasePasswordHashSealContext(to+"_shopper"))
		if err != nil || string(h) != cpaneltest.PgSCRAMHash("pg-secret-1") {
			t.Errorf("shopper hash %q %v", h, err)
		}
		blogger := users["cpuser_blogger"]
		if len(blogger.SealedPasswordHash) != 0 || !strings.Contains(findItem(r, "database_user", "cpuser_blogger").Note, "md5") {
			t.Errorf("md5 user: %v", blogger)
		}
		if users["cpuser_wpuser"].Engine != agentpb.DatabaseEngine_DATABASE_ENGINE_MARIADB {
			t.Errorf("wpuser %v", users["cpuser_wpuser"])
		}
	}
}
