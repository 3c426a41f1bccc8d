package controlplane_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
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

// startWebNode starts a server and a READY node web-1 running the real
// nginx and PHP-FPM, and returns the server, the node's agent and its HTTP
// address; it skips where those daemons or root are missing.
func startWebNode(t *testing.T) (*testenv.Server, *testenv.Agent, string) {
	t.Helper()
	testenv.RequireDaemon(t, "/usr/sbin/nginx")
	testenv.RequireDaemon(t, "/usr/sbin/php-fpm8.2")
	if os.Geteuid() != 0 {
		t.Skip("creating Linux users needs root")
	}
	s := testenv.StartServer(t)
	ag := s.StartAgent(t, "web-1", testenv.WithModules(t, "web"))
	testenv.WaitFor(t, 10*time.Second, "web-1 READY", func() bool { return nodeStatus(t, s, "web-1") == "READY" })
	return s, ag, ag.Config.HTTPListen
}

// An account's sites served for real: the agent runs nginx and PHP-FPM
// under its prefix, the API drives add-on domains, PHP, redirects and
// suspension, and every change is visible over HTTP on the node.
func TestWebHostingEndToEnd(t *testing.T) {
	s, ag, http := startWebNode(t)
	ctx := testenv.Context(t)

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

// Parked (alias) domains and domain logs end to end on real nginx: a new
// site answers with its placeholder page, an alias serves its target's
// site (and gets a zone of its own), per-site settings and chains are
// refused on aliases, a domain with aliases cannot be removed, and the
// account's requests are readable through domainLogs and in ~/logs.
func TestDomainAliasesAndLogs(t *testing.T) {
	s, ag, http := startWebNode(t)
	ctx := testenv.Context(t)
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "park", DiskMB: 100, BandwidthMB: 1000, Domains: 5, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testUsername(t)
	domain := user + ".example.com"
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: "park"})
	if err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, acct.ID, domain, "ACTIVE")
	// The new site answers at once with its placeholder page.
	if code, body, _ := get(t, http, domain, "/"); code != 200 || !strings.Contains(body, domain) || !strings.Contains(body, "hosted on nPanel") {
		t.Fatalf("new site: %d %q", code, body)
	}

	alias := "park-" + user + ".example.net"
	d, err := s.Admin.AddAliasDomain(ctx, acct.ID, alias, domain)
	if err != nil {
		t.Fatal(err)
	}
	if d.AliasOf == nil || *d.AliasOf != domain || d.Docroot != "public_html" {
		t.Errorf("alias domain: %+v", d)
	}
	waitDomainState(t, s.Admin, acct.ID, alias, "ACTIVE")
	for _, host := range []string{alias, "www." + alias} {
		if code, body, _ := get(t, http, host, "/"); code != 200 || !strings.Contains(body, domain) {
			t.Errorf("alias %s: %d %q, want the site of %s", host, code, body, domain)
		}
	}
	if z, _, err := s.Store().GetZone(ctx, alias); err != nil || z.Account != acct.ID {
		t.Errorf("alias zone: %+v %v", z, err)
	}

	// Refusals write nothing.
	before, _ := s.Admin.Domains(ctx, acct.ID)
	_, err = s.Admin.AddAliasDomain(ctx, acct.ID, "chain-"+user+".example.net", alias)
	wantAPICode(t, "alias of an alias", err, "INVALID_INPUT")
	_, err = s.Admin.AddAliasDomain(ctx, acct.ID, "nowhere-"+user+".example.net", "unknown-"+user+".example.org")
	wantAPICode(t, "alias of a domain the account does not serve", err, "NOT_FOUND")
	_, err = s.Admin.AddAliasDomain(ctx, acct.ID, "bad-"+user+".example.net", "not a domain")
	wantAPICode(t, "alias of a bad name", err, "INVALID_INPUT")
	err = s.Admin.Do(ctx, `mutation($a:ID!){addDomain(account:$a,domain:"both-`+user+`.example.net",docroot:"x",aliasOf:"`+domain+`"){name}}`, map[string]any{"a": acct.ID}, nil)
	wantAPICode(t, "alias with a docroot", err, "INVALID_INPUT")
	_, err = s.Admin.SetPHPVersion(ctx, acct.ID, alias, "8.2")
	wantAPICode(t, "PHP version of an alias", err, "INVALID_INPUT")
	_, err = s.Admin.SetRedirect(ctx, alias, "https://example.org", 301)
	wantAPICode(t, "redirect of an alias", err, "INVALID_INPUT")
	if after, _ := s.Admin.Domains(ctx, acct.ID); len(after) != len(before) {
		t.Errorf("refused alias changes wrote domains: %d -> %d", len(before), len(after))
	}

	// A domain that aliases point to is not removed: CONFLICT naming them.
	addon := "shop-" + user + ".example.org"
	if _, err := s.Admin.AddDomain(ctx, acct.ID, addon, ""); err != nil {
		t.Fatal(err)
	}
	alias2 := "shop-park-" + user + ".example.org"
	if _, err := s.Admin.AddAliasDomain(ctx, acct.ID, alias2, addon); err != nil {
		t.Fatal(err)
	}
	err = s.Admin.RemoveDomain(ctx, acct.ID, addon)
	wantAPICode(t, "remove a domain with aliases", err, "CONFLICT")
	if !strings.Contains(err.Error(), alias2) {
		t.Errorf("conflict does not name the alias: %v", err)
	}
	if err := s.Admin.RemoveDomain(ctx, acct.ID, alias2); err != nil {
		t.Fatal(err)
	}
	if err := s.Admin.RemoveDomain(ctx, acct.ID, addon); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 30*time.Second, "removed alias no longer served", func() bool {
		code, _, _ := get(t, http, alias2, "/")
		return code == 404
	})

	// Logs: requests to the domain and to its alias, in the domain's log.
	get(t, http, domain, "/from-the-domain")
	get(t, http, alias, "/from-the-alias")
	var lines []string
	testenv.WaitFor(t, 10*time.Second, "requests in domainLogs", func() bool {
		lines, err = s.Admin.DomainLogs(ctx, alias, "ACCESS", client.LogQuery{Lines: 10})
		if err != nil {
			t.Fatal(err)
		}
		text := strings.Join(lines, "\n")
		return strings.Contains(text, "/from-the-domain") && strings.Contains(text, "/from-the-alias")
	})
	if len(lines) > 10 {
		t.Errorf("%d lines, asked for 10", len(lines))
	}
	if _, err := s.Admin.DomainLogs(ctx, domain, "ERROR", client.LogQuery{}); err != nil {
		t.Errorf("error log with the default line count: %v", err)
	}
	for _, n := range []int{-1, 1001} {
		_, err := s.Admin.DomainLogs(ctx, domain, "ACCESS", client.LogQuery{Lines: n})
		wantAPICode(t, fmt.Sprintf("%d lines", n), err, "INVALID_INPUT")
	}
	_, err = s.Admin.DomainLogs(ctx, "nobody-"+user+".example.com", "ACCESS", client.LogQuery{Lines: 10})
	wantAPICode(t, "logs of a domain nobody serves", err, "NOT_FOUND")
	evs, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{Action: "domainLogs", Target: alias}, "", 10)
	if err != nil || len(evs) == 0 || evs[0].Result != "ok" || evs[0].Detail["account"] != acct.ID {
		t.Errorf("domainLogs audit: %+v %v", evs, err)
	}
	home := filepath.Join(ag.Config.Prefix, "home", user)
	if b, err := os.ReadFile(filepath.Join(home, "logs", domain+".access.log")); err != nil || !strings.Contains(string(b), "/from-the-domain") {
		t.Errorf("~/logs/%s.access.log: %v %q", domain, err, b)
	}
}

