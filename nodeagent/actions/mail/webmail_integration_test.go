package mail_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent/actions/web"
	"github.com/npanel/npanel/protos/agentpb"
)

// startWebmail adds the web module (nginx + PHP-FPM under the stack's
// prefix) to a mail stack and lets the mail module serve webmail through
// it. The webmail system user is removed at cleanup when the test made it.
func startWebmail(t *testing.T, s *stack) *web.Module {
	t.Helper()
	testenv.RequireDaemon(t, "/usr/sbin/nginx")
	testenv.RequireDaemon(t, "/usr/sbin/php-fpm8.2")
	mp := s.p.Mail()
	if _, err := os.Stat(filepath.Join(mp.RoundcubeDir, "index.php")); err != nil {
		t.Skip("Roundcube (roundcube-core) is not installed")
	}
	if _, err := os.Stat(mp.Sqlite3); err != nil {
		t.Skip("sqlite3 is not installed")
	}
	if _, err := user.Lookup(mp.WebmailUser); err != nil {
		// The pool's PHP-FPM is stopped first: no process may run as
		// the user userdel removes.
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := s.m.Stop(ctx, web.PHPService("8.2")); err != nil {
				t.Errorf("stop php-fpm: %v", err)
			}
			if out, err := exec.Command("/usr/sbin/userdel", mp.WebmailUser).CombinedOutput(); err != nil {
				t.Errorf("userdel %s: %v: %s", mp.WebmailUser, err, out)
			}
		})
	}
	s.p.HTTPListen = testenv.FreeAddr(t)
	s.p.HTTPSListen = testenv.FreeAddr(t)
	wmod := web.NewModule()
	ctx := testenv.Context(t)
	specs, err := wmod.Setup(ctx, s.env)
	if err != nil {
		t.Fatalf("web setup: %v", err)
	}
	for _, sp := range specs {
		if err := s.m.Ensure(ctx, sp); err != nil {
			t.Fatalf("start %s: %v", sp.Name, err)
		}
	}
	s.mod.UseWeb(wmod)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{filepath.Join(mp.WebmailStateDir, "logs", "errors.log"),
				filepath.Join(mp.WebmailStateDir, "logs", "php-error.log"),
				filepath.Join(s.p.Web().NginxLogDir, "error.log")} {
				b, _ := os.ReadFile(f)
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("%s:\n%s", f, b)
			}
		}
	})
	return wmod
}

// webmailClient talks to the stack's nginx whatever host a URL names, with
// a cookie jar of its own.
func webmailClient(t *testing.T, s *stack) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := s.p.HTTPListen
	return &http.Client{
		Jar:     jar,
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}},
	}
}

var (
	tokenRE = regexp.MustCompile(`name="_token" value="([^"]+)"`)
	assetRE = regexp.MustCompile(`(?:href|src)="([^"]+\.(?:css|js)(?:\?[^"]*)?)"`)
)

