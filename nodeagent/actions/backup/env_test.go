package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mdbtest "github.com/npanel/npanel/internal/testenv/mariadb"
	pgtest "github.com/npanel/npanel/internal/testenv/postgres"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/actions/mail"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// testUID owns the test accounts' homes: the actions take the account's
// ids from its home, so no Linux user is needed.
const testUID = 23456

// seal is the tests' stand-in for pki.Seal: Unseal opens only a secret
// sealed for the same context.
func seal(context, secret string) []byte { return []byte("sealed|" + context + "|" + secret) }

func unseal(sealed []byte, context string) ([]byte, error) {
	rest, ok := strings.CutPrefix(string(sealed), "sealed|"+context+"|")
	if !ok {
		return nil, errors.New("sealed for another context")
	}
	return []byte(rest), nil
}

// syncBuf is a log sink tests can search.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// node is one test agent: a prefix, the modules and an account.
type node struct {
	env      *actions.Env
	m        *Module
	dbm      *db.Module
	log      *syncBuf
	user     string
	home     string
	password string
	maria    *mdbtest.Server
	pg       *pgtest.Server
}

func requireRestic(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(resticBin); err != nil {
		if strings.EqualFold(os.Getenv("CI"), "true") {
			t.Fatalf("%s is not installed (make deps)", resticBin)
		}
		t.Skipf("%s is not installed (make deps)", resticBin)
	}
	if os.Geteuid() != 0 {
		t.Skip("backup tests run as root (restic restores ownership, homes are chowned)")
	}
}

// mkdirPublic creates dir's parents below prefix with mode 0755, so the
// database daemons' users can reach their directories.
func mkdirPublic(t testing.TB, prefix string, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		p := filepath.Dir(dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		for d := p; len(d) > len(prefix); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
}

type nodeOpts struct{ maria, pg bool }

func newNode(t testing.TB, o nodeOpts) *node {
	t.Helper()
	requireRestic(t)
	prefix, err := os.MkdirTemp("", "npt-backup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(prefix) })
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	p := platform.Debian12(prefix)
	n := &node{log: &syncBuf{}, user: validate.TestUserPrefix + hex.EncodeToString(randBytes(4))}
	n.env = &actions.Env{
		Node:    "node1",
		Logger:  slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Profile: p,
		DataDir: filepath.Join(prefix, "agent"),
		Unseal:  unseal,
	}
	if err := os.MkdirAll(n.env.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	n.dbm = db.NewModule()
	t.Cleanup(n.dbm.Close) // before the servers stop (cleanups run last-first)
	n.m = NewModule(n.dbm, mail.NewModule(), nil, 0)
	d := p.DB()
	if o.maria {
		mdbtest.Require(t)
		mkdirPublic(t, prefix, d.MariaDBDataDir, d.MariaDBRunDir, d.MariaDBTmpDir)
		n.maria = mdbtest.StartWith(t, mdbtest.Layout{
			DataDir: d.MariaDBDataDir, RunDir: d.MariaDBRunDir, Socket: d.MariaDBSocket,
			PIDFile: d.MariaDBPIDFile, TmpDir: d.MariaDBTmpDir,
		})
	}
	if o.pg {
		pgtest.Require(t)
		mkdirPublic(t, prefix, d.PgDataDir, d.PgSocketDir)
		n.pg = pgtest.StartWith(t, pgtest.Layout{DataDir: d.PgDataDir, SocketDir: d.PgSocketDir})
		if err := os.WriteFile(filepath.Join(n.env.DataDir, db.PostgresAdminFile), []byte(n.pg.Pgpass()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n.home = filepath.Join(p.HomeBase, n.user)
	if err := os.MkdirAll(n.home, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(n.home, testUID, testUID); err != nil {
		t.Fatal(err)
	}
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	n.password = "pw-" + hex.EncodeToString(rnd[:])
	return n
}

func (n *node) repo() *agentpb.BackupRepository {
	return &agentpb.BackupRepository{
		Target:         "local",
		Kind:           agentpb.BackupTargetKind_BACKUP_TARGET_KIND_LOCAL,
		Username:       n.user,
		SealedPassword: seal(agentpb.BackupPasswordSealContext(n.user), n.password),
	}
}

// writeFile writes a file of the account (owned by it) under its home.
func (n *node) writeFile(t testing.TB, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(n.home, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for d := p; d != n.home; d = filepath.Dir(d) {
		if err := os.Lchown(d, testUID, testUID); err != nil {
			t.Fatal(err)
		}
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// apply validates and applies a as the agent does, test names allowed.
func apply(t testing.TB, env *actions.Env, a actions.Action) (any, error) {
	t.Helper()
	if ta, ok := a.(actions.TestNameAware); ok {
		ta.AllowTestUsernames()
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a.Apply(ctxT(t), env)
}

func mustApply(t testing.TB, env *actions.Env, a actions.Action) any {
	t.Helper()
	r, err := apply(t, env, a)
	if err != nil {
		t.Fatalf("%s: %v", a.Name(), err)
	}
	return r
}

func (n *node) backup(t testing.TB, id string, dbs []*agentpb.BackupDatabase, ret *agentpb.BackupRetention) *agentpb.BackupResult {
	t.Helper()
	return mustApply(t, n.env, n.m.NewBackupAccount(&agentpb.BackupAccountAction{
		BackupId: id, Repository: n.repo(), Databases: dbs, Retention: ret,
		StateJson: []byte(`{"sites":["example.com"]}`),
		ZoneFiles: []*agentpb.BackupZoneFile{{Name: "example.com", Text: testZoneFile}},
	})).(*agentpb.BackupResult)
}

// testZoneFile is the zone file every test backup carries.
const testZoneFile = "$ORIGIN example.com.\n$TTL 3600\n" +
	"example.com. 3600 IN SOA ns1.example.net. hostmaster.example.com. 1 10800 3600 604800 3600\n" +
	"example.com. 3600 IN NS ns1.example.net.\n" +
	"keep.example.com. 300 IN TXT \"kept\"\n"

func (n *node) restore(t testing.TB, r *agentpb.RestoreBackupAction) (*agentpb.RestoreResult, error) {
	t.Helper()
	if r.RestoreId == "" {
		r.RestoreId = "r" + hex.EncodeToString(randBytes(4))
	}
	r.Repository = n.repo()
	res, err := apply(t, n.env, n.m.NewRestoreBackup(r))
	if err != nil {
		return nil, err
	}
	return res.(*agentpb.RestoreResult), nil
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// envFor is an Env for unit tests that run no service.
func envFor(dataDir string) *actions.Env {
	return &actions.Env{Node: "web1", Profile: platform.Debian12(dataDir), DataDir: dataDir, Unseal: unseal}
}