// Who may read a domain's logs, park a domain and stop serving a zone.
func TestDomainsRBAC(t *testing.T) {
	tn := setupTenants(t)
	ctx := context.Background()
	a1, b1 := "alpha1.example.com", "bravo1.example.com"
	testenv.WaitFor(t, 20*time.Second, "zones written", func() bool {
		_, _, err1 := tn.s.Store().GetZone(ctx, a1)
		_, _, err2 := tn.s.Store().GetZone(ctx, b1)
		return err1 == nil && err2 == nil
	})

	// domainLogs: the fake nodes never answer, so an allowed read ends in
	// UNAVAILABLE (or the caller's deadline); a refused one at once.
	allowed := func(c *client.Client, d string) error {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := c.DomainLogs(cctx, d, "ACCESS", client.LogQuery{Lines: 10})
		return err
	}
	for name, tc := range map[string]struct {
		c      *client.Client
		domain string
	}{
		"admin reads a1": {tn.admin, a1}, "resa reads a1": {tn.resA, a1}, "resb reads b1": {tn.resB, b1}, "user reads a1": {tn.userA, a1},
	} {
		if code := client.CodeOf(allowed(tc.c, tc.domain)); code == "NOT_FOUND" || code == "FORBIDDEN" || code == "INVALID_INPUT" {
			t.Errorf("%s: refused with %s", name, code)
		}
	}
	for name, tc := range map[string]struct {
		c      *client.Client
		domain string
	}{
		"resa reads b1": {tn.resA, b1}, "resb reads a1": {tn.resB, a1}, "user reads b1": {tn.userA, b1},
	} {
		_, err := tc.c.DomainLogs(ctx, tc.domain, "ACCESS", client.LogQuery{Lines: 10})
		wantAPICode(t, name, err, "NOT_FOUND")
	}
	_, err := tn.userA.DomainLogs(ctx, "not a domain", "ACCESS", client.LogQuery{Lines: 10})
	wantAPICode(t, "user reads a bad name", err, "INVALID_INPUT")

	// addDomain aliasOf: on another tenant's account NOT_FOUND; the plans
	// here allow one domain, so an allowed caller meets the quota.
	_, err = tn.resB.AddAliasDomain(ctx, tn.a1.ID, "p1.example.net", a1)
	wantAPICode(t, "resb parks on a1", err, "NOT_FOUND")
	_, err = tn.userA.AddAliasDomain(ctx, tn.b1.ID, "p2.example.net", b1)
	wantAPICode(t, "user parks on b1", err, "NOT_FOUND")
	_, err = tn.userA.AddAliasDomain(ctx, tn.a1.ID, "p3.example.net", a1)
	wantAPICode(t, "user parks on its own account beyond its plan", err, "QUOTA_EXCEEDED")
	_, err = tn.resA.AddAliasDomain(ctx, tn.a1.ID, "p4.example.net", a1)
	wantAPICode(t, "resa parks on a1 beyond its plan", err, "QUOTA_EXCEEDED")

	// deleteZone: never the account user's; another tenant's is NOT_FOUND;
	// refusals leave the zone as it was.
	wantAPICode(t, "user deletes its zone", tn.userA.DeleteZone(ctx, a1), "FORBIDDEN")
	wantAPICode(t, "resb deletes a1's zone", tn.resB.DeleteZone(ctx, a1), "NOT_FOUND")
	wantAPICode(t, "resa deletes b1's zone", tn.resA.DeleteZone(ctx, b1), "NOT_FOUND")
	wantAPICode(t, "resa deletes a bad name", tn.resA.DeleteZone(ctx, "-bad-"), "INVALID_INPUT")
	wantAPICode(t, "admin deletes a zone that does not exist", tn.admin.DeleteZone(ctx, "nothing.example.org"), "NOT_FOUND")
	if z, _, err := tn.s.Store().GetZone(ctx, a1); err != nil || z.Deleted {
		t.Fatalf("refused deleteZone changed the zone: %+v %v", z, err)
	}
	if err := tn.resA.DeleteZone(ctx, a1); err != nil {
		t.Fatalf("resa deletes a1's zone: %v", err)
	}
	if err := tn.resA.DeleteZone(ctx, a1); err != nil && client.CodeOf(err) != "NOT_FOUND" {
		t.Errorf("deleting twice: %v", err)
	}
	if err := tn.admin.DeleteZone(ctx, b1); err != nil {
		t.Fatalf("admin deletes b1's zone: %v", err)
	}
	// createZone: the same rights; refusals write nothing.
	testenv.WaitFor(t, 30*time.Second, "a1's zone removed", func() bool {
		_, _, err := tn.s.Store().GetZone(ctx, a1)
		return err != nil
	})
	_, err = tn.userA.CreateZone(ctx, a1)
	wantAPICode(t, "user creates its zone", err, "FORBIDDEN")
	_, err = tn.resB.CreateZone(ctx, a1)
	wantAPICode(t, "resb creates a1's zone", err, "NOT_FOUND")
	if _, _, err := tn.s.Store().GetZone(ctx, a1); err == nil {
		t.Fatal("a refused createZone wrote the zone")
	}
	if _, err := tn.resA.CreateZone(ctx, a1); err != nil {
		t.Fatalf("resa creates a1's zone again: %v", err)
	}
	if evs, _, _, err := tn.s.Store().ListAudit(ctx, store.AuditFilter{Action: "createZone", Target: a1}, "", 10); err != nil || !slices.ContainsFunc(evs, func(ev store.AuditEvent) bool { return ev.Actor == "resa" && ev.Result == "ok" }) {
		t.Errorf("createZone not audited: %+v %v", evs, err)
	}
	// The sites stay.
	if ds, err := tn.admin.Domains(ctx, tn.a1.ID); err != nil || len(ds) != 1 || ds[0].Name != a1 {
		t.Errorf("a1's domains after deleteZone: %+v %v", ds, err)
	}
	evs, _, _, err := tn.s.Store().ListAudit(ctx, store.AuditFilter{Action: "deleteZone", Target: a1}, "", 10)
	results := map[string]string{} // actor+result
	for _, ev := range evs {
		results[ev.Actor+" "+ev.Result] = ev.Result
	}
	// resa's second delete may be audited as NOT_FOUND too.
	if err != nil || results["resa ok"] == "" || results["alphauser FORBIDDEN"] == "" || results["resb NOT_FOUND"] == "" {
		t.Errorf("deleteZone audit (success and refusals): %v %v", results, err)
	}
}
