package web_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/protos/agentpb"
)

const phpPage = `<?php echo "hello-", PHP_MAJOR_VERSION, ".", PHP_MINOR_VERSION, " uid=", function_exists("posix_geteuid") ? posix_geteuid() : -1;`

func TestSitePHPAndIdempotency(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	writeAs(t, a, "public_html/index.php", phpPage)
	writeAs(t, a, "public_html/.env", "SECRET=1")

	sp := spec(site("npt-site.example.com", "public_html", "8.2", "www.npt-site.example.com"))
	res := s.ensure(t, a, sp, false)
	if !res.Changed || len(res.Sites) != 1 || res.Sites[0].State != web.StateActive || fmt.Sprint(res.PhpPools) != "[8.2]" {
		t.Fatalf("result %+v", res)
	}

	for _, host := range []string{"npt-site.example.com", "www.npt-site.example.com"} {
		code, h, body := s.get(t, host, "/")
		if code != 200 || !strings.HasPrefix(body, "hello-8.2") {
			dumpLogs(t, s)
			t.Fatalf("GET %s: %d %q", host, code, body)
		}
		if h.Get("X-Frame-Options") != "SAMEORIGIN" || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") == "" {
			t.Errorf("security headers missing: %v", h)
		}
	}
	if code, _, body := s.get(t, "npt-site.example.com", "/.env"); code != 403 || strings.Contains(body, "SECRET") {
		t.Errorf("dotfile: %d %q", code, body)
	}
	if err := os.Mkdir(filepath.Join(a.Home, "public_html/.well-known"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeAs(t, a, "public_html/.well-known/token", "challenge")
	if code, _, body := s.get(t, "npt-site.example.com", "/.well-known/token"); code != 200 || body != "challenge" {
		t.Errorf(".well-known: %d %q, want it served", code, body)
	}
	if code, _, _ := s.get(t, "unknown.example.org", "/"); code != 404 {
		t.Errorf("unknown host: %d, want 404", code)
	}
	if fi, err := os.Stat(filepath.Join(a.Home, "public_html")); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("docroot mode: %v %v", fi.Mode(), err)
	}
	if !exists(res.Sites[0].AccessLog) {
		t.Errorf("no per-domain access log %s", res.Sites[0].AccessLog)
	}

	// Identical spec: nothing written, nothing reloaded.
	nginxReloads, phpReloads := s.m.Reloads("nginx"), s.m.Reloads("php-fpm8.2")
	fi1, _ := os.Stat(res.Sites[0].Config)
	res2 := s.ensure(t, a, sp, false)
	fi2, _ := os.Stat(res.Sites[0].Config)
	if res2.Changed || len(res2.Reloaded) != 0 {
		t.Errorf("second ensure changed something: %+v", res2)
	}
	if s.m.Reloads("nginx") != nginxReloads || s.m.Reloads("php-fpm8.2") != phpReloads {
		t.Errorf("second ensure reloaded")
	}
	if !fi1.ModTime().Equal(fi2.ModTime()) || !os.SameFile(fi1, fi2) {
		t.Errorf("second ensure rewrote the vhost")
	}
}

