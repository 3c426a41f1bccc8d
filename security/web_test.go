package security

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// Files the fixture puts in the accounts' homes (see writeSites).
const (
	a1Index  = "a1-index-page"
	b1Index  = "b1-index-page"
	b1Secret = "b1-private-secret"
	a1Env    = "A1_ENV_SECRET"
	a1Git    = "A1_GIT_SECRET"
)

// probePHP is a1's script an attacker controls: it tries op on path p and
// prints GOT:<result> or DENIED.
const probePHP = `<?php
set_error_handler(function () { return true; });
$op = $_GET['op'] ?? ''; $p = $_GET['p'] ?? '';
$r = false;
switch ($op) {
case 'read': $r = file_get_contents($p); break;
case 'list': $l = scandir($p); $r = $l === false ? false : implode(',', $l); break;
case 'write': $r = file_put_contents($p, 'pwned') === false ? false : 'written'; break;
case 'symlink': @unlink(__DIR__ . '/plnk'); $r = symlink($p, __DIR__ . '/plnk') ? 'linked' : false; break;
case 'include': ob_start(); $ok = include($p); $out = ob_get_clean(); $r = $ok === false ? false : $out; break;
case 'glob': $g = glob($p); $r = empty($g) ? false : implode(',', $g); break;
case 'exists': $r = file_exists($p) ? 'yes' : false; break;
case 'loosen': ini_set('open_basedir', '/'); $r = file_get_contents($p); break;
case 'dotdot':
	// The classic open_basedir escape: tighten to "..", then climb.
	@mkdir(__DIR__ . '/dd'); chdir(__DIR__ . '/dd'); ini_set('open_basedir', '..');
	for ($i = 0; $i < 12; $i++) { chdir('..'); }
	ini_set('open_basedir', '/'); $r = file_get_contents($p); break;
case 'proxy': $r = 'proxy=' . getenv('HTTP_PROXY'); break;
case 'whoami': $r = posix_geteuid() . ':' . posix_getpwuid(posix_geteuid())['name']; break;
}
echo $r === false ? 'DENIED' : 'GOT:' . $r;
`

func (c *cluster) writeSites(t *testing.T) {
	t.Helper()
	writeOwned(t, c.a1, "public_html/index.html", a1Index, 0o644)
	writeOwned(t, c.a1, "public_html/probe.php", probePHP, 0o644)
	writeOwned(t, c.a1, "public_html/.env", a1Env, 0o644)
	writeOwned(t, c.a1, "public_html/.git/config", a1Git, 0o644)
	writeOwned(t, c.a1, "public_html/.htpasswd", "admin:"+a1Env, 0o644)
	writeOwned(t, c.a1, "public_html/upload.jpg", "<?php echo 'EXEC'.'UTED';", 0o644)
	writeOwned(t, c.b1, "public_html/index.html", b1Index, 0o644)
	writeOwned(t, c.b1, "public_html/b.php", "<?php echo 'B'.'RAN';", 0o644)
	writeOwned(t, c.b1, "private.txt", b1Secret, 0o600)
	testenv.WaitFor(t, 60*time.Second, "a1's and b1's sites served", func() bool {
		code1, body1, _ := c.get(c.a1.Domain, "/")
		code2, body2, _ := c.get(c.b1.Domain, "/")
		return code1 == 200 && body1 == a1Index && code2 == 200 && body2 == b1Index
	})
	testenv.WaitFor(t, 30*time.Second, "a1's PHP", func() bool {
		_, body, _ := c.get(c.a1.Domain, "/probe.php?op=whoami")
		return strings.HasPrefix(body, "GOT:")
	})
}

// get fetches path from node-a's nginx with the given Host header, without
// following redirects. path is sent as is, unnormalised.
func (c *cluster) get(host, path string, hdr ...string) (int, string, http.Header) {
	return rawHTTP(c.http, host, path, hdr...)
}

func rawHTTP(addr, host, path string, hdr ...string) (int, string, http.Header) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return 0, err.Error(), nil
	}
	req.URL.Opaque = path // keep ../ and %2e as the attacker wrote them
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	hc := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), resp.Header
}

