package migrate

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	mdbtest "github.com/npanel/npanel/internal/testenv/mariadb"
	pgtest "github.com/npanel/npanel/internal/testenv/postgres"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/db"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// This package cannot import internal/testenv (it imports the agent, which
// imports this package): its few helpers are repeated here.

// testUsers are the users the tests made, removed again by TestMain even
// when a test's own cleanup did not run.
var testUsers sync.Map

func TestMain(m *testing.M) {
	code := m.Run()
	testUsers.Range(func(k, _ any) bool {
		if err := removeUser(k.(string)); err != nil {
			fmt.Fprintln(os.Stderr, "leftover", err)
			code = 1
		}
		return true
	})
	os.Exit(code)
}

func removeUser(name string) error {
	if _, err := user.Lookup(name); err != nil {
		return nil
	}
	if out, err := exec.Command("/usr/sbin/userdel", "-f", name).CombinedOutput(); err != nil {
		return fmt.Errorf("remove test user %s: %v: %s", name, err, out)
	}
	return nil
}

func requireBinary(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	if strings.EqualFold(os.Getenv("CI"), "true") {
		t.Fatalf("%s is not installed; make test installs it", path)
	}
	t.Skipf("%s is not installed (run make deps)", path)
}

// syncBuf is a log sink tests read.
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

// node is one test "node": a prefix, its data dir and a migration module.
type node struct {
	env   *actions.Env
	m     *Module
	dbm   *db.Module
	log   *syncBuf
	home  string
	addr  string // the endpoint's, once started
	maria *mdbtest.Server
	pg    *pgtest.Server
}

func requireTools(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("migration tests run as root (rsync runs as the account, users are created)")
	}
	p := platform.Debian12("").Migrate()
	requireBinary(t, p.Rsync)
	requireBinary(t, p.SSH)
}