func TestAddonDomainAndRedirect(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	writeAs(t, a, "public_html/index.html", "main site")
	sp := spec(site("npt-main.example.com", "public_html", ""))
	s.ensure(t, a, sp, false)

	sp.Sites = append(sp.Sites, site("npt-addon.example.net", "addon.example.net/public_html", ""),
		&agentpb.Site{Domain: "npt-old.example.net", RedirectTo: "https://npt-main.example.com/", RedirectCode: 308})
	res := s.ensure(t, a, sp, false)
	if len(res.Sites) != 3 || res.Sites[2].State != web.StateRedirect {
		t.Fatalf("result %+v", res)
	}
	fi, err := os.Stat(filepath.Join(a.Home, "addon.example.net/public_html"))
	if err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("addon docroot not created right: %v %v", fi, err)
	}
	writeAs(t, a, "addon.example.net/public_html/index.html", "addon site")
	if code, _, body := s.get(t, "npt-addon.example.net", "/"); code != 200 || body != "addon site" {
		t.Errorf("addon: %d %q", code, body)
	}
	if code, _, body := s.get(t, "npt-main.example.com", "/"); code != 200 || body != "main site" {
		t.Errorf("main: %d %q", code, body)
	}
	code, h, _ := s.get(t, "npt-old.example.net", "/a/b?c=d")
	if code != 308 || h.Get("Location") != "https://npt-main.example.com/a/b?c=d" {
		t.Errorf("redirect: %d %q", code, h.Get("Location"))
	}

	// Removing the add-on removes its vhost, not its files.
	sp.Sites = sp.Sites[:1]
	s.ensure(t, a, sp, false)
	if exists(res.Sites[1].Config) {
		t.Errorf("add-on vhost left behind")
	}
	if !exists(filepath.Join(a.Home, "addon.example.net/public_html/index.html")) {
		t.Errorf("add-on files deleted")
	}
	if code, _, _ := s.get(t, "npt-addon.example.net", "/"); code != 404 {
		t.Errorf("removed add-on still served: %d", code)
	}
}

func TestPHPVersionSwitch(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	writeAs(t, a, "public_html/index.php", phpPage)

	_, err := web.Ensure(testenv.Context(t), s.env, a, spec(site("npt-php.example.com", "public_html", "8.1")), false)
	if !errors.Is(err, web.ErrNotInstalled) || !strings.Contains(err.Error(), "PHP 8.1") || !strings.Contains(err.Error(), "installed: 8.2") {
		t.Fatalf("uninstalled version: %v", err)
	}

	// Static: PHP source is never handed out.
	s.ensure(t, a, spec(site("npt-php.example.com", "public_html", "")), false)
	if code, _, body := s.get(t, "npt-php.example.com", "/index.php"); code != 403 || strings.Contains(body, "<?php") {
		t.Errorf("static site served PHP: %d %q", code, body)
	}
	// To PHP.
	res := s.ensure(t, a, spec(site("npt-php.example.com", "public_html", "8.2")), false)
	if code, _, body := s.get(t, "npt-php.example.com", "/index.php"); code != 200 || !strings.HasPrefix(body, "hello-8.2") {
		t.Errorf("php site: %d %q", code, body)
	}
	pool := filepath.Join(s.poolDir("8.2"), "npanel-"+a.Username+".conf")
	if !exists(pool) {
		t.Fatalf("no pool %s (%+v)", pool, res)
	}
	// Back to static: the pool goes.
	s.ensure(t, a, spec(site("npt-php.example.com", "public_html", "")), false)
	if exists(pool) {
		t.Errorf("pool left after switching to static")
	}
	if code, _, _ := s.get(t, "npt-php.example.com", "/index.php"); code != 403 {
		t.Errorf("static again: %d", code)
	}
}

func TestSuspendUnsuspend(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	writeAs(t, a, "public_html/index.php", phpPage)
	sp := spec(site("npt-susp.example.com", "public_html", "8.2"))
	s.ensure(t, a, sp, false)
	if code, _, _ := s.get(t, "npt-susp.example.com", "/"); code != 200 {
		t.Fatalf("before: %d", code)
	}
	res := s.ensure(t, a, sp, true)
	if res.Sites[0].State != web.StateSuspended || len(res.PhpPools) != 0 {
		t.Errorf("result %+v", res)
	}
	code, _, body := s.get(t, "npt-susp.example.com", "/index.php")
	if code != 503 || !strings.Contains(body, "suspended") {
		t.Errorf("suspended: %d %q", code, body)
	}
	if !exists(filepath.Join(a.Home, "public_html/index.php")) {
		t.Errorf("suspension deleted site files")
	}
	s.ensure(t, a, sp, false)
	if code, _, body := s.get(t, "npt-susp.example.com", "/"); code != 200 || !strings.HasPrefix(body, "hello-8.2") {
		t.Errorf("unsuspended: %d %q", code, body)
	}
}