// rawRequest writes a request line and headers verbatim to nginx, for
// what net/http refuses to send.
func rawRequest(t *testing.T, addr, req string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(io.LimitReader(conn, 1<<20))
	return string(b)
}

// probe runs a1's probe.php and returns its answer.
func (c *cluster) probe(t *testing.T, op, p string) string {
	t.Helper()
	// A change of another account reloads PHP-FPM, and a request in that
	// moment gets 502: retry until the script itself answers.
	var code int
	var body string
	testenv.WaitFor(t, 30*time.Second, "probe "+op+" answered", func() bool {
		code, body, _ = c.get(c.a1.Domain, "/probe.php?op="+op+"&p="+url.QueryEscape(p))
		return code != http.StatusBadGateway && code != http.StatusServiceUnavailable
	})
	if code != 200 {
		t.Fatalf("probe %s %s: HTTP %d %q", op, p, code, body)
	}
	return body
}

// phpDenied is a vector in which a1's PHP tries op on a path outside its
// home; the script must print DENIED.
func phpDenied(name, op string, path func(c *cluster) string) vector {
	return vector{name: "php " + name, attempt: "a1's PHP (" + op + ") on " + name,
		refusal: "refused by open_basedir and file modes: the script gets false",
		run: func(t *testing.T, c *cluster) {
			p := path(c)
			if got := c.probe(t, op, p); got != "DENIED" {
				t.Fatalf("%s %s: %.300q", op, p, got)
			}
		}}
}

// nginxRefuses is a vector fetching path from host: the answer must not
// be 200 and must not carry any of the secrets.
func nginxRefuses(name, attempt string, host func(c *cluster) string, path string, setup func(t *testing.T, c *cluster)) vector {
	return vector{name: "nginx " + name, attempt: attempt,
		refusal: "no 200 and none of another owner's or a hidden file's content in the answer",
		run: func(t *testing.T, c *cluster) {
			if setup != nil {
				setup(t, c)
			}
			code, body, _ := c.get(host(c), strings.ReplaceAll(path, "OTHER", c.b1.Username))
			for _, secret := range []string{b1Secret, b1Index, a1Env, a1Git, "root:x:0:0", "BEGIN", "EXECUTED", "BRAN"} {
				if strings.Contains(body, secret) {
					t.Fatalf("GET %s: HTTP %d leaks %q: %.200q", path, code, secret, body)
				}
			}
			if code == 200 {
				t.Fatalf("GET %s: HTTP 200 %.200q", path, body)
			}
		}}
}

// waitDomain waits until the node has applied the latest change of domain.
func (c *cluster) waitDomain(t *testing.T, tn *tenant, domain, state string) {
	t.Helper()
	testenv.WaitFor(t, 30*time.Second, domain+" "+state, func() bool {
		ds, err := c.admin.Domains(context.Background(), tn.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			if d.Name == domain {
				return d.State == state
			}
		}
		return false
	})
}

