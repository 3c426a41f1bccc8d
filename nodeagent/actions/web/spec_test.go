package web

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestValidateSpec(t *testing.T) {
	s := func(sites ...*agentpb.Site) *agentpb.WebSpec { return &agentpb.WebSpec{Sites: sites} }
	site := func(d, root string) *agentpb.Site { return &agentpb.Site{Domain: d, Docroot: root} }
	tests := []struct {
		name    string
		user    string
		spec    *agentpb.WebSpec
		wantErr string
	}{
		{"nil spec", "alice", nil, ""},
		{"one site", "alice", s(site("example.com", "public_html")), ""},
		{"test user", "nptabc", s(site("example.com", "public_html")), ""},
		{"bad user", "Alice", s(site("example.com", "public_html")), "uppercase"},
		{"user with _", "a_b", nil, "_"},
		{"nested docroot", "alice", s(site("example.com", "sites/shop.example.com/public_html")), ""},
		{"php", "alice", s(&agentpb.Site{Domain: "example.com", Docroot: "public_html", PhpVersion: "8.2"}), ""},
		{"bad php", "alice", s(&agentpb.Site{Domain: "example.com", Docroot: "public_html", PhpVersion: "8.2;"}), "PHP version"},
		{"uppercase domain", "alice", s(site("Example.com", "public_html")), "canonical"},
		{"unicode domain", "alice", s(site("bücher.de", "public_html")), "canonical"},
		{"trailing dot", "alice", s(site("example.com.", "public_html")), "canonical"},
		{"injection in domain", "alice", s(site("example.com;include /etc/x", "public_html")), "domain"},
		{"dup domain", "alice", s(site("example.com", "a"), site("example.com", "b")), "both site"},
		{"dup alias", "alice", s(&agentpb.Site{Domain: "example.com", Docroot: "a", Aliases: []string{"www.example.com", "www.example.com"}}), "twice"},
		{"alias is other domain", "alice", s(site("example.com", "a"), &agentpb.Site{Domain: "example.net", Docroot: "a", Aliases: []string{"example.com"}}), "both site"},
		{"empty docroot", "alice", s(site("example.com", "")), "empty"},
		{"absolute docroot", "alice", s(site("example.com", "/etc")), "relative"},
		{"dotdot", "alice", s(site("example.com", "public_html/../../etc")), `".."`},
		{"dot", "alice", s(site("example.com", "./public_html")), `"."`},
		{"hidden", "alice", s(site("example.com", ".ssh")), "hidden"},
		{"trailing slash", "alice", s(site("example.com", "public_html/")), "empty path component"},
		{"space", "alice", s(site("example.com", "public html")), "not allowed"},
		{"semicolon", "alice", s(site("example.com", "a;b")), "not allowed"},
		{"dollar", "alice", s(site("example.com", "$document_root")), "not allowed"},
		{"newline", "alice", s(site("example.com", "a\nb")), "not allowed"},
		{"redirect", "alice", s(&agentpb.Site{Domain: "example.com", RedirectTo: "https://example.net/x", RedirectCode: 302}), ""},
		{"redirect with port", "alice", s(&agentpb.Site{Domain: "example.com", RedirectTo: "http://example.net:8080/"}), ""},
		{"redirect ftp", "alice", s(&agentpb.Site{Domain: "example.com", RedirectTo: "ftp://example.net/"}), "http"},
		{"redirect relative", "alice", s(&agentpb.Site{Domain: "example.com", RedirectTo: "/x"}), "http"},
		{"redirect query", "alice", s(&agentpb.Site{Domain: "example.com", RedirectTo: "https://example.net/?a=b"}), "query"},
		{"redirect quote", "alice", s(&agentpb.Site{Domain: "example.com", RedirectTo: `https://example.net/"; evil;`}), "not allowed"},
		{"redirect var", "alice", s(&agentpb.Site{Domain: "example.com", RedirectTo: "https://example.net/$host"}), "not allowed"},
		{"redirect user", "alice", s(&agentpb.Site{Domain: "example.com", RedirectTo: "https://u@example.net/"}), "user"},
		{"redirect bad code", "alice", s(&agentpb.Site{Domain: "example.com", RedirectTo: "https://example.net/", RedirectCode: 200}), "301"},
		{"code without target", "alice", s(&agentpb.Site{Domain: "example.com", Docroot: "a", RedirectCode: 301}), "redirect_to is empty"},
		{"too many children", "alice", &agentpb.WebSpec{Php: &agentpb.PHPPoolLimits{MaxChildren: 100000}}, "max_children"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateSpec(tt.user, tt.spec)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("accepted, want error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestListenArgs(t *testing.T) {
	for in, want := range map[string]string{":80": "80", "127.0.0.1:8080": "127.0.0.1:8080", "[::1]:80": "[::1]:80"} {
		got, err := listenArgs(in)
		if err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("listenArgs(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"80", "host:80", ":0", ":x", "1.2.3.4:99999"} {
		if _, err := listenArgs(bad); err == nil {
			t.Errorf("listenArgs(%q) accepted", bad)
		}
	}
}

func TestSafePath(t *testing.T) {
	if err := safePath("/tmp/Test123/001/home/alice"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"rel/x", "/a/../b", "/a b", "/a;b", "/a{b", "/a$b", "/a\"b", "/a\nb", "/a#b"} {
		if safePath(bad) == nil {
			t.Errorf("safePath(%q) accepted", bad)
		}
	}
}

func TestFileNames(t *testing.T) {
	u, d, ok := parseVhostName(vhostFile("alice", "shop.example.com"))
	if !ok || u != "alice" || d != "shop.example.com" {
		t.Errorf("vhost name round trip: %q %q %v", u, d, ok)
	}
	if u, ok := parsePoolName(poolFile("alice")); !ok || u != "alice" {
		t.Errorf("pool name round trip: %q %v", u, ok)
	}
	for _, n := range []string{"default.conf", "npanel-.conf", "npanel-Alice_x.conf", "npanel-alice_x.conf.bak"} {
		if _, _, ok := parseVhostName(n); ok {
			t.Errorf("parseVhostName(%q) accepted", n)
		}
	}
}

func TestRenderVhostShapes(t *testing.T) {
	w := platform.Debian12("/srv/np").Web()
	o := Owner{Username: "alice", UID: 1000, GID: 1000, Home: "/srv/np/home/alice"}
	php := &agentpb.Site{Domain: "example.com", Aliases: []string{"www.example.com"}, Docroot: "public_html", PhpVersion: "8.2"}
	sr, conf, err := renderSite(w, []string{"80"}, o, php, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"server_name example.com www.example.com;",
		"root /srv/np/home/alice/public_html;",
		"fastcgi_pass unix:/srv/np/run/php/npanel-alice-8.2.sock;",
		"access_log /srv/np/var/log/nginx/domains/alice/example.com.access.log npanel_json;",
		`add_header X-Frame-Options "SAMEORIGIN" always;`,
		"disable_symlinks if_not_owner",
	} {
		if !bytes.Contains(conf, []byte(want)) {
			t.Errorf("vhost lacks %q:\n%s", want, conf)
		}
	}
	if sr.Config != "/srv/np/etc/nginx/conf.d/npanel-alice_example.com.conf" {
		t.Errorf("config path %s", sr.Config)
	}
	_, conf, _ = renderSite(w, []string{"80"}, o, php, true)
	if bytes.Contains(conf, []byte("fastcgi_pass")) || bytes.Contains(conf, []byte("/home/alice")) || !bytes.Contains(conf, []byte("return 503")) {
		t.Errorf("suspended vhost:\n%s", conf)
	}
	_, conf, _ = renderSite(w, []string{"80"}, o, &agentpb.Site{Domain: "example.com", RedirectTo: "https://example.net/"}, false)
	if !bytes.Contains(conf, []byte(`return 301 "https://example.net$request_uri";`)) {
		t.Errorf("redirect vhost:\n%s", conf)
	}
	pool, err := renderPool(w, o, "8.2", &agentpb.PHPPoolLimits{MaxChildren: 9, MemoryLimitMb: 64})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"[alice]", "user = alice", "group = 1000", "listen.group = www-data", "listen.mode = 0660", "pm = ondemand", "pm.max_children = 9",
		"php_admin_value[memory_limit] = 64M", "php_admin_value[open_basedir] = /srv/np/home/alice/", "upload_tmp_dir] = /srv/np/home/alice/tmp"} {
		if !bytes.Contains(pool, []byte(want)) {
			t.Errorf("pool lacks %q:\n%s", want, pool)
		}
	}
	if got := socketOfPool(pool); got != "/srv/np/run/php/npanel-alice-8.2.sock" {
		t.Errorf("socketOfPool = %q", got)
	}
}

func TestWebPaths(t *testing.T) {
	d := platform.Debian12("").Web()
	if d.Supervised || d.VhostDir != "/etc/nginx/conf.d" || d.WebUser != "www-data" || d.NginxUnit != "nginx.service" {
		t.Errorf("debian12: %+v", d)
	}
	var found bool
	for _, b := range d.PHP {
		if b.Version == "8.2" {
			found = b.Binary == "/usr/sbin/php-fpm8.2" && b.PoolDir == "/etc/php/8.2/fpm/pool.d" && b.Unit == "php8.2-fpm.service"
		}
	}
	if !found {
		t.Errorf("debian12 PHP 8.2 paths wrong: %+v", d.PHP)
	}
	a := platform.Alma9("").Web()
	if a.VhostDir != "/etc/nginx/conf.d" || a.WebUser != "nginx" || a.PHP[0].Binary != "/usr/sbin/php-fpm" || a.PHP[0].PoolDir != "/etc/php-fpm.d" || a.PHP[0].Unit != "php-fpm.service" {
		t.Errorf("alma9: %+v", a)
	}
	p := platform.Debian12("/x").Web()
	if !p.Supervised || p.VhostDir != "/x/etc/nginx/conf.d" || p.Nginx != "/usr/sbin/nginx" || p.NginxPrefix != "/x/etc/nginx/" {
		t.Errorf("prefixed: %+v", p)
	}
}

// structural counts the bytes that give nginx and ini files structure.
func structural(b []byte) map[byte]int {
	m := make(map[byte]int)
	for _, c := range b {
		if strings.IndexByte(";{}\n\"'$#\\\r\t", c) >= 0 {
			m[c]++
		}
	}
	return m
}

func sameCounts(a, b map[byte]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// FuzzValidateSpec: whatever passes ValidateSpec renders a server block
// with exactly the structure of the same site made of benign values, so no
// user-supplied field can add a directive, block, quote or variable.
func FuzzValidateSpec(f *testing.F) {
	f.Add("example.com", "www.example.com", "public_html", "8.2", "", uint32(0), false)
	f.Add("shop.example.co.uk", "", "sites/shop/public_html", "", "", uint32(0), true)
	f.Add("example.com", "", "", "", "https://example.net/new/", uint32(308), false)
	f.Add("example.com;", "a.example.com", "x;y", "8.2\n", "https://example.net/\"", uint32(301), false)
	f.Add("xn--bcher-kva.de", "", "a/../b", "", "http://example.net:8080/$host", uint32(302), false)
	w := platform.Debian12("/srv/np").Web()
	o := Owner{Username: "alice", UID: 1000, GID: 1000, Home: "/srv/np/home/alice"}
	f.Fuzz(func(t *testing.T, domain, alias, docroot, php, redirect string, code uint32, suspended bool) {
		s := &agentpb.Site{Domain: domain, Docroot: docroot, PhpVersion: php, RedirectTo: redirect, RedirectCode: code}
		if alias != "" {
			s.Aliases = []string{alias}
		}
		if ValidateSpec("alice", &agentpb.WebSpec{Sites: []*agentpb.Site{s}}) != nil {
			return
		}
		_, conf, err := renderSite(w, []string{"80"}, o, s, suspended)
		if err != nil {
			t.Fatalf("valid spec does not render: %v", err)
		}
		ref := &agentpb.Site{Domain: "a.example.com", RedirectCode: code}
		if alias != "" {
			ref.Aliases = []string{"b.example.com"}
		}
		if docroot != "" {
			ref.Docroot = "public_html"
		}
		if php != "" {
			ref.PhpVersion = "8.2"
		}
		if redirect != "" {
			ref.RedirectTo = "https://example.net/x"
		}
		_, want, err := renderSite(w, []string{"80"}, o, ref, suspended)
		if err != nil {
			t.Fatal(err)
		}
		if !sameCounts(structural(conf), structural(want)) {
			t.Fatalf("user input changed the structure of the server block:\n%s", conf)
		}
		if php != "" {
			pool, err := renderPool(w, o, php, nil)
			if err != nil {
				t.Fatal(err)
			}
			wantPool, _ := renderPool(w, o, "8.2", nil)
			if !sameCounts(structural(pool), structural(wantPool)) {
				t.Fatalf("user input changed the structure of the pool:\n%s", pool)
			}
		}
	})
}

// TestPoolDisablesExec: a pool without allow_exec lists every process
// function in an admin value (so neither ini_set nor .user.ini lifts it);
// with allow_exec it lists none.
func TestPoolDisablesExec(t *testing.T) {
	w := platform.Debian12("/srv/p").Web()
	o := Owner{Username: "alice", UID: 1001, GID: 1001, Home: "/srv/p/home/alice"}
	conf, err := renderPool(w, o, "8.2", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "\nphp_admin_value[disable_functions] = exec,passthru,shell_exec,system,proc_open,popen,pcntl_exec,putenv\n"
	if !strings.Contains(string(conf), want) {
		t.Errorf("default pool lacks %q:\n%s", want, conf)
	}
	conf, err = renderPool(w, o, "8.2", &agentpb.PHPPoolLimits{AllowExec: true})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(conf), "disable_functions") {
		t.Errorf("allow_exec pool disables functions:\n%s", conf)
	}
}

// TestCloseOldPools: at the agent's start, pools an older agent wrote
// (no disable_functions, no allowExec mark) lose the exec functions;
// pools rendered from a plan keep what the plan said.
func TestCloseOldPools(t *testing.T) {
	dir := t.TempDir()
	w := platform.Debian12("/srv/p").Web()
	o := Owner{Username: "alice", UID: 1001, GID: 1001, Home: "/srv/p/home/alice"}
	allowed, err := renderPool(w, o, "8.2", &agentpb.PHPPoolLimits{AllowExec: true})
	if err != nil {
		t.Fatal(err)
	}
	closed, err := renderPool(w, o, "8.2", nil)
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Replace(allowed, []byte(allowExecMark+"\n"), nil, 1)
	files := map[string][]byte{
		"npanel-old.conf": old, "npanel-allowed.conf": allowed, "npanel-closed.conf": closed, "www.conf": old,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	changed, err := closeOldPools(dir)
	if err != nil || !changed {
		t.Fatalf("closeOldPools: %v, %v", changed, err)
	}
	line := "\nphp_admin_value[disable_functions] = " + strings.Join(ExecFunctions, ",") + "\n"
	for name, want := range map[string]string{
		"npanel-old.conf": string(old) + line[1:], "npanel-allowed.conf": string(allowed),
		"npanel-closed.conf": string(closed), "www.conf": string(old),
	} {
		got, _ := os.ReadFile(filepath.Join(dir, name))
		if string(got) != want {
			t.Errorf("%s:\n%s\nwant\n%s", name, got, want)
		}
	}
	if changed, err := closeOldPools(dir); err != nil || changed {
		t.Errorf("second run: %v, %v; want nothing changed", changed, err)
	}
}