func TestBrokenConfigRolledBack(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	writeAs(t, a, "public_html/index.html", "good")
	good := site("npt-good.example.com", "public_html", "")
	res := s.ensure(t, a, spec(good), false)
	before, err := os.ReadFile(res.Sites[0].Config)
	if err != nil {
		t.Fatal(err)
	}
	reloads := s.m.Reloads("nginx")

	defer web.SetVhostExtra(func(d string) string {
		if strings.HasPrefix(d, "npt-bad") || d == "npt-good.example.com" {
			return "bogus_directive on;"
		}
		return ""
	})()
	// A new bad site next to a changed good one: both refused, the good
	// one's file back byte for byte, the new one gone.
	_, err = web.Ensure(testenv.Context(t), s.env, a, spec(site("npt-good.example.com", "public_html", "", "www.npt-good.example.com"),
		site("npt-bad.example.com", "public_html", "")), false)
	if err == nil || !strings.Contains(err.Error(), `unknown directive "bogus_directive"`) {
		t.Fatalf("want nginx's own message, got %v", err)
	}
	after, _ := os.ReadFile(res.Sites[0].Config)
	if string(after) != string(before) {
		t.Errorf("vhost not restored:\n%s", after)
	}
	if exists(filepath.Join(s.env.Profile.Web().VhostDir, "npanel-"+a.Username+"_npt-bad.example.com.conf")) {
		t.Errorf("new vhost of a refused change left behind")
	}
	if s.m.Reloads("nginx") != reloads {
		t.Errorf("refused change reloaded nginx")
	}
	if code, _, body := s.get(t, "npt-good.example.com", "/"); code != 200 || body != "good" {
		t.Errorf("old site no longer served: %d %q", code, body)
	}
	entries, _ := os.ReadDir(s.env.Profile.Web().VhostDir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}

	// In a batch of concurrent changes only the culprit fails.
	var owners []web.Owner
	for range 6 {
		owners = append(owners, s.fakeOwner(t))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(owners))
	for i, o := range owners {
		d := fmt.Sprintf("npt-batch%d.example.com", i)
		if i == 3 {
			d = "npt-bad3.example.com"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = web.Ensure(context.Background(), s.env, o, spec(site(d, "public_html", "")), false)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (err != nil) != (i == 3) {
			t.Errorf("batch member %d: %v", i, err)
		}
	}
	for i, o := range owners {
		if i != 3 {
			writeAs(t, o, "public_html/index.html", "batch")
			if code, _, _ := s.get(t, fmt.Sprintf("npt-batch%d.example.com", i), "/"); code != 200 {
				t.Errorf("batch site %d: %d", i, code)
			}
		}
	}
}

func TestDocrootTraversalAndSymlinks(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	for _, d := range []string{"../x", "/etc", "public_html/../../etc", "a//b", ".ssh", "public_html/", "a b", "a;b", "$x"} {
		if _, err := web.Ensure(testenv.Context(t), s.env, a, spec(site("npt-t.example.com", d, "")), false); err == nil {
			t.Errorf("docroot %q accepted", d)
		}
	}
	// Symlinks out of the home and inside it are refused, also on the way.
	if err := os.Symlink("/etc", filepath.Join(a.Home, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("public_html", filepath.Join(a.Home, "in")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"out", "out/nginx", "in", "in/sub"} {
		_, err := web.Ensure(testenv.Context(t), s.env, a, spec(site("npt-t.example.com", d, "")), false)
		if !errors.Is(err, web.ErrSymlink) {
			t.Errorf("docroot %q: %v, want ErrSymlink", d, err)
		}
	}
	if exists("/etc/nginx/sub") || exists(filepath.Join(a.Home, "public_html/sub")) {
		t.Errorf("a directory was created through a symlink")
	}
	if exists(filepath.Join(s.env.Profile.Web().VhostDir, "npanel-"+a.Username+"_npt-t.example.com.conf")) {
		t.Errorf("vhost written for a refused docroot")
	}
}

func TestAccountsIsolated(t *testing.T) {
	s := startStack(t)
	a, b := s.newUser(t), s.newUser(t)
	writeAs(t, b, "public_html/secret.txt", "topsecret")
	writeAs(t, a, "public_html/own.txt", "mine")
	writeAs(t, a, "public_html/read.php", `<?php $r = @file_get_contents($_GET["f"]); if ($r === false) { echo "DENIED: ", error_get_last()["message"] ?? ""; } else { echo "READ: ", $r; }`)
	s.ensure(t, a, spec(site("npt-a.example.com", "public_html", "8.2")), false)
	s.ensure(t, b, spec(site("npt-b.example.com", "public_html", "8.2")), false)

	secret := filepath.Join(b.Home, "public_html/secret.txt")
	if _, _, body := s.get(t, "npt-a.example.com", "/read.php?f="+filepath.Join(a.Home, "public_html/own.txt")); body != "READ: mine" {
		t.Fatalf("own file: %q", body)
	}
	if _, _, body := s.get(t, "npt-a.example.com", "/read.php?f="+secret); !strings.HasPrefix(body, "DENIED") || !strings.Contains(body, "Operation not permitted") {
		t.Errorf("open_basedir did not stop A: %q", body)
	}
	// open_basedir fails with EPERM ("Operation not permitted"), file
	// modes with EACCES ("Permission denied").
	// Without open_basedir the file modes still keep B's files from A.
	defer web.SetNoOpenBasedir(func(u string) bool { return u == a.Username })()
	s.ensure(t, a, spec(site("npt-a.example.com", "public_html", "8.2")), false)
	var body string
	testenv.WaitFor(t, 10*time.Second, "pool without open_basedir", func() bool {
		_, _, body = s.get(t, "npt-a.example.com", "/read.php?f="+secret)
		// Requests that meet PHP-FPM's reload answer 502; wait for PHP.
		answered := strings.HasPrefix(body, "DENIED") || strings.HasPrefix(body, "READ")
		return answered && !strings.Contains(body, "Operation not permitted")
	})
	if !strings.HasPrefix(body, "DENIED") || !strings.Contains(body, "Permission denied") {
		t.Errorf("file modes did not stop A: %q", body)
	}
	// But nginx, in the web server's group, serves B's file.
	if code, _, body := s.get(t, "npt-b.example.com", "/secret.txt"); code != 200 || body != "topsecret" {
		t.Errorf("nginx cannot read B's docroot: %d %q", code, body)
	}
}

func TestDomainOfAnotherAccountRefused(t *testing.T) {
	s := startStack(t)
	a, b := s.fakeOwner(t), s.fakeOwner(t)
	s.ensure(t, a, spec(site("npt-owned.example.com", "public_html", "")), false)
	_, err := web.Ensure(testenv.Context(t), s.env, b, spec(site("npt-other.example.com", "public_html", "", "npt-owned.example.com")), false)
	if err == nil || !strings.Contains(err.Error(), "already served by account "+a.Username) {
		t.Fatalf("want refusal, got %v", err)
	}
}

func TestRemove(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	writeAs(t, a, "public_html/index.php", phpPage)
	res := s.ensure(t, a, spec(site("npt-rm.example.com", "public_html", "8.2"), site("npt-rm2.example.com", "public_html", "")), false)
	if code, _, _ := s.get(t, "npt-rm.example.com", "/"); code != 200 {
		t.Fatalf("before: %d", code)
	}
	sock := web.SocketOfPool(mustRead(t, filepath.Join(s.poolDir("8.2"), "npanel-"+a.Username+".conf")))
	if err := web.Remove(testenv.Context(t), s.env, a.Username); err != nil {
		t.Fatal(err)
	}
	for _, st := range res.Sites {
		if exists(st.Config) {
			t.Errorf("%s left", st.Config)
		}
	}
	if exists(sock) {
		t.Errorf("pool socket %s left", sock)
	}
	if code, _, _ := s.get(t, "npt-rm.example.com", "/"); code != 404 {
		t.Errorf("removed site answers %d", code)
	}
	if !exists(filepath.Join(a.Home, "public_html/index.php")) {
		t.Errorf("Remove deleted the account's files")
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