// webState is what a refused web change must leave as it was.
func (c *cluster) webState(t *testing.T, tn *tenant) []client.Domain {
	t.Helper()
	ds, err := c.admin.Domains(context.Background(), tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ds {
		ds[i].State, ds[i].Reason = "", nil // the node's progress, not the request's effect
	}
	return ds
}

func webRefused(name, attempt string, codes []string, call func(c *cluster) error) vector {
	return vector{name: name, attempt: attempt, refusal: strings.Join(codes, " or ") + "; the account's domains are unchanged",
		run: func(t *testing.T, c *cluster) {
			unchanged(t, "a1's and b1's domains", func() [][]client.Domain {
				return [][]client.Domain{c.webState(t, c.a1), c.webState(t, c.b1)}
			}, func() { wantCode(t, name, call(c), codes...) })
		}}
}

func webVectors() []vector {
	ctx := context.Background()
	inv := []string{"INVALID_INPUT"}
	var vs []vector

	// --- document roots -----------------------------------------------------
	for _, d := range []struct{ name, root string }{
		{"parent", "../"},
		{"parent of parent", "../../etc"},
		{"absolute /etc", "/etc"},
		{"absolute other home", "/home/other/public_html"},
		{"traversal inside", "public_html/../../x"},
		{"other account's home", "../OTHER/public_html"},
		{"tilde", "~root"},
		{"dot", "."},
		{"dot segment", "a/./b"},
		{"double slash", "a//b"},
		{"trailing traversal", "public_html/.."},
		{"encoded traversal", "%2e%2e/%2e%2e"},
		{"backslash traversal", `..\..\etc`},
		{"NUL", "public_html\x00/../../etc"},
		{"newline directive", "public_html;\n    root /etc"},
		{"semicolon directive", "x; root /"},
		{"brace", "x}server{"},
		{"dollar variable", "$document_root"},
		{"space", "my site"},
		{"quote", `x"y`},
		{"overlong", strings.Repeat("a/", 3000)},
	} {
		vs = append(vs, webRefused("docroot "+d.name, "addDomain with docroot "+truncate(d.root), inv, func(c *cluster) error {
			root := strings.ReplaceAll(d.root, "OTHER", c.b1.Username)
			_, err := c.a1.owner.AddDomain(ctx, c.a1.ID, "docroot-"+c.a1.Username+".example.net", root)
			return err
		}))
	}

	// --- domain names carrying nginx syntax -------------------------------
	for _, d := range []struct{ name, domain string }{
		{"semicolon", "a.example.net;include /etc/passwd"},
		{"open brace", "a.example.net{"},
		{"close brace", "a.example.net}server{listen 81"},
		{"newline", "a.example.net\nlisten 8081"},
		{"dollar", "$host.example.net"},
		{"wildcard", "*.example.net"},
		{"regex server name", "~^(?<x>.+)$"},
		{"default catch-all", "_"},
		{"space", "a.example.net b.example.net"},
		{"hash comment", "a.example.net#x"},
		{"quote", `a.example.net"`},
		{"IP address", "127.0.0.1"},
		{"localhost", "localhost"},
		{"single label", "intranet"},
		{"empty label", "a..example.net"},
		{"leading hyphen", "-a.example.net"},
		{"overlong label", strings.Repeat("a", 64) + ".example.net"},
		{"overlong name", strings.Repeat("abcdefghi.", 30) + "net"},
		{"bad punycode", "xn--zz.example.net"},
		{"mixed-script homoglyph", "pаypal.example.net"}, // Cyrillic а
		{"RTL override", "a\u202e.example.net"},
		{"zero-width joiner", "pay\u200dpal.example.net"},
		{"NUL", "a.example.net\x00.evil"},
		{"percent", "a%2e.example.net"},
		{"underscore", "a_b.example.net"},
	} {
		vs = append(vs, webRefused("domain "+d.name, "addDomain "+truncate(d.domain), inv, func(c *cluster) error {
			_, err := c.a1.owner.AddDomain(ctx, c.a1.ID, d.domain, "")
			return err
		}))
	}
	vs = append(vs,
		webRefused("domain of another tenant", "a1's owner adds b1's primary domain to its account", []string{"CONFLICT"}, func(c *cluster) error {
			_, err := c.a1.owner.AddDomain(ctx, c.a1.ID, c.b1.Domain, "")
			return err
		}),
		webRefused("domain of another tenant in upper case", "a1's owner adds b1's domain spelt in capitals", []string{"CONFLICT"}, func(c *cluster) error {
			_, err := c.a1.owner.AddDomain(ctx, c.a1.ID, strings.ToUpper(c.b1.Domain), "")
			return err
		}),
		webRefused("domain of another tenant with trailing dot", "a1's owner adds b1's domain with a trailing dot", []string{"CONFLICT", "INVALID_INPUT"}, func(c *cluster) error {
			_, err := c.a1.owner.AddDomain(ctx, c.a1.ID, c.b1.Domain+".", "")
			return err
		}),
		webRefused("www alias of another tenant", "a1's owner adds www.<b1's domain>, the alias b1's site already answers", []string{"CONFLICT", "INVALID_INPUT"}, func(c *cluster) error {
			_, err := c.a1.owner.AddDomain(ctx, c.a1.ID, "www."+c.b1.Domain, "")
			return err
		}),
		webRefused("add domain on another account", "a1's owner calls addDomain with b1's account id", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.AddDomain(ctx, c.b1.ID, "onb1-"+c.a1.Username+".example.net", "")
			return err
		}),
		webRefused("remove another tenant's domain", "a1's owner removes b1's primary domain through its own account id", []string{"NOT_FOUND", "FORBIDDEN", "INVALID_INPUT"}, func(c *cluster) error {
			return c.a1.owner.RemoveDomain(ctx, c.a1.ID, c.b1.Domain)
		}),
		webRefused("remove domain on another account", "a1's owner removes b1's domain by b1's account id", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			return c.a1.owner.RemoveDomain(ctx, c.b1.ID, c.b1.Domain)
		}),
		webRefused("remove own primary domain", "a1's owner removes its account's primary domain", []string{"INVALID_INPUT", "FORBIDDEN"}, func(c *cluster) error {
			return c.a1.owner.RemoveDomain(ctx, c.a1.ID, c.a1.Domain)
		}),
		webRefused("reseller adds domain to other reseller's account", "reseller A calls addDomain on b1", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.resA.AddDomain(ctx, c.b1.ID, "resa-on-b1.example.net", "")
			return err
		}),
	)

	// --- PHP versions -----------------------------------------------------------
	for _, v := range []struct{ name, version string }{
		{"outside the plan", "7.4"},
		{"unknown", "99.9"},
		{"traversal", "../8.2"},
		{"semicolon", "8.2;"},
		{"newline", "8.2\nuser = root"},
		{"trailing space", "8.2 "},
		{"major only", "8"},
		{"NUL", "8.2\x00"},
		{"pool name injection", "8.2]\n[root"},
		{"overlong", strings.Repeat("8", 300)},
	} {
		vs = append(vs, webRefused("php version "+v.name, "setPHPVersion "+truncate(v.version)+" on a1's domain", inv, func(c *cluster) error {
			_, err := c.a1.owner.SetPHPVersion(ctx, c.a1.ID, c.a1.Domain, v.version)
			return err
		}))
	}
	vs = append(vs, webRefused("php version of another tenant's domain", "a1's owner sets b1's domain to static", []string{"NOT_FOUND", "FORBIDDEN", "INVALID_INPUT"}, func(c *cluster) error {
		_, err := c.a1.owner.SetPHPVersion(ctx, c.a1.ID, c.b1.Domain, "")
		return err
	}))

	// --- redirects --------------------------------------------------------------
	for _, r := range []struct {
		name, to string
		code     int
	}{
		{"CRLF header injection", "https://x.example/\r\nSet-Cookie: a=b", 301},
		{"LF header injection", "https://x.example/\nX-Evil: 1", 301},
		{"javascript scheme", "javascript:alert(1)", 301},
		{"data scheme", "data:text/html,<script>x</script>", 301},
		{"file scheme", "file:///etc/passwd", 301},
		{"protocol-relative", "//evil.example/", 301},
		{"relative path", "/elsewhere", 301},
		{"nginx variable", "https://x.example/$document_root", 301},
		{"quote breaking the return", `https://x.example/";return 200 "owned`, 301},
		{"brace", "https://x.example/}", 301},
		{"space", "https://x.example/a b", 301},
		{"NUL", "https://x.example/\x00", 301},
		{"userinfo", "https://user:pass@x.example/", 301},
		{"overlong", "https://x.example/" + strings.Repeat("a", 10000), 301},
		{"status 200", "https://x.example/", 200},
		{"status 404", "https://x.example/", 404},
		{"status 0", "https://x.example/", 0},
	} {
		vs = append(vs, webRefused("redirect "+r.name, "setRedirect of a1's domain to "+truncate(r.to), inv, func(c *cluster) error {
			_, err := c.a1.owner.SetRedirect(ctx, c.a1.Domain, r.to, r.code)
			return err
		}))
	}
	vs = append(vs,
		webRefused("redirect of another tenant's domain", "a1's owner redirects b1's domain", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.a1.owner.SetRedirect(ctx, c.b1.Domain, "https://evil.example.com/", 301)
			return err
		}),
		webRefused("reseller redirects other reseller's domain", "reseller A redirects b1's domain", []string{"NOT_FOUND", "FORBIDDEN"}, func(c *cluster) error {
			_, err := c.resA.SetRedirect(ctx, c.b1.Domain, "https://evil.example.com/", 301)
			return err
		}),
		vector{name: "redirect request URI response splitting", attempt: "GET /%0d%0aSet-Cookie:%20evil=1 on a redirecting domain",
			refusal: "the Location header carries the URI encoded; no Set-Cookie header appears",
			run: func(t *testing.T, c *cluster) {
				if _, err := c.resA.SetRedirect(ctx, c.a2.Domain, "https://target.example.com", 302); err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := c.resA.Do(ctx, `mutation($d:String!){setRedirect(domain:$d,to:null){name}}`, map[string]any{"d": c.a2.Domain}, nil); err != nil {
						t.Error(err)
					}
					c.waitDomain(t, c.a2, c.a2.Domain, "ACTIVE")
				}()
				testenv.WaitFor(t, 30*time.Second, "redirect served", func() bool {
					code, _, _ := c.get(c.a2.Domain, "/")
					return code == 302
				})
				code, _, h := c.get(c.a2.Domain, "/%0d%0aSet-Cookie:%20evil=1")
				if code != 302 || h.Get("Set-Cookie") != "" || strings.ContainsAny(h.Get("Location"), "\r\n") {
					t.Fatalf("HTTP %d headers %v", code, h)
				}
			}},
	)

	// --- nginx: hidden files, traversal, symlinks, other tenants -----------
	a1 := func(c *cluster) string { return c.a1.Domain }
	link := func(rel string, target func(c *cluster) string) func(t *testing.T, c *cluster) {
		return func(t *testing.T, c *cluster) { symlinkOwned(t, c.a1, "public_html/"+rel, target(c)) }
	}
	vs = append(vs,
		nginxRefuses(".env", "GET /.env on a1's site", a1, "/.env", nil),
		nginxRefuses(".git config", "GET /.git/config on a1's site", a1, "/.git/config", nil),
		nginxRefuses(".git directory", "GET /.git/ on a1's site", a1, "/.git/", nil),
		nginxRefuses(".htpasswd", "GET /.htpasswd on a1's site", a1, "/.htpasswd", nil),
		nginxRefuses("hidden file via well-known", "GET /.well-known/../.env", a1, "/.well-known/../.env", nil),
		nginxRefuses("encoded hidden file", "GET /%2eenv", a1, "/%2eenv", nil),
		nginxRefuses("traversal", "GET /../../../../etc/passwd", a1, "/../../../../etc/passwd", nil),
		nginxRefuses("encoded traversal", "GET /%2e%2e/%2e%2e/%2e%2e/etc/passwd", a1, "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", nil),
		nginxRefuses("encoded slash traversal", "GET /..%2f..%2f..%2fetc%2fpasswd", a1, "/..%2f..%2f..%2fetc%2fpasswd", nil),
		nginxRefuses("traversal into other home", "GET /../../<b1>/private.txt on a1's site", a1, "/../../OTHER/private.txt", nil),
		nginxRefuses("symlink to /etc/passwd", "a1 symlinks public_html/passwd.txt to /etc/passwd and fetches it", a1, "/passwd.txt",
			link("passwd.txt", func(*cluster) string { return "/etc/passwd" })),
		nginxRefuses("symlink to other home's file", "a1 symlinks public_html/b.txt to b1's public_html/index.html", a1, "/b.txt",
			link("b.txt", func(c *cluster) string { return filepath.Join(c.b1.home, "public_html/index.html") })),
		nginxRefuses("symlink to other home's private file", "a1 symlinks public_html/p.txt to b1's private.txt", a1, "/p.txt",
			link("p.txt", func(c *cluster) string { return filepath.Join(c.b1.home, "private.txt") })),
		nginxRefuses("symlink to other home directory", "a1 symlinks public_html/bdir to b1's public_html and fetches bdir/index.html", a1, "/bdir/index.html",
			link("bdir", func(c *cluster) string { return filepath.Join(c.b1.home, "public_html") })),
		nginxRefuses("symlink to the agent's key", "a1 symlinks public_html/k.txt to the agent's node.key", a1, "/k.txt",
			link("k.txt", func(c *cluster) string { return filepath.Join(c.node.Config.DataDir, "node.key") })),
		nginxRefuses("symlink to other tenant's PHP", "a1 symlinks public_html/b.php to b1's b.php (to run it as a1)", a1, "/b.php",
			link("b.php", func(c *cluster) string { return filepath.Join(c.b1.home, "public_html/b.php") })),
		nginxRefuses("PHP path info on an image", "GET /upload.jpg/x.php (an image holding PHP run as a script)", a1, "/upload.jpg/x.php", nil),
		nginxRefuses("PHP via trailing dot", "GET /upload.jpg%00.php", a1, "/upload.jpg%00.php", nil),
		nginxRefuses("other tenant's file under own host", "GET b1's private.txt path under a1's Host", a1, "/private.txt", nil),
		nginxRefuses("unknown host", "a request with a Host no account serves", func(*cluster) string { return "nobody.example.org" }, "/", nil),
		nginxRefuses("IP as host", "a request with the node's address as Host", func(c *cluster) string { return c.http }, "/", nil),
		vector{name: "nginx host header with a tenant's domain as suffix", attempt: "Host: evil" + "<a1's domain> (suffix matching)",
			refusal: "not a1's site", run: func(t *testing.T, c *cluster) {
				_, body, _ := c.get("evil"+c.a1.Domain, "/")
				if strings.Contains(body, a1Index) {
					t.Fatal("suffix host served a1's site")
				}
			}},
		vector{name: "nginx absolute URI for another host", attempt: "GET http://<b1's domain>/private.txt with Host a1 (absolute request line)",
			refusal: "b1's private file is not served", run: func(t *testing.T, c *cluster) {
				resp := rawRequest(t, c.http, "GET http://"+c.b1.Domain+"/../private.txt HTTP/1.1\r\nHost: "+c.a1.Domain+"\r\nConnection: close\r\n\r\n")
				if strings.Contains(resp, b1Secret) {
					t.Fatalf("leaked: %.200q", resp)
				}
			}},
		vector{name: "php httpoxy", attempt: "a Proxy: header reaching PHP as HTTP_PROXY", refusal: "HTTP_PROXY is empty in PHP",
			run: func(t *testing.T, c *cluster) {
				_, body, _ := c.get(c.a1.Domain, "/probe.php?op=proxy", "Proxy", "http://evil.example:8080")
				if body != "GOT:proxy=" {
					t.Fatalf("PHP sees %q", body)
				}
			}},
		vector{name: "php runs as the account", attempt: "a1's PHP asks who it runs as", refusal: "its own user, never root or another account",
			run: func(t *testing.T, c *cluster) {
				if got := c.probe(t, "whoami", ""); strings.HasPrefix(got, "GOT:0:") || !strings.HasSuffix(got, ":"+c.a1.Username) {
					t.Fatalf("PHP runs as %q", got)
				}
			}},
	)

	// --- PHP: open_basedir and file modes -------------------------------------
	other := func(rel string) func(c *cluster) string {
		return func(c *cluster) string { return filepath.Join(c.b1.home, rel) }
	}
	fixed := func(p string) func(*cluster) string { return func(*cluster) string { return p } }
	vs = append(vs,
		phpDenied("reads other home's private file", "read", other("private.txt")),
		phpDenied("reads other home's public file", "read", other("public_html/index.html")),
		phpDenied("reads other home's PHP source", "read", other("public_html/b.php")),
		phpDenied("lists other home", "list", other("")),
		phpDenied("lists the homes", "list", func(c *cluster) string { return c.prof.HomeBase }),
		phpDenied("writes into other home", "write", other("public_html/pwned.html")),
		phpDenied("includes other tenant's PHP", "include", other("public_html/b.php")),
		phpDenied("globs other home", "glob", other("*")),
		phpDenied("tests existence in other home", "exists", other("private.txt")),
		phpDenied("reads /etc/passwd", "read", fixed("/etc/passwd")),
		phpDenied("reads /etc/shadow", "read", fixed("/etc/shadow")),
		phpDenied("reads via php filter", "read", fixed("php://filter/resource=/etc/passwd")),
		phpDenied("reads via file URL", "read", fixed("file:///etc/passwd")),
		phpDenied("reads other home via traversal", "read", func(c *cluster) string {
			return filepath.Join(c.a1.home, "..", c.b1.Username, "private.txt")
		}),
		phpDenied("reads the agent's key", "read", func(c *cluster) string { return filepath.Join(c.node.Config.DataDir, "node.key") }),
		phpDenied("reads the PowerDNS database", "read", func(c *cluster) string { return c.prof.DNS().Database }),
		phpDenied("reads the node prefix", "list", func(c *cluster) string { return c.node.Config.Prefix }),
		phpDenied("reads /proc environ", "read", fixed("/proc/1/environ")),
		phpDenied("symlinks to /etc/passwd", "symlink", fixed("/etc/passwd")),
		phpDenied("loosens open_basedir", "loosen", fixed("/etc/passwd")),
		phpDenied("climbs out with the dot-dot trick", "dotdot", fixed("/etc/passwd")),
		phpDenied("climbs out to other home", "dotdot", other("private.txt")),
	)

	vs = append(vs, tenantVectors()...)
	vs = append(vs, vector{name: "domains beyond the plan", attempt: "a1's owner adds add-on domains until its plan's 3 domains are used, then one more",
		refusal: "QUOTA_EXCEEDED; the extra domain is not served", run: func(t *testing.T, c *cluster) {
			var added []string
			defer func() {
				for _, d := range added {
					if err := c.a1.owner.RemoveDomain(ctx, c.a1.ID, d); err != nil {
						t.Error(err)
					}
				}
			}()
			for i := 1; ; i++ {
				d := "quota" + strconv.Itoa(i) + "-" + c.a1.Username + ".example.net"
				_, err := c.a1.owner.AddDomain(ctx, c.a1.ID, d, "")
				if err != nil {
					wantCode(t, "addDomain "+d, err, "QUOTA_EXCEEDED")
					if n := len(c.webState(t, c.a1)); n > 3 {
						t.Fatalf("a1 serves %d domains on a 3-domain plan", n)
					}
					if code, _, _ := c.get(d, "/"); code == 200 {
						t.Fatalf("the refused domain is served")
					}
					return
				}
				added = append(added, d)
				if i > 3 {
					t.Fatalf("%d add-on domains accepted on a 3-domain plan", i)
				}
			}
		}})

	// Regression vectors of issue 23's findings are added here after their
	// fixes merge (they fail on the code this suite was written against):
	//   1  an add-on domain inside or above another owner's domain
	//   3  PHP reaching the embedded etcd; no default disable_functions
	//   6  daemon data (PowerDNS's SQLite with DNSSEC keys) world-readable
	return vs
}

