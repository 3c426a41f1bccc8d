package db

import (
	"testing"

	"github.com/npanel/npanel/nodeagent/actions"

	"github.com/npanel/npanel/validate"
)

// TestSizes lists the sizes of every database of a real MariaDB and a real
// PostgreSQL, without the system databases.
func TestSizes(t *testing.T) {
	for _, tc := range []struct {
		engine string
		start  func(testing.TB) any
	}{
		{validate.EngineMariaDB, func(t testing.TB) any { env, _ := mariaEnv(t); return env }},
		{validate.EnginePostgreSQL, func(t testing.TB) any { env, _ := pgEnv(t); return env }},
	} {
		t.Run(tc.engine, func(t *testing.T) {
			env := tc.start(t).(*actions.Env)
			mustApply(t, env, ensureDB(tc.engine, "alice_sized", "alice"))
			if got, err := testModule.Sizes(ctxT(t), env); err != nil || len(got) != 0 {
				t.Fatalf("without the db module in Env.Modules: %v, %v", got, err)
			}
			env.Modules = []string{ModuleName}
			// This machine has MariaDB's server installed but not running
			// in the PostgreSQL case: an error, with PostgreSQL's sizes.
			got, err := testModule.Sizes(ctxT(t), env)
			if err != nil && tc.engine == validate.EngineMariaDB {
				t.Fatal(err)
			}
			found := false
			for _, d := range got {
				switch d.Name {
				case "alice_sized":
					found = d.Engine == tc.engine && d.Bytes >= 0
				case "mysql", "information_schema", "performance_schema", "sys", "postgres", "template0", "template1":
					t.Errorf("system database %s listed", d.Name)
				}
			}
			if !found {
				t.Fatalf("alice_sized not in %+v", got)
			}
		})
	}
}
