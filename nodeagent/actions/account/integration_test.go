package account_test

// Integration tests against the real useradd, usermod and userdel of this
// machine. They create real users, named validate.TestUserPrefix + a random
// suffix (a prefix validate.Username refuses for real accounts, which is why
// these tests call Apply directly: the agent calls Validate first and would
// refuse them), with homes and archives under a temporary prefix. Every user
// is removed by a cleanup registered before it is created, and TestMain
// compares the user database before and after the run.

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/account"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

var userFiles = []string{"/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"}

// created holds every user name this test binary generated.
var created sync.Map

func TestMain(m *testing.M) {
	before := snapshotUserDB()
	code := m.Run()
	if err := compareUserDB(before, snapshotUserDB()); err != nil {
		fmt.Fprintln(os.Stderr, "user database check:", err)
		code = 1
	}
	os.Exit(code)
}

// snapshotUserDB reads the user database as sets of lines per file; files
// this process cannot read (not root) are left out.
func snapshotUserDB() map[string]map[string]bool {
	snap := make(map[string]map[string]bool)
	for _, f := range userFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := make(map[string]bool)
		for l := range strings.SplitSeq(string(data), "\n") {
			lines[l] = true
		}
		snap[f] = lines
	}
	return snap
}

// compareUserDB fails on any line added for a user this binary created, and
// on any line removed that is not a test user's: the run must leave the host
// as it found it. Other added test-prefix lines are reported but not failed
// on, since another package's tests may be running at the same moment.
func compareUserDB(before, after map[string]map[string]bool) error {
	var errs []error
	for _, f := range userFiles {
		b, a := before[f], after[f]
		if b == nil || a == nil {
			continue
		}
		for l := range a {
			if b[l] {
				continue
			}
			name, _, _ := strings.Cut(l, ":")
			if _, ours := created.Load(name); ours {
				errs = append(errs, fmt.Errorf("%s: left behind: %q", f, l))
			} else if strings.HasPrefix(name, validate.TestUserPrefix) {
				fmt.Fprintf(os.Stderr, "user database check: %s gained %q (not created by this package)\n", f, name)
			}
		}
		for l := range b {
			name, _, _ := strings.Cut(l, ":")
			if !a[l] && !strings.HasPrefix(name, validate.TestUserPrefix) {
				errs = append(errs, fmt.Errorf("%s: removed or changed: %q", f, name))
			}
		}
	}
	return errors.Join(errs...)
}

// requireUserTools skips (fails in CI) without the shadow tools or root.
func requireUserTools(t testing.TB) {
	t.Helper()
	for _, bin := range []string{"/usr/sbin/useradd", "/usr/sbin/usermod", "/usr/sbin/userdel"} {
		testenv.RequireDaemon(t, bin)
	}
	if os.Geteuid() != 0 {
		if strings.EqualFold(os.Getenv("CI"), "true") {
			t.Fatal("account integration tests need root")
		}
		t.Skip("account integration tests need root")
	}
}

const nameAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// newUser returns a fresh test user name and registers its removal before
// anything creates it, so that a test failing at any point removes it.
func newUser(t testing.TB) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = nameAlphabet[int(b[i])%len(nameAlphabet)]
	}
	name := validate.TestUserPrefix + string(b[:])
	created.Store(name, true)
	t.Cleanup(func() { removeUser(t, name) })
	return name
}

// removeUser deletes name and its group, tolerating either being gone
// (exit status 6 from both tools).
func removeUser(t testing.TB, name string) {
	for _, argv := range [][]string{{"/usr/sbin/userdel", name}, {"/usr/sbin/groupdel", name}} {
		out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 6) {
			t.Errorf("cleanup %q: %v: %s", argv, err, out)
		}
	}
}

// run executes a command that sets up a test (never one under test).
func run(t testing.TB, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%q: %v: %s", argv, err, out)
	}
}