// asTenant runs argv as tn's Linux user, with no supplementary groups and
// no capabilities: what the account's cron job, SSH session or PHP
// exec() would be.
func asTenant(t *testing.T, tn *tenant, argv ...string) (string, error) {
	t.Helper()
	uid, gid := ids(t, tn.Username)
	args := append([]string{"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups", "--inh-caps=-all", "--"}, argv...)
	out, err := exec.Command("/usr/bin/setpriv", args...).CombinedOutput()
	return string(out), err
}

// tenantDenied is a vector in which a process of a1 runs argv (with OTHER
// standing for b1's home); it must fail and print none of b1's content.
func tenantDenied(name, attempt string, argv func(c *cluster) []string) vector {
	return vector{name: "tenant process " + name, attempt: attempt,
		refusal: "permission denied by file modes; nothing of b1's is printed",
		run: func(t *testing.T, c *cluster) {
			testenv.RequireDaemon(t, "/usr/bin/setpriv")
			a := argv(c)
			out, err := asTenant(t, c.a1, a...)
			if err == nil || strings.Contains(out, b1Index) || strings.Contains(out, b1Secret) || strings.Contains(out, "BRAN") || strings.Contains(out, "GET /") {
				t.Fatalf("%v as a1: err %v, output %.200q", a, err, out)
			}
		}}
}

