package controlplane_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/internal/testenv"
)

// get fetches path from the node's nginx with the given Host header.
func get(t *testing.T, addr, host, path string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	c := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func waitDomainState(t *testing.T, c *client.Client, acct, domain, want string) {
	t.Helper()
	var last []client.Domain
	testenv.WaitFor(t, 30*time.Second, domain+" "+want, func() bool {
		ds, err := c.Domains(context.Background(), acct)
		if err != nil {
			t.Fatal(err)
		}
		last = ds
		for _, d := range ds {
			if d.Name == domain {
				if d.State == "FAILED" {
					t.Fatalf("%s FAILED: %s", domain, deref(d.Reason))
				}
				return d.State == want
			}
		}
		return false
	})
	_ = last
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// An account's sites served for real: the agent runs nginx and PHP-FPM
// under its prefix, the API drives add-on domains, PHP, redirects and
// suspension, and every change is visible over HTTP on the node.
func TestWebHostingEndToEnd(t *testing.T) {
	testenv.RequireDaemon(t, "/usr/sbin/nginx")
	testenv.RequireDaemon(t, "/usr/sbin/php-fpm8.2")
	if os.Geteuid() != 0 {
		t.Skip("creating Linux users needs root")
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "web-1", testenv.WithModules(t, "web"))
	ctx := testenv.Context(t)
	http := ag.Config.HTTPListen
	testenv.WaitFor(t, 10*time.Second, "web-1 READY", func() bool { return nodeStatus(t, s, "web-1") == "READY" })

	// The node reports the daemons it runs.
	testenv.WaitFor(t, 10*time.Second, "services reported", func() bool {
		svcs, _, err := s.Admin.Services(ctx, "web-1")
		if err != nil {
			t.Fatal(err)
		}
		running := map[string]bool{}
		for _, sv := range svcs {
			running[sv.Name] = sv.State == "RUNNING"
		}
		return running["nginx"] && running["php-fpm8.2"]
	})

	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 2, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testUsername(t)
	domain := user + ".example.com"
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: "web"})
	if err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, domain, "ACTIVE")
	home := filepath.Join(ag.Config.Prefix, "home", user)
	writeOwned(t, filepath.Join(home, "public_html", "index.php"), `<?php echo "php ", PHP_VERSION, " as ", posix_getpwuid(posix_geteuid())["name"];`, user)
	if code, body, _ := get(t, http, domain, "/index.php"); code != 200 || !strings.HasPrefix(body, "php 8.2") || !strings.HasSuffix(body, " as "+user) {
		t.Fatalf("primary site: %d %q", code, body)
	}
	if code, body, _ := get(t, http, "www."+domain, "/index.php"); code != 200 || !strings.HasPrefix(body, "php 8.2") {
		t.Fatalf("www alias: %d %q", code, body)
	}

	// An add-on domain with its own document root; the plan allows two.
	addon := "shop-" + user + ".example.com"
	if _, err := s.Admin.AddDomain(ctx, acct.ID, addon, "shop/public_html"); err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, addon, "ACTIVE")
	writeOwned(t, filepath.Join(home, "shop", "public_html", "index.html"), "the shop", user)
	if code, body, _ := get(t, http, addon, "/"); code != 200 || body != "the shop" {
		t.Fatalf("add-on domain: %d %q", code, body)
	}
	if _, err := s.Admin.AddDomain(ctx, acct.ID, "third-"+user+".example.com", ""); client.CodeOf(err) != "QUOTA_EXCEEDED" {
		t.Fatalf("third domain on a two-domain plan: %v", err)
	}
	if _, err := s.Admin.AddDomain(ctx, acct.ID, "www.other-"+user+".example.com", ""); client.CodeOf(err) != "INVALID_INPUT" {
		t.Errorf("a www. domain as a site of its own: %v", err)
	}
	for _, bad := range []string{"../escape", "/abs", "a//b", "sp ace", "x;y"} {
		if _, err := s.Admin.AddDomain(ctx, acct.ID, "d-"+user+".example.com", bad); client.CodeOf(err) != "INVALID_INPUT" {
			t.Errorf("docroot %q: %v", bad, err)
		}
	}
	if _, err := s.Admin.SetPHPVersion(ctx, acct.ID, domain, "7.4"); client.CodeOf(err) != "INVALID_INPUT" {
		t.Errorf("PHP version outside the plan: %v", err)
	}

	// Static only, then PHP again.
	if _, err := s.Admin.SetPHPVersion(ctx, acct.ID, domain, ""); err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, domain, "ACTIVE")
	// A static site neither runs PHP nor serves its source.
	if code, body, _ := get(t, http, domain, "/index.php"); code != 403 || strings.Contains(body, "php") {
		t.Fatalf("static site's index.php: %d %q", code, body)
	}
	if _, err := s.Admin.SetPHPVersion(ctx, acct.ID, domain, "8.2"); err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, domain, "ACTIVE")

	// A redirect, and back.
	if _, err := s.Admin.SetRedirect(ctx, addon, "https://"+domain, 302); err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, addon, "REDIRECT")
	if code, _, h := get(t, http, addon, "/cart?x=1"); code != 302 || h.Get("Location") != "https://"+domain+"/cart?x=1" {
		t.Fatalf("redirect: %d %v", code, h)
	}

	// Suspension swaps every site for the suspension page; nothing is lost.
	if _, err := s.Admin.AccountAction(ctx, "suspendAccount", acct.ID); err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, domain, "SUSPENDED")
	if code, body, _ := get(t, http, domain, "/index.php"); strings.Contains(body, "php 8.2") || code == 200 {
		t.Fatalf("suspended site still served: %d %q", code, body)
	}
	if _, err := s.Admin.AccountAction(ctx, "unsuspendAccount", acct.ID); err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, domain, "ACTIVE")
	if code, body, _ := get(t, http, domain, "/index.php"); code != 200 || !strings.HasPrefix(body, "php 8.2") {
		t.Fatalf("unsuspended site: %d %q", code, body)
	}

	if err := s.Admin.RemoveDomain(ctx, acct.ID, addon); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "add-on domain gone", func() bool {
		code, _, _ := get(t, http, addon, "/")
		return code == 404
	})
	if _, err := os.Stat(filepath.Join(home, "shop", "public_html", "index.html")); err != nil {
		t.Errorf("removing a domain removed its files: %v", err)
	}

	// restartService through the task path.
	task, err := s.Admin.RestartService(ctx, "web-1", "nginx", 30)
	if err != nil || task.Status != "SUCCEEDED" {
		t.Fatalf("restartService: %+v %v", task, err)
	}
	if task, err := s.Admin.RestartService(ctx, "web-1", "sshd", 30); err != nil || task.Status != "FAILED" {
		t.Fatalf("restartService of an unmanaged daemon: %+v %v", task, err)
	}

	// Deleting the account removes its sites before its user.
	if _, err := s.Admin.AccountAction(ctx, "deleteAccount", acct.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "account deleted", func() bool { return !testenv.HasUser(user) })
	testenv.WaitFor(t, 10*time.Second, "site gone", func() bool {
		code, _, _ := get(t, http, domain, "/index.php")
		return code == 404
	})
}

func writeOwned(t *testing.T, path, content, user string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chownUser(path, user); err != nil {
		t.Fatal(err)
	}
}

func chownUser(path, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return os.Lchown(path, uid, gid)
}