func setup(t testing.TB) (*platform.Profile, *actions.Env) {
	t.Helper()
	requireUserTools(t)
	p := platform.Debian12(t.TempDir())
	return p, &actions.Env{Node: "node-test", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), Profile: p}
}

func ensure(t testing.TB, env *actions.Env, a *account.Ensure, r *account.CountingRunner) *agentpb.AccountResult {
	t.Helper()
	out, err := account.WithRunner(a, r).Apply(context.Background(), env)
	if err != nil {
		t.Fatalf("ensure %+v: %v", a, err)
	}
	return out.(*agentpb.AccountResult)
}

func remove(t testing.TB, env *actions.Env, name string, r *account.CountingRunner) *agentpb.AccountResult {
	t.Helper()
	out, err := account.WithRunner(&account.Delete{Username: name}, r).Apply(context.Background(), env)
	if err != nil {
		t.Fatalf("delete %s: %v", name, err)
	}
	return out.(*agentpb.AccountResult)
}

// dbLine returns name's line of a user database file split into fields, or
// nil.
func dbLine(t testing.TB, file, name string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(data), "\n") {
		if strings.HasPrefix(l, name+":") {
			return strings.Split(l, ":")
		}
	}
	return nil
}

func wantCalls(t testing.TB, r *account.CountingRunner, want ...[]string) {
	t.Helper()
	got := r.Calls()
	if len(got) != len(want) {
		t.Fatalf("ran %d commands %q, want %q", len(got), got, want)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("command %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func wantDir(t testing.TB, path string, mode os.FileMode, uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm() != mode || st.Uid != uid || st.Gid != gid {
		t.Fatalf("%s: %v owned by %d:%d, want directory %v owned by %d:%d", path, fi.Mode(), st.Uid, st.Gid, mode, uid, gid)
	}
}

func TestEnsureCreatesUser(t *testing.T) {
	p, env := setup(t)
	name := newUser(t)
	r := &account.CountingRunner{}
	res := ensure(t, env, &account.Ensure{Username: name}, r)

	home := filepath.Join(p.HomeBase, name)
	wantCalls(t, r, []string{"/usr/sbin/useradd", "-M", "-d", home, "-s", "/usr/sbin/nologin", "-U", "-c", "npanel account", "-p", "*", name})
	if res.Username != name || res.Existed || res.Locked || res.Uid < p.MinUID || res.Home != home || res.Archive != "" {
		t.Fatalf("result %+v", res)
	}
	pw := dbLine(t, "/etc/passwd", name)
	if pw == nil || pw[2] != fmt.Sprint(res.Uid) || pw[3] != fmt.Sprint(res.Gid) || pw[4] != account.GECOSMarker || pw[5] != home || pw[6] != p.Nologin {
		t.Fatalf("passwd line %q", pw)
	}
	if gr := dbLine(t, "/etc/group", name); gr == nil || gr[2] != fmt.Sprint(res.Gid) {
		t.Fatalf("group line %q", gr)
	}
	if sh := dbLine(t, "/etc/shadow", name); sh == nil || sh[1] != "*" || sh[7] != "" {
		t.Fatalf("shadow line %q", sh)
	}
	wantDir(t, home, 0o711, res.Uid, res.Gid)
	wantDir(t, filepath.Join(home, "public_html"), 0o755, res.Uid, res.Gid)
	wantDir(t, filepath.Join(home, "logs"), 0o750, res.Uid, res.Gid)
	wantDir(t, filepath.Join(home, "tmp"), 0o700, res.Uid, res.Gid)
	if ents, _ := os.ReadDir(home); len(ents) != 3 {
		t.Fatalf("home holds %v, want the skeleton only", ents)
	}

	// The control plane reads the result as the protobuf message it is
	// sent as.
	raw, err := proto.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var msg agentpb.AccountResult
	if err := proto.Unmarshal(raw, &msg); err != nil {
		t.Fatalf("decode %x: %v", raw, err)
	}
	if msg.GetUsername() != name || msg.GetUid() != res.Uid || msg.GetHome() != home || msg.GetQuotaNote() != res.QuotaNote {
		t.Fatalf("decoded %v from %v", &msg, res)
	}
}

// An ensure that finds everything as requested runs no command, and one that
// finds the home drifted repairs it without any.
func TestEnsureIdempotent(t *testing.T) {
	p, env := setup(t)
	name := newUser(t)
	first := ensure(t, env, &account.Ensure{Username: name, DiskQuotaMB: 100}, nil)

	r := &account.CountingRunner{}
	again := ensure(t, env, &account.Ensure{Username: name, DiskQuotaMB: 100}, r)
	wantCalls(t, r)
	first.Existed = true
	if !reflect.DeepEqual(again, first) {
		t.Fatalf("second ensure %+v, first %+v", again, first)
	}

	home := filepath.Join(p.HomeBase, name)
	if err := os.Chmod(home, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(home, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(home, "tmp")); err != nil {
		t.Fatal(err)
	}
	// The account's own choices inside the home stay.
	if err := os.Chmod(filepath.Join(home, "public_html"), 0o750); err != nil {
		t.Fatal(err)
	}
	ensure(t, env, &account.Ensure{Username: name, DiskQuotaMB: 100}, r)
	wantCalls(t, r)
	wantDir(t, home, 0o711, first.Uid, first.Gid)
	wantDir(t, filepath.Join(home, "tmp"), 0o700, first.Uid, first.Gid)
	wantDir(t, filepath.Join(home, "public_html"), 0o750, first.Uid, first.Gid)
}

// Two ensures of one new account at once create it once.
func TestEnsureConcurrent(t *testing.T) {
	_, env := setup(t)
	name := newUser(t)
	r := &account.CountingRunner{}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := account.WithRunner(&account.Ensure{Username: name}, r).Apply(context.Background(), env)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if calls := r.Calls(); len(calls) != 1 {
		t.Fatalf("ran %q", calls)
	}
}

func TestSuspendUnsuspend(t *testing.T) {
	_, env := setup(t)
	name := newUser(t)
	r := &account.CountingRunner{}
	ensure(t, env, &account.Ensure{Username: name}, r)
	r.Calls()

	res := ensure(t, env, &account.Ensure{Username: name, Suspended: true}, r)
	wantCalls(t, r, []string{"/usr/sbin/usermod", "-L", "-e", "1", name})
	if !res.Locked {
		t.Fatalf("suspended result %+v", res)
	}
	// Password locked and account expired: the expiry is what stops
	// key-based logins.
	if sh := dbLine(t, "/etc/shadow", name); sh[1] != "!*" || sh[7] != "1" {
		t.Fatalf("suspended shadow line %q", sh)
	}
	ensure(t, env, &account.Ensure{Username: name, Suspended: true}, r)
	wantCalls(t, r)

	res = ensure(t, env, &account.Ensure{Username: name}, r)
	wantCalls(t, r, []string{"/usr/sbin/usermod", "-U", "-e", "", name})
	if res.Locked {
		t.Fatalf("unsuspended result %+v", res)
	}
	if sh := dbLine(t, "/etc/shadow", name); sh[1] != "*" || sh[7] != "" {
		t.Fatalf("unsuspended shadow line %q", sh)
	}
	ensure(t, env, &account.Ensure{Username: name}, r)
	wantCalls(t, r)

	// Drift: an expiry set by hand on an active account is cleared.
	run(t, "/usr/sbin/usermod", "-e", "2099-01-01", name)
	ensure(t, env, &account.Ensure{Username: name}, r)
	wantCalls(t, r, []string{"/usr/sbin/usermod", "-U", "-e", "", name})
}

func TestCreateSuspended(t *testing.T) {
	p, env := setup(t)
	name := newUser(t)
	r := &account.CountingRunner{}
	res := ensure(t, env, &account.Ensure{Username: name, Suspended: true}, r)
	if calls := r.Calls(); len(calls) != 2 || calls[0][0] != p.Useradd || calls[1][1] != "-L" {
		t.Fatalf("ran %q", calls)
	}
	if !res.Locked || res.Existed {
		t.Fatalf("result %+v", res)
	}
}

func TestQuotaNotApplied(t *testing.T) {
	_, env := setup(t)
	name := newUser(t)
	res := ensure(t, env, &account.Ensure{Username: name, DiskQuotaMB: 512}, nil)
	if res.QuotaApplied {
		// Only on a machine with quota tools and a quota-enabled /tmp.
		t.Skipf("quotas are supported here: %+v", res)
	}
	if res.QuotaNote == "" {
		t.Fatalf("no reason given for the missing quota: %+v", res)
	}
	t.Logf("quota note: %s", res.QuotaNote)
	if res := ensure(t, env, &account.Ensure{Username: name}, nil); res.QuotaApplied || res.QuotaNote != "no quota requested" {
		t.Fatalf("no quota: %+v", res)
	}
}

type entry struct {
	hdr  *tar.Header
	data string
}

func readArchive(t testing.TB, path string) map[string]entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := make(map[string]entry)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = entry{h, string(b)}
	}
}

