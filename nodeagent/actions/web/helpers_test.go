package web_test

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/internal/testenv/webd"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

// stack is a running nginx + PHP-FPM under a temporary prefix.
type stack struct {
	web  *web.Module
	env  *actions.Env
	m    *webd.Manager
	addr string
	// tlsAddr is nginx's HTTPS listener.
	tlsAddr string
}

// startStack runs Setup under a fresh prefix and starts its daemons by
// hand on a loopback port.
func startStack(t testing.TB) *stack {
	t.Helper()
	testenv.RequireDaemon(t, "/usr/sbin/nginx")
	testenv.RequireDaemon(t, "/usr/sbin/php-fpm8.2")
	if os.Geteuid() != 0 {
		t.Skip("needs root: nginx workers switch to www-data and pools to account users")
	}
	prefix := t.TempDir()
	// t.TempDir's directories are 0700; nginx's workers and the accounts'
	// PHP must pass through them to reach homes and sockets.
	for _, d := range []string{filepath.Dir(prefix), prefix} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := platform.Debian12(prefix)
	p.HTTPListen = testenv.FreeAddr(t)
	p.HTTPSListen = testenv.FreeAddr(t)
	m := webd.NewManager(t)
	env := &actions.Env{Node: "test", Logger: testenv.Logger(), Profile: p, Services: m}
	ctx := testenv.Context(t)
	mod := web.NewModule()
	specs, err := mod.Setup(ctx, env)
	if err != nil {
		t.Fatalf("setup: %v", err)
	}
	for _, s := range specs {
		if err := m.Ensure(ctx, s); err != nil {
			t.Fatalf("start %s: %v", s.Name, err)
		}
	}
	return &stack{web: mod, env: env, m: m, addr: p.HTTPListen, tlsAddr: p.HTTPSListen}
}

func randomName(t testing.TB) string {
	const letters = "abcdefghijklmnopqrstuvwxyz"
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "npt" + string(b[:])
}

// newUser creates a real Linux user named npt... with a home under the
// stack's HomeBase (0711, public_html, logs, tmp), removed at cleanup after
// its sites and pools.
func (s *stack) newUser(t testing.TB) web.Owner {
	t.Helper()
	name := randomName(t)
	home := filepath.Join(s.env.Profile.HomeBase, name)
	if err := os.MkdirAll(s.env.Profile.HomeBase, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.web.Remove(ctx, s.env, name); err != nil {
			t.Errorf("remove web of %s: %v", name, err)
		}
		if _, err := user.Lookup(name); err != nil {
			return
		}
		if out, err := exec.Command("/usr/sbin/userdel", "-f", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	out, err := exec.Command("/usr/sbin/useradd", "-M", "-d", home, "-s", "/usr/sbin/nologin", "-U", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{home, 0o711}, {home + "/public_html", 0o755}, {home + "/logs", 0o750}, {home + "/tmp", 0o700}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d.path, uid, gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	return web.Owner{Username: name, UID: uint32(uid), GID: uint32(gid), Home: home}
}

// fakeOwner is an account without a Linux user, for static sites only
// (nginx does not care who owns a static docroot): it lets benchmarks and
// batch tests have many accounts without useradd.
func (s *stack) fakeOwner(t testing.TB) web.Owner {
	t.Helper()
	name := randomName(t)
	home := filepath.Join(s.env.Profile.HomeBase, name)
	if err := os.MkdirAll(home, 0o711); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	if err := os.Chown(home, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	o := web.Owner{Username: name, UID: nobody, GID: nobody, Home: home}
	if err := os.Mkdir(filepath.Join(home, "public_html"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(home, "public_html"), nobody, nobody); err != nil {
		t.Fatal(err)
	}
	writeAs(t, o, "public_html/index.html", "ok")
	return o
}

// writeAs writes a file in the owner's home, owned by the owner.
func writeAs(t testing.TB, o web.Owner, rel, content string) {
	t.Helper()
	p := filepath.Join(o.Home, rel)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, int(o.UID), int(o.GID)); err != nil {
		t.Fatal(err)
	}
}

var client = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// get sends GET path to the stack's nginx with Host: host.
func (s *stack) get(t testing.TB, host, path string) (int, http.Header, string) {
	t.Helper()
	code, h, body, err := s.tryGet(host, path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	return code, h, body
}

func (s *stack) tryGet(host, path string) (int, http.Header, string, error) {
	req, err := http.NewRequest("GET", "http://"+s.addr+path, nil)
	if err != nil {
		return 0, nil, "", err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b), err
}

func (s *stack) ensure(t testing.TB, o web.Owner, spec *agentpb.WebSpec, suspended bool) *agentpb.WebResult {
	t.Helper()
	res, err := s.web.Ensure(testenv.Context(t), s.env, o, spec, suspended)
	if err != nil {
		t.Fatalf("ensure %s: %v", o.Username, err)
	}
	return res
}

func site(domain, docroot, php string, aliases ...string) *agentpb.Site {
	return &agentpb.Site{Domain: domain, Docroot: docroot, PhpVersion: php, Aliases: aliases}
}

func spec(sites ...*agentpb.Site) *agentpb.WebSpec { return &agentpb.WebSpec{Sites: sites} }

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// poolDir is the pool directory of PHP version v.
func (s *stack) poolDir(v string) string {
	for _, b := range s.env.Profile.Web().PHP {
		if b.Version == v {
			return b.PoolDir
		}
	}
	return ""
}

// dumpLogs logs nginx's and PHP-FPM's logs under the prefix, for failures.
func dumpLogs(t testing.TB, s *stack) {
	t.Helper()
	_ = filepath.Walk(s.env.Profile.Prefix, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > 0 && !strings.Contains(p, "/home/") {
			b, _ := os.ReadFile(p)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s:\n%s", p, b)
		}
		return nil
	})
}