// tenantDeniedFile is tenantDenied for a cat of a file that must exist
// (checked as root first): refusing a path that is not there proves nothing.
func tenantDeniedFile(name, attempt string, path func(c *cluster) string) vector {
	v := tenantDenied(name, attempt, func(c *cluster) []string { return []string{"/bin/cat", path(c)} })
	deny := v.run
	v.run = func(t *testing.T, c *cluster) {
		if _, err := os.Stat(path(c)); err != nil {
			t.Fatalf("the file this vector targets is missing, so its refusal would prove nothing: %v", err)
		}
		deny(t, c)
	}
	return v
}

func tenantVectors() []vector {
	b1 := func(rel string) func(c *cluster) []string {
		return func(c *cluster) []string { return []string{"/bin/cat", filepath.Join(c.b1.home, rel)} }
	}
	return []vector{
		{name: "tenant process control", attempt: "a1's process reads its own site's index.html and connects to its own PHP-FPM socket (the setup the next vectors rely on)",
			refusal: "both work: the refusals below come from file modes, not from a broken setup", run: func(t *testing.T, c *cluster) {
				testenv.RequireDaemon(t, "/usr/bin/setpriv")
				if out, err := asTenant(t, c.a1, "/bin/cat", filepath.Join(c.a1.home, "public_html", "index.html")); err != nil || out != a1Index {
					t.Fatalf("a1 reading its own file: %v %q", err, out)
				}
				sock := filepath.Join(c.prof.Web().SocketDir, "npanel-"+c.a1.Username+"-8.2.sock")
				if out, err := asTenant(t, c.a1, "/usr/bin/php", "-r", `$s = stream_socket_client("unix://`+sock+`"); echo $s === false ? "no" : "connected";`); err != nil || out != "connected" {
					t.Fatalf("a1 connecting to its own PHP-FPM socket: %v %q", err, out)
				}
			}},
		tenantDenied("reads other home's private file", "a1's process cats b1's 0600 private.txt", b1("private.txt")),
		tenantDenied("lists other home", "a1's process lists b1's home (0711)", func(c *cluster) []string { return []string{"/bin/ls", c.b1.home} }),
		tenantDenied("lists other home's site", "a1's process lists b1's public_html", func(c *cluster) []string {
			return []string{"/bin/ls", filepath.Join(c.b1.home, "public_html")}
		}),
		tenantDenied("writes into other home's site", "a1's process creates a file in b1's public_html", func(c *cluster) []string {
			return []string{"/usr/bin/touch", filepath.Join(c.b1.home, "public_html", "pwned.html")}
		}),
		tenantDenied("reads other home's logs", "a1's process lists b1's logs directory", func(c *cluster) []string {
			return []string{"/bin/ls", filepath.Join(c.b1.home, "logs")}
		}),
		tenantDenied("reads other home's PHP sessions", "a1's process lists b1's tmp (PHP sessions and uploads)", func(c *cluster) []string {
			return []string{"/bin/ls", filepath.Join(c.b1.home, "tmp")}
		}),
		tenantDenied("connects to other tenant's PHP-FPM", "a1's process connects to b1's PHP-FPM socket (to run code as b1)", func(c *cluster) []string {
			sock := filepath.Join(c.prof.Web().SocketDir, "npanel-"+c.b1.Username+"-8.2.sock")
			return []string{"/usr/bin/php", "-r", `$s = @stream_socket_client("unix://` + sock + `"); if ($s === false) { exit(1); } echo "connected";`}
		}),
		tenantDenied("reads other tenant's site source", "a1's process (cron, SSH, or PHP with exec allowed) cats b1's public_html/b.php (a site's config holds its database password)",
			b1("public_html/b.php")),
		tenantDeniedFile("reads other tenant's access log", "a1's process reads the nginx access log of b1's domain where nginx writes it (visitors, URLs with tokens)",
			func(c *cluster) string {
				return filepath.Join(c.prof.Web().DomainLogDir, c.b1.Username, c.b1.Domain+".access.log")
			}),
		tenantDeniedFile("reads other tenant's access log in its home", "a1's process reads b1's ~/logs/DOMAIN.access.log (the link the agent makes for b1)",
			func(c *cluster) string { return filepath.Join(c.b1.home, "logs", c.b1.Domain+".access.log") }),
	}
}

func webFindings() []vector { return nil }