func TestDeleteArchivesThenRemoves(t *testing.T) {
	p, env := setup(t)
	name := newUser(t)
	made := ensure(t, env, &account.Ensure{Username: name, Suspended: true}, nil)
	home := filepath.Join(p.HomeBase, name)
	index := filepath.Join(home, "public_html", "index.html")
	if err := os.WriteFile(index, []byte("<h1>hello</h1>"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(index, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(index, int(made.Uid), int(made.Gid)); err != nil {
		t.Fatal(err)
	}

	r := &account.CountingRunner{}
	res := remove(t, env, name, r)
	wantCalls(t, r, []string{"/usr/sbin/userdel", name})
	if !res.Existed || res.Uid != made.Uid || res.Home != home || filepath.Dir(res.Archive) != p.BackupDir ||
		!strings.HasPrefix(filepath.Base(res.Archive), name+"-") || !strings.HasSuffix(res.Archive, ".tar.gz") {
		t.Fatalf("result %+v", res)
	}

	ents := readArchive(t, res.Archive)
	for _, n := range []string{name + "/", name + "/public_html/", name + "/logs/", name + "/tmp/"} {
		if e, ok := ents[n]; !ok || e.hdr.Typeflag != tar.TypeDir || e.hdr.Uid != int(made.Uid) {
			t.Errorf("archive entry %s: %+v", n, e.hdr)
		}
	}
	e, ok := ents[name+"/public_html/index.html"]
	if !ok || e.data != "<h1>hello</h1>" || e.hdr.Mode != 0o640 || e.hdr.Uid != int(made.Uid) || e.hdr.Gid != int(made.Gid) || e.hdr.Uname != name {
		t.Fatalf("index.html in archive: %+v %q", e.hdr, e.data)
	}
	if ents[name+"/"].hdr.Mode != 0o711 {
		t.Errorf("home mode in archive %o", ents[name+"/"].hdr.Mode)
	}

	for _, f := range []string{"/etc/passwd", "/etc/shadow", "/etc/group"} {
		if l := dbLine(t, f, name); l != nil {
			t.Errorf("%s still has %q", f, l)
		}
	}
	if _, err := os.Lstat(home); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("home still there: %v", err)
	}

	again := remove(t, env, name, r)
	wantCalls(t, r)
	if again.Existed || again.Archive != "" {
		t.Fatalf("second delete %+v", again)
	}
}

// A user of the same name that nPanel did not create is never changed.
func TestUnmanagedUserRefused(t *testing.T) {
	p, env := setup(t)
	plain := newUser(t)
	system := newUser(t)
	elsewhere := newUser(t)
	run(t, "/usr/sbin/useradd", "-M", "-d", filepath.Join(p.HomeBase, plain), plain)
	// The marker alone does not make a system user (UID < MinUID) ours...
	run(t, "/usr/sbin/useradd", "-r", "-M", "-c", account.GECOSMarker, "-d", filepath.Join(p.HomeBase, system), system)
	// ...nor a user whose home is not where the profile puts it.
	run(t, "/usr/sbin/useradd", "-M", "-c", account.GECOSMarker, "-d", "/nonexistent/"+elsewhere, elsewhere)
	before := snapshotUserDB()

	r := &account.CountingRunner{}
	for _, tc := range []struct{ name, want string }{
		{plain, "exists and is not managed by npanel"},
		{system, "exists and is not managed by npanel"},
		{elsewhere, "has home /nonexistent/"},
	} {
		for _, act := range []actions.Action{
			account.WithRunner(&account.Ensure{Username: tc.name, Suspended: true}, r),
			account.WithRunner(&account.Delete{Username: tc.name}, r),
		} {
			_, err := act.Apply(context.Background(), env)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s %s: %v, want error containing %q", act.Name(), tc.name, err, tc.want)
			}
			if tc.want != "has home /nonexistent/" && !errors.Is(err, account.ErrNotManaged) {
				t.Errorf("%s %s: %v is not ErrNotManaged", act.Name(), tc.name, err)
			}
		}
	}
	wantCalls(t, r)
	if !reflect.DeepEqual(before, snapshotUserDB()) {
		t.Fatal("the user database changed")
	}
	if ents, _ := os.ReadDir(p.HomeBase); len(ents) != 0 {
		t.Fatalf("home base holds %v", ents)
	}
}

// A symlink in the home is archived as a symlink; the archiver never reads
// what it points to.
func TestDeleteSymlinkToEtc(t *testing.T) {
	p, env := setup(t)
	name := newUser(t)
	made := ensure(t, env, &account.Ensure{Username: name}, nil)
	home := filepath.Join(p.HomeBase, name)
	links := map[string]string{
		"etc":                "/etc",
		"public_html/shadow": "/etc/shadow",
		"tmp/up":             "../../../../../../../../../etc/shadow",
	}
	for l, target := range links {
		if err := os.Symlink(target, filepath.Join(home, l)); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(home, l), int(made.Uid), int(made.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	res := remove(t, env, name, nil)
	ents := readArchive(t, res.Archive)
	for l, target := range links {
		e, ok := ents[name+"/"+l]
		if !ok || e.hdr.Typeflag != tar.TypeSymlink || e.hdr.Linkname != target || e.data != "" {
			t.Errorf("%s: %+v", l, e.hdr)
		}
	}
	shadow, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	rootLine, _, _ := strings.Cut(string(shadow), "\n")
	for n, e := range ents {
		if strings.HasPrefix(n, name+"/etc/") || strings.Contains(e.data, rootLine) {
			t.Fatalf("archive holds %s read through a link", n)
		}
	}
	if len(ents) != 4+len(links) {
		t.Fatalf("archive has %d entries", len(ents))
	}
}

// A delete interrupted after userdel leaves a home without a user: a new
// account of the same name must not inherit it, and the next delete
// archives and removes it.
func TestOrphanedHome(t *testing.T) {
	p, env := setup(t)
	name := newUser(t)
	ensure(t, env, &account.Ensure{Username: name}, nil)
	home := filepath.Join(p.HomeBase, name)
	if err := os.WriteFile(filepath.Join(home, "public_html", "old.txt"), []byte("old customer"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "/usr/sbin/userdel", name)

	r := &account.CountingRunner{}
	_, err := account.WithRunner(&account.Ensure{Username: name}, r).Apply(context.Background(), env)
	if err == nil || !strings.Contains(err.Error(), "already exists without its user") {
		t.Fatalf("ensure over an orphaned home: %v", err)
	}
	wantCalls(t, r)

	res := remove(t, env, name, r)
	wantCalls(t, r)
	if res.Existed || res.Archive == "" {
		t.Fatalf("delete of orphaned home %+v", res)
	}
	if e, ok := readArchive(t, res.Archive)[name+"/public_html/old.txt"]; !ok || e.data != "old customer" {
		t.Fatalf("orphaned home not archived: %+v", e)
	}
	if _, err := os.Lstat(home); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("orphaned home still there: %v", err)
	}
	if res := ensure(t, env, &account.Ensure{Username: name}, nil); res.Existed {
		t.Fatalf("recreated %+v", res)
	}
	if _, err := os.Lstat(filepath.Join(home, "public_html", "old.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the new account got the old account's files")
	}
}

// If the archive cannot be written, nothing is deleted.
func TestDeleteArchiveFailure(t *testing.T) {
	p, env := setup(t)
	name := newUser(t)
	made := ensure(t, env, &account.Ensure{Username: name}, nil)
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p.BackupDir = filepath.Join(blocker, "backups")

	r := &account.CountingRunner{}
	_, err := account.WithRunner(&account.Delete{Username: name}, r).Apply(context.Background(), env)
	if err == nil || !strings.Contains(err.Error(), "nothing deleted") {
		t.Fatalf("delete = %v", err)
	}
	wantCalls(t, r)
	if dbLine(t, "/etc/passwd", name) == nil {
		t.Fatal("user deleted")
	}
	wantDir(t, filepath.Join(p.HomeBase, name, "public_html"), 0o755, made.Uid, made.Gid)
}

func BenchmarkEnsureNoop(b *testing.B) {
	_, env := setup(b)
	name := newUser(b)
	ensure(b, env, &account.Ensure{Username: name, DiskQuotaMB: 100}, nil)
	for b.Loop() {
		ensure(b, env, &account.Ensure{Username: name, DiskQuotaMB: 100}, nil)
	}
}

// BenchmarkEnsureCreateDelete reports the two halves separately too: the
// delete includes writing, syncing and verifying the home's archive.
func BenchmarkEnsureCreateDelete(b *testing.B) {
	_, env := setup(b)
	var create, del time.Duration
	for b.Loop() {
		name := newUser(b)
		t0 := time.Now()
		ensure(b, env, &account.Ensure{Username: name}, nil)
		t1 := time.Now()
		remove(b, env, name, nil)
		create, del = create+t1.Sub(t0), del+time.Since(t1)
	}
	b.ReportMetric(float64(create.Microseconds())/float64(b.N)/1000, "create-ms/op")
	b.ReportMetric(float64(del.Microseconds())/float64(b.N)/1000, "delete-ms/op")
}

// BenchmarkRawUseraddUserdel is the floor the two above are measured
// against: the same two tools run directly.
func BenchmarkRawUseraddUserdel(b *testing.B) {
	requireUserTools(b)
	dir := b.TempDir()
	for b.Loop() {
		name := newUser(b)
		run(b, "/usr/sbin/useradd", "-M", "-d", filepath.Join(dir, name), "-s", "/usr/sbin/nologin", "-U", name)
		run(b, "/usr/sbin/userdel", name)
	}
}

// A tool's refusal reaches the task's error with the tool's own words.
func TestEnsureReportsToolError(t *testing.T) {
	_, env := setup(t)
	name := newUser(t)
	run(t, "/usr/sbin/groupadd", name)
	_, err := (&account.Ensure{Username: name}).Apply(context.Background(), env)
	var ce *account.CommandError
	if !errors.As(err, &ce) || ce.Argv[0] != "/usr/sbin/useradd" || !strings.Contains(err.Error(), "group "+name+" exists") {
		t.Fatalf("ensure with a clashing group = %v", err)
	}
	t.Log(err)
}