// testUser creates a Linux user for the account both nodes share (one
// machine, one user database), removed when the test ends.
func testUser(t testing.TB) (string, uint32, uint32) {
	t.Helper()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := validate.TestUserPrefix + "m" + hex.EncodeToString(rnd[:])
	testUsers.Store(name, true)
	t.Cleanup(func() {
		if err := removeUser(name); err != nil {
			t.Error(err)
		}
	})
	out, err := exec.Command("/usr/sbin/useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "-U", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return name, uint32(uid), uint32(gid)
}

type nodeOpts struct {
	endpoint bool
	maria    bool
	pg       bool
}

// newNode makes a node with the account's home (owned by uid:gid).
func newNode(t testing.TB, name, username string, uid, gid uint32, o nodeOpts) *node {
	t.Helper()
	prefix, err := os.MkdirTemp("", "npt-migrate-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(prefix) })
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	p := platform.Debian12(prefix)
	n := &node{log: &syncBuf{}}
	n.env = &actions.Env{
		Node:    name,
		Logger:  slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Profile: p,
		DataDir: filepath.Join(prefix, "agent"),
	}
	if err := os.MkdirAll(n.env.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	n.dbm = db.NewModule()
	t.Cleanup(n.dbm.Close)
	n.m = NewModule(n.dbm)
	if o.maria {
		mdbtest.Require(t)
		d := p.DB()
		mkdirPublic(t, prefix, d.MariaDBDataDir, d.MariaDBRunDir, d.MariaDBTmpDir)
		n.maria = mdbtest.StartWith(t, mdbtest.Layout{
			DataDir: d.MariaDBDataDir, RunDir: d.MariaDBRunDir, Socket: d.MariaDBSocket,
			PIDFile: d.MariaDBPIDFile, TmpDir: d.MariaDBTmpDir,
		})
	}
	if o.pg {
		pgtest.Require(t)
		d := p.DB()
		mkdirPublic(t, prefix, d.PgDataDir, d.PgSocketDir)
		n.pg = pgtest.StartWith(t, pgtest.Layout{DataDir: d.PgDataDir, SocketDir: d.PgSocketDir})
		if err := os.WriteFile(filepath.Join(n.env.DataDir, db.PostgresAdminFile), []byte(n.pg.Pgpass()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n.home = filepath.Join(p.HomeBase, username)
	if err := os.MkdirAll(n.home, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(n.home, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	if o.endpoint {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		addr, err := n.m.Listen(ctx, n.env, "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		n.addr = addr
	}
	return n
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

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// apply validates and applies a as the agent does, with test names allowed.
func apply(t testing.TB, env *actions.Env, a actions.Action) (proto.Message, error) {
	t.Helper()
	if tn, ok := a.(actions.TestNameAware); ok {
		tn.AllowTestUsernames()
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return a.Apply(ctxT(t), env)
}

func mustApply(t testing.TB, env *actions.Env, a actions.Action) proto.Message {
	t.Helper()
	r, err := apply(t, env, a)
	if err != nil {
		t.Fatalf("%s: %v", a.Name(), err)
	}
	return r
}

// pair is a source and a target with a migration authorized between them.
type pair struct {
	src, dst *node
	id, user string
	uid, gid uint32
	pub      string // the migration's public key
	hostKey  string
	endpoint string
}

type pairOpts struct {
	maria bool
	pg    bool
	from  []string // default 127.0.0.1
	dbs   []*agentpb.BackupDatabase
}

func newPair(t testing.TB, o pairOpts) *pair {
	t.Helper()
	return newPairWith(t, o, nil)
}

// newPairWith is newPair with the databases made from the account's name.
func newPairWith(t testing.TB, o pairOpts, dbs func(user string) []*agentpb.BackupDatabase) *pair {
	t.Helper()
	requireTools(t)
	p := &pair{id: "mig-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	p.user, p.uid, p.gid = testUser(t)
	if dbs != nil {
		o.dbs = dbs(p.user)
	}
	p.src = newNode(t, "src", p.user, p.uid, p.gid, nodeOpts{maria: o.maria, pg: o.pg})
	p.dst = newNode(t, "dst", p.user, p.uid, p.gid, nodeOpts{endpoint: true, maria: o.maria, pg: o.pg})
	key := mustApply(t, p.src.env, p.src.m.NewMigrationKey(&agentpb.MigrationKeyAction{MigrationId: p.id, Username: p.user})).(*agentpb.MigrationKeyResult)
	p.pub = key.GetPublicKey()
	from := o.from
	if from == nil {
		from = []string{"127.0.0.1"}
	}
	az := mustApply(t, p.dst.env, p.dst.m.NewAuthorizeMigration(&agentpb.AuthorizeMigrationAction{
		MigrationId: p.id, Username: p.user, PublicKey: p.pub, FromAddresses: from,
		ExpiresUnix: time.Now().Add(time.Hour).Unix(), Databases: o.dbs,
		SourceUid: p.uid, SourceGid: p.gid,
	})).(*agentpb.AuthorizeMigrationResult)
	p.hostKey, p.endpoint = az.GetHostKey(), az.GetEndpoint()
	if p.endpoint != p.dst.addr {
		t.Fatalf("endpoint %q, want %q", p.endpoint, p.dst.addr)
	}
	return p
}

func (p *pair) sync(t testing.TB, files, final bool, dbs ...*agentpb.BackupDatabase) *agentpb.SyncMigrationResult {
	t.Helper()
	r := mustApply(t, p.src.env, p.src.m.NewSyncMigration(&agentpb.SyncMigrationAction{
		MigrationId: p.id, Username: p.user, TargetEndpoint: p.endpoint, TargetHostKey: p.hostKey,
		Files: files, Final: final, Databases: dbs,
	})).(*agentpb.SyncMigrationResult)
	return r
}

// entry is what compareTrees checks of one file.
type entry struct {
	mode     fs.FileMode
	uid, gid uint32
	size     int64
	sum      [32]byte
	link     string
	linkID   int // files sharing an inode share an id
	xattrs   string
	mtimeSec int64
}

// tree describes every entry below root (root itself included as ".").
func tree(t testing.TB, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	inodes := map[uint64]int{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := entry{mode: fi.Mode(), uid: st.Uid, gid: st.Gid}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			e.link, _ = os.Readlink(p)
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.size, e.sum, e.mtimeSec = fi.Size(), sha256.Sum256(b), fi.ModTime().Unix()
			if st.Nlink > 1 {
				if _, ok := inodes[st.Ino]; !ok {
					inodes[st.Ino] = len(inodes) + 1
				}
				e.linkID = inodes[st.Ino]
			}
		}
		e.xattrs = xattrs(p)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// xattrs lists p's user.* attributes and ACLs with values, sorted.
func xattrs(p string) string {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if err != nil || n == 0 {
		return ""
	}
	var names []string
	for _, a := range strings.Split(string(buf[:n]), "\x00") {
		if strings.HasPrefix(a, "user.") || a == "system.posix_acl_access" || a == "system.posix_acl_default" {
			names = append(names, a)
		}
	}
	slices.Sort(names)
	var sb strings.Builder
	for _, a := range names {
		v := make([]byte, 4096)
		m, _ := unix.Lgetxattr(p, a, v)
		fmt.Fprintf(&sb, "%s=%q;", a, v[:max(m, 0)])
	}
	return sb.String()
}

// compareTrees checks that b is a copy of a, every entry of it owned by
// the account (uid:gid) whoever owns it in a.
func compareTrees(t testing.TB, a, b string, uid, gid uint32) {
	t.Helper()
	ta, tb := tree(t, a), tree(t, b)
	for k, ea := range ta {
		ea.uid, ea.gid = uid, gid
		eb, ok := tb[k]
		if !ok {
			t.Errorf("%s: missing on the target", k)
			continue
		}
		if ea != eb {
			t.Errorf("%s differs:\n source %+v\n target %+v", k, ea, eb)
		}
	}
	for k := range tb {
		if _, ok := ta[k]; !ok {
			t.Errorf("%s: on the target only", k)
		}
	}
}

func writeFile(t testing.TB, p string, data []byte, uid, gid uint32) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
}

// netDialer dials from local (an address of this machine).
func netDialer(local string) *net.Dialer {
	return &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
}

// posixACL is a system.posix_acl_access value (version 2): owner rw,
// named user uid r, group r, mask r, other none.
func posixACL(uid uint32) []byte {
	var b []byte
	le := func(v uint32, n int) {
		for i := range n {
			b = append(b, byte(v>>(8*i)))
		}
	}
	le(2, 4)
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{0x01, 6, 0xffffffff}, {0x02, 4, uid}, {0x04, 4, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 0, 0xffffffff}} {
		le(uint32(e.tag), 2)
		le(uint32(e.perm), 2)
		le(e.id, 4)
	}
	return b
}
