package db

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/benchstat"
	mdbtest "github.com/npanel/npanel/internal/testenv/mariadb"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkCreateDatabaseUserGrant measures createDatabase + user + grant
// three ways in one run, interleaved so that the server's state (number of
// databases, caches) is the same for each: through the agent's actions, as
// the same three statements on one Go connection, and as one mariadb
// client process per run. Run with -benchtime=200x for the figures.
func BenchmarkCreateDatabaseUserGrant(b *testing.B) {
	env, srv := mariaEnv(b)
	root := srv.MustRoot(b)
	ctx := context.Background()
	conn, err := root.Conn(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	// Warm the agent's pool (and create its admin account).
	mustApply(b, env, listDBs(validate.EngineMariaDB, "warm"))
	var agent, direct, client []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		db, user := fmt.Sprintf("bencha_d%d", i), fmt.Sprintf("bencha_u%d", i)
		t0 := time.Now()
		mustApply(b, env, ensureDB(validate.EngineMariaDB, db, "bencha"))
		mustApply(b, env, ensureUser(validate.EngineMariaDB, user, "bencha", pw1, map[string][]string{db: {"ALL"}}))
		agent = append(agent, time.Since(t0))

		db, user = fmt.Sprintf("benchg_d%d", i), fmt.Sprintf("benchg_u%d", i)
		t0 = time.Now()
		for _, q := range []string{
			"CREATE DATABASE " + mysqlIdent(db) + " CHARACTER SET utf8mb4",
			"CREATE USER " + account(user, "localhost") + " IDENTIFIED BY '" + pw1 + "'",
			"GRANT ALL PRIVILEGES ON " + mysqlGrantDB(db) + ".* TO " + account(user, "localhost"),
		} {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				b.Fatal(err)
			}
		}
		direct = append(direct, time.Since(t0))

		db, user = fmt.Sprintf("benchc_d%d", i), fmt.Sprintf("benchc_u%d", i)
		t0 = time.Now()
		out, err := exec.Command(mdbtest.Client, "--socket="+srv.Socket, "-e",
			"CREATE DATABASE "+mysqlIdent(db)+" CHARACTER SET utf8mb4; "+
				"CREATE USER "+account(user, "localhost")+" IDENTIFIED BY '"+pw1+"'; "+
				"GRANT ALL PRIVILEGES ON "+mysqlGrantDB(db)+".* TO "+account(user, "localhost")).CombinedOutput()
		if err != nil {
			b.Fatalf("mariadb client: %v: %s", err, out)
		}
		client = append(client, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(ms(benchstat.Percentile(agent, 0.5)), "agent-p50-ms")
	b.ReportMetric(ms(benchstat.Percentile(agent, 0.99)), "agent-p99-ms")
	b.ReportMetric(ms(benchstat.Percentile(direct, 0.5)), "goconn-p50-ms")
	b.ReportMetric(ms(benchstat.Percentile(direct, 0.99)), "goconn-p99-ms")
	b.ReportMetric(ms(benchstat.Percentile(client, 0.5)), "client-p50-ms")
	b.ReportMetric(ms(benchstat.Percentile(client, 0.99)), "client-p99-ms")
	b.ReportMetric(float64(benchstat.Percentile(agent, 0.5))/float64(benchstat.Percentile(client, 0.5)), "agent/client-p50")
	b.ReportMetric(float64(benchstat.Percentile(agent, 0.5))/float64(benchstat.Percentile(direct, 0.5)), "agent/goconn-p50")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkListDatabases1000 measures databases(account) on a node holding
// 1,000 databases with one table each: for an account owning 20 of them,
// and for one owning 500.
func BenchmarkListDatabases1000(b *testing.B) {
	env, srv := mariaEnv(b)
	root := srv.MustRoot(b)
	mustApply(b, env, listDBs(validate.EngineMariaDB, "warm"))
	owners := func(i int) string {
		if i < 500 {
			return "big"
		}
		return fmt.Sprintf("small%d", (i-500)/20)
	}
	for i := range 1000 {
		o := owners(i)
		name := fmt.Sprintf("%s_db%d", o, i)
		for _, q := range []string{
			"CREATE DATABASE " + mysqlIdent(name),
			"CREATE TABLE " + mysqlIdent(name) + ".t (id INT PRIMARY KEY, v VARCHAR(50))",
			"INSERT INTO " + mysqlIdent(name) + ".t VALUES (1, 'x')",
		} {
			if _, err := root.Exec(q); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		owner string
		n     int
	}{{"small3", 20}, {"big", 500}} {
		b.Run(tc.owner, func(b *testing.B) {
			var d []time.Duration
			for b.Loop() {
				t0 := time.Now()
				r := mustApply(b, env, listDBs(validate.EngineMariaDB, tc.owner)).(*agentpb.ListDatabasesResult)
				d = append(d, time.Since(t0))
				if len(r.Databases) != tc.n {
					b.Fatalf("%d databases, want %d", len(r.Databases), tc.n)
				}
			}
			b.ReportMetric(ms(benchstat.Percentile(d, 0.5)), "p50-ms")
			b.ReportMetric(ms(benchstat.Percentile(d, 0.99)), "p99-ms")
		})
	}
}
