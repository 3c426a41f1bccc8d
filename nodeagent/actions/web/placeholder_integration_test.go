package web_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/npanel/npanel/nodeagent/actions/web"
)

// A new site's empty document root gets the placeholder page at once (200,
// not nginx's 403), owned by the account, 0644, naming the domain and not
// the node; a document root with content, or an index the account wrote
// itself, is never touched.
func TestPlaceholderIndex(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	const domain = "npt-new.example.com"
	sp := spec(site(domain, "public_html", ""), site("npt-full.example.net", "full/public_html", ""))
	// The second site's docroot already has content (a hidden file only).
	if err := os.MkdirAll(filepath.Join(a.Home, "full/public_html"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"full", "full/public_html"} {
		if err := os.Chown(filepath.Join(a.Home, d), int(a.UID), int(a.GID)); err != nil {
			t.Fatal(err)
		}
	}
	writeAs(t, a, "full/public_html/.htaccess", "x")

	s.ensure(t, a, sp, false)
	code, _, body := s.get(t, domain, "/")
	if code != 200 || !strings.Contains(body, domain) || !strings.Contains(body, "hosted on nPanel") {
		dumpLogs(t, s)
		t.Fatalf("GET %s: %d %q", domain, code, body)
	}
	host, _ := os.Hostname()
	for _, leak := range []string{host, "nginx", "127.0.0.1", s.addr, "1.22", "Debian"} {
		if leak != "" && strings.Contains(body, leak) {
			t.Errorf("placeholder reveals %q: %q", leak, body)
		}
	}
	p := filepath.Join(a.Home, "public_html", web.PlaceholderName)
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 || st.Uid != a.UID || st.Gid != a.GID || st.Nlink != 1 {
		t.Errorf("placeholder %v uid %d gid %d links %d; want regular 0644 %d:%d, 1 link", fi.Mode(), st.Uid, st.Gid, st.Nlink, a.UID, a.GID)
	}
	if ents, _ := os.ReadDir(filepath.Join(a.Home, "public_html")); len(ents) != 1 {
		t.Errorf("docroot holds %d entries, want only the placeholder (no temporary file left)", len(ents))
	}
	if exists(filepath.Join(a.Home, "full/public_html", web.PlaceholderName)) {
		t.Errorf("placeholder written into a document root with content")
	}

	// The account's own page replaces it and is never overwritten again,
	// nor is an index the account removed put back while anything else is there.
	writeAs(t, a, "public_html/index.html", "mine")
	s.ensure(t, a, sp, false)
	sp.Sites[0].PhpVersion = "8.2" // a real change: everything is converged again
	s.ensure(t, a, sp, false)
	if b, _ := os.ReadFile(p); string(b) != "mine" {
		t.Errorf("account's index.html overwritten: %q", b)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	writeAs(t, a, "public_html/app.php", "<?php echo 1;")
	sp.Sites[0].PhpVersion = ""
	s.ensure(t, a, sp, false)
	if exists(p) {
		t.Errorf("placeholder put into a docroot with content")
	}
}