func getPage(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// webmailLogin loads the login form and posts it; it returns the final
// response (after redirects) and its body.
func webmailLogin(t *testing.T, c *http.Client, base, address, pw string) (*http.Response, string) {
	t.Helper()
	resp, body := getPage(t, c, base+"/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="_user"`) || !strings.Contains(body, `name="_pass"`) {
		t.Fatalf("login page: %d\n%.2000s", resp.StatusCode, body)
	}
	m := tokenRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("login page has no _token:\n%.2000s", body)
	}
	form := url.Values{"_token": {m[1]}, "_task": {"login"}, "_action": {"login"}, "_timezone": {"UTC"},
		"_url": {""}, "_user": {address}, "_pass": {pw}}
	resp, err := c.PostForm(base+"/?_task=login", form)
	if err != nil {
		t.Fatalf("POST login: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestWebmailRoundcube serves Roundcube at webmail.DOMAIN through the
// node's nginx and logs in through its form against Dovecot.
func TestWebmailRoundcube(t *testing.T) {
	s := startStackWith(t, false)
	wmod := startWebmail(t, s)
	acct := s.newAccount(t)
	dom := randomDomain(t)
	alice := "alice@" + dom
	res := s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom, Webmail: true})
	if !res.Changed {
		t.Fatalf("ensure with webmail: %v", res)
	}
	s.ensureMailbox(t, &agentpb.EnsureMailboxAction{Username: acct, Address: alice, SealedPassword: s.seal(t, alice, pwAlice), QuotaMb: 100})
	base := "http://webmail." + dom

	t.Run("Idempotent", func(t *testing.T) {
		r := s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom, Webmail: true})
		if r.Changed {
			t.Fatalf("second ensure changed: %v", r)
		}
	})
	t.Run("HTTPS", func(t *testing.T) {
		host := "webmail." + dom
		get := func() (*http.Response, string) {
			tr := &http.Transport{
				TLSClientConfig:   &tls.Config{ServerName: host, InsecureSkipVerify: true},
				ForceAttemptHTTP2: true,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, network, s.p.HTTPSListen)
				},
			}
			defer tr.CloseIdleConnections()
			return getPage(t, &http.Client{Transport: tr, Timeout: 30 * time.Second}, "https://"+host+"/")
		}
		resp, body := get()
		leaf := resp.TLS.PeerCertificates[0]
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="_user"`) || resp.Proto != "HTTP/2.0" {
			t.Fatalf("GET https://%s/: %d %s", host, resp.StatusCode, resp.Proto)
		}
		if leaf.VerifyHostname(host) != nil || fmt.Sprint(leaf.Subject.Organization) != "[nPanel self-signed]" {
			t.Errorf("served %v %v, want our self-signed certificate for %s", leaf.Subject, leaf.DNSNames, host)
		}
		chain, key, issued := issueTestCert(t, host)
		if _, err := wmod.InstallCertificate(testenv.Context(t), s.env, host, chain, key); err != nil {
			t.Fatalf("install: %v", err)
		}
		if resp, _ := get(); resp.TLS.PeerCertificates[0].SerialNumber.Cmp(issued.SerialNumber) != 0 {
			t.Errorf("after install: served %v, want the installed leaf", resp.TLS.PeerCertificates[0].Subject)
		}
		// The next ensure keeps it.
		s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom, Webmail: true})
		if resp, _ := get(); resp.TLS.PeerCertificates[0].SerialNumber.Cmp(issued.SerialNumber) != 0 {
			t.Errorf("after ensure: served %v, want the installed leaf", resp.TLS.PeerCertificates[0].Subject)
		}
	})
	t.Run("ConfigNotServed", func(t *testing.T) {
		c := webmailClient(t, s)
		for _, p := range []string{"/config/config.inc.php", "/temp/", "/logs/errors.log", "/SQL/sqlite.initial.sql", "/.htaccess", "/installer/"} {
			resp, _ := getPage(t, c, base+p)
			if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: %d, want 403 or 404", p, resp.StatusCode)
			}
		}
	})
	t.Run("Assets", func(t *testing.T) {
		c := webmailClient(t, s)
		_, body := getPage(t, c, base+"/")
		refs := assetRE.FindAllStringSubmatch(body, -1)
		if len(refs) == 0 {
			t.Fatalf("login page references no stylesheet or script:\n%.2000s", body)
		}
		for _, m := range refs {
			ref := strings.ReplaceAll(m[1], "&amp;", "&")
			u, err := url.Parse(base + "/")
			if err != nil {
				t.Fatal(err)
			}
			r, err := u.Parse(ref)
			if err != nil {
				t.Fatal(err)
			}
			if resp, _ := getPage(t, c, r.String()); resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s: %d", r, resp.StatusCode)
			}
		}
	})
	t.Run("AccountCannotTakeTheName", func(t *testing.T) {
		u, err := user.Lookup(acct)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		owner := web.Owner{Username: acct, UID: uint32(uid), GID: uint32(gid), Home: filepath.Join(s.p.HomeBase, acct)}
		ctx := testenv.Context(t)
		t.Cleanup(func() {
			if err := wmod.Remove(context.Background(), s.env, acct); err != nil {
				t.Errorf("web remove: %v", err)
			}
		})
		_, err = wmod.Ensure(ctx, s.env, owner, &agentpb.WebSpec{Sites: []*agentpb.Site{{Domain: "webmail." + dom, RedirectTo: "https://example.net"}}}, false)
		if err == nil || !strings.Contains(err.Error(), "already served") {
			t.Fatalf("an account's site named webmail.%s: %v", dom, err)
		}
	})
	t.Run("Login", func(t *testing.T) {
		c := webmailClient(t, s)
		resp, body := webmailLogin(t, c, base, alice, pwAlice)
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Request.URL.RawQuery, "_task=mail") {
			t.Fatalf("login: %d at %s\n%.3000s", resp.StatusCode, resp.Request.URL, body)
		}
		if !strings.Contains(body, alice) || !strings.Contains(body, `"mailbox":"INBOX"`) {
			t.Fatalf("mail page does not show %s's INBOX:\n%.3000s", alice, body)
		}
		// The pool is confined (open_basedir), and nothing Roundcube
		// needed on the way was refused.
		mp := s.p.Mail()
		for _, f := range []string{"php-error.log", "errors.log"} {
			if b, err := os.ReadFile(filepath.Join(mp.WebmailStateDir, "logs", f)); err == nil && bytes.Contains(b, []byte("open_basedir")) {
				t.Errorf("%s: open_basedir refused something Roundcube reads:\n%.2000s", f, b)
			}
		}
		var pools []string
		for _, f := range s.p.Web().PHP {
			m, _ := filepath.Glob(filepath.Join(f.PoolDir, "*webmail*.conf"))
			pools = append(pools, m...)
		}
		confined := false
		for _, p := range pools {
			if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte("php_admin_value[open_basedir] = ")) {
				confined = true
			}
		}
		if !confined {
			t.Errorf("no webmail pool with open_basedir among %v", pools)
		}
	})
	t.Run("SendThroughSMTP", func(t *testing.T) {
		// Roundcube's compose form sends over submission with the
		// mailbox's own login (STARTTLS + AUTH); the message arrives.
		c := webmailClient(t, s)
		if resp, body := webmailLogin(t, c, base, alice, pwAlice); !strings.Contains(resp.Request.URL.RawQuery, "_task=mail") {
			t.Fatalf("login: %d at %s\n%.2000s", resp.StatusCode, resp.Request.URL, body)
		}
		resp, body := getPage(t, c, base+"/?_task=mail&_action=compose")
		id := resp.Request.URL.Query().Get("_id")
		tok := regexp.MustCompile(`"request_token":"([^"]+)"`).FindStringSubmatch(body)
		from := regexp.MustCompile(`name="_from"[^>]*>\s*<option value="([0-9]+)"`).FindStringSubmatch(body)
		if id == "" || tok == nil || from == nil {
			t.Fatalf("compose page (%s): id %q token %v from %v\n%.3000s", resp.Request.URL, id, tok, from, body)
		}
		const subject = "sent from webmail"
		form := url.Values{"_token": {tok[1]}, "_task": {"mail"}, "_action": {"send"}, "_id": {id},
			"_from": {from[1]}, "_to": {alice}, "_subject": {subject}, "_message": {"typed in Roundcube"},
			"_is_html": {"0"}, "_priority": {"0"}, "_store_target": {"Sent"}, "_draft": {""}, "_attachments": {""}}
		req, err := http.NewRequest(http.MethodPost, base+"/?_task=mail&_unlock=loading&_framed=1", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		sr, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		sb, _ := io.ReadAll(sr.Body)
		sr.Body.Close()
		if sr.StatusCode != http.StatusOK || !strings.Contains(string(sb), "sent_successfully") {
			t.Fatalf("send: %d\n%s", sr.StatusCode, sb)
		}
		var got string
		testenv.WaitFor(t, 20*time.Second, "the webmail message in the INBOX", func() bool {
			ic, err := s.imapLogin(alice, pwAlice)
			if err != nil {
				return false
			}
			defer ic.close()
			msgs, _ := ic.fetchAll("INBOX")
			for _, m := range msgs {
				if strings.Contains(m, "Subject: "+subject) {
					got = m
					return true
				}
			}
			return false
		})
		// It came in over submission, logged in as alice, and was not
		// marked as from an unverified local client.
		if !strings.Contains(got, "typed in Roundcube") || !strings.Contains(got, "with esmtpsa") || strings.Contains(got, "Received-SPF") {
			t.Fatalf("message:\n%s", got)
		}
	})
	t.Run("WrongPassword", func(t *testing.T) {
		c := webmailClient(t, s)
		resp, body := webmailLogin(t, c, base, alice, "not-"+pwAlice)
		if strings.Contains(resp.Request.URL.RawQuery, "_task=mail") || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password: %d at %s", resp.StatusCode, resp.Request.URL)
		}
		if !strings.Contains(body, "Login failed") {
			t.Fatalf("wrong password: no login error:\n%.3000s", body)
		}
	})
	t.Run("Disable", func(t *testing.T) {
		r := s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom, Webmail: false})
		if !r.Changed {
			t.Fatalf("disable: not changed")
		}
		c := webmailClient(t, s)
		resp, _ := getPage(t, c, base+"/")
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("after disable: %d, want 404 (the default server)", resp.StatusCode)
		}
		if _, err := os.Stat(filepath.Join(s.p.Web().VhostDir, "npanel@webmail_webmail."+dom+".conf")); !os.IsNotExist(err) {
			t.Fatalf("server block still there: %v", err)
		}
	})
	t.Run("DeleteDomainRemovesWebmail", func(t *testing.T) {
		s.ensureDomain(t, &agentpb.EnsureMailDomainAction{Username: acct, Domain: dom, Webmail: true})
		c := webmailClient(t, s)
		if resp, _ := getPage(t, c, base+"/"); resp.StatusCode != http.StatusOK {
			t.Fatalf("re-enabled: %d", resp.StatusCode)
		}
		s.must(t, s.mod.NewDeleteMailbox(&agentpb.DeleteMailboxAction{Username: acct, Address: alice}))
		s.must(t, s.mod.NewDeleteMailDomain(&agentpb.DeleteMailDomainAction{Username: acct, Domain: dom}))
		if resp, _ := getPage(t, c, base+"/"); resp.StatusCode != http.StatusNotFound {
			t.Fatalf("after delete: %d, want 404", resp.StatusCode)
		}
	})
}
