package web_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/npanel/npanel/nodeagent/actions/web"
)

// A moved account's sites on the node it left are proxied to the new
// node: the answer is the new node's, for the same Host, with the
// client's address and scheme passed on; nothing is served locally, and
// dropping proxy_to serves the local site again.
func TestSiteProxiedToNewNode(t *testing.T) {
	s := startStack(t)
	a := s.newUser(t)
	writeAs(t, a, "public_html/index.html", "local copy")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type seen struct{ host, uri, xff, proto string }
	got := make(chan seen, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Host, r.RequestURI, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto")}
		fmt.Fprintf(w, "new node %s", r.Host)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	sp := spec(site("npt-moved.example.com", "public_html", "8.2", "www.npt-moved.example.com"))
	s.ensure(t, a, sp, false)
	if code, _, body := s.get(t, "npt-moved.example.com", "/"); code != 200 || body != "local copy" {
		t.Fatalf("before the move: %d %q", code, body)
	}

	sp.ProxyTo = ln.Addr().String()
	res := s.ensure(t, a, sp, false)
	if len(res.Sites) != 1 || res.Sites[0].State != web.StateProxy || len(res.PhpPools) != 0 || !res.Changed {
		t.Fatalf("result %+v", res)
	}
	for _, host := range []string{"npt-moved.example.com", "www.npt-moved.example.com"} {
		code, _, body := s.get(t, host, "/a/b?c=d")
		if code != 200 || body != "new node "+host {
			dumpLogs(t, s)
			t.Fatalf("GET %s through the proxy: %d %q", host, code, body)
		}
		r := <-got
		if r.host != host || r.uri != "/a/b?c=d" || r.xff != "127.0.0.1" || r.proto != "http" {
			t.Fatalf("the new node saw %+v", r)
		}
	}
	// HTTPS is proxied too, with its scheme passed on.
	r := s.mustTLSGet(t, "npt-moved.example.com", "/x", nil)
	if r.code != 200 || r.body != "new node npt-moved.example.com" {
		t.Fatalf("HTTPS through the proxy: %d %q", r.code, r.body)
	}
	if p := <-got; p.proto != "https" || p.host != "npt-moved.example.com" {
		t.Fatalf("the new node saw %+v over HTTPS", p)
	}
	// ACME tokens are the new node's too.
	if code, _, body := s.get(t, "npt-moved.example.com", "/.well-known/acme-challenge/tok"); code != 200 || !strings.HasPrefix(body, "new node") {
		t.Fatalf("challenge: %d %q", code, body)
	}
	<-got
	// Repeated: nothing changes.
	if res := s.ensure(t, a, sp, false); res.Changed || len(res.Reloaded) != 0 {
		t.Fatalf("repeated ensure: %+v", res)
	}
	// A suspended account that moved is still proxied: the new node
	// serves its suspension page.
	if res := s.ensure(t, a, sp, true); res.Sites[0].State != web.StateProxy {
		t.Fatalf("suspended and proxied: %+v", res)
	}
	if code, _, body := s.get(t, "npt-moved.example.com", "/"); code != 200 || !strings.HasPrefix(body, "new node") {
		t.Fatalf("suspended and proxied: %d %q", code, body)
	}
	<-got

	// Rolled back: served locally again.
	sp.ProxyTo = ""
	s.ensure(t, a, sp, false)
	if code, _, body := s.get(t, "npt-moved.example.com", "/"); code != 200 || body != "local copy" {
		t.Fatalf("after rollback: %d %q", code, body)
	}
}

// A moved account's site that redirects HTTP to HTTPS: the old node
// proxies an HTTPS request to the new node's HTTPS listener (SNI and Host
// the request's), so the new node serves the page instead of a redirect
// to https://same-host, which DNS still resolves to the old node (a loop
// until it moves). Two nginx of this machine: the source in proxy mode,
// the target serving the site with https_redirect and HSTS.
func TestSiteProxiedOverHTTPS(t *testing.T) {
	target := startStack(t)
	to := target.fakeOwner(t)
	writeAs(t, to, "public_html/index.html", "target page")
	const d = "npt-moved-tls.example.com"
	st := site(d, "public_html", "", "www."+d)
	st.HttpsRedirect, st.HstsMaxAge = true, 3600
	target.ensure(t, to, spec(st), false)

	source := startStack(t)
	so := source.fakeOwner(t)
	sp := spec(st)
	sp.ProxyTo = target.addr

	// Before proxy_to_https: HTTPS reaches the target as plain HTTP and
	// is sent back to https://same-host, i.e. to the source again.
	source.ensure(t, so, sp, false)
	r := source.mustTLSGet(t, d, "/p?q=1", nil)
	if r.code != 301 || !strings.HasPrefix(r.hdr.Get("Location"), "https://"+d) {
		t.Fatalf("without proxy_to_https: %d %q (Location %q); the loop this test is about", r.code, r.body, r.hdr.Get("Location"))
	}

	sp.ProxyToHttps = target.tlsAddr
	res := source.ensure(t, so, sp, false)
	if len(res.Sites) != 1 || res.Sites[0].State != web.StateProxy || !res.Changed {
		t.Fatalf("result %+v", res)
	}
	for _, host := range []string{d, "www." + d} {
		r := source.mustTLSGet(t, host, "/", nil)
		if r.code != 200 || r.body != "target page" {
			dumpLogs(t, source)
			dumpLogs(t, target)
			t.Fatalf("HTTPS %s through the source: %d %q (Location %q)", host, r.code, r.body, r.hdr.Get("Location"))
		}
		if h := r.hdr.Values("Strict-Transport-Security"); len(h) != 1 || h[0] != "max-age=3600" {
			t.Errorf("HTTPS %s through the source: Strict-Transport-Security %q", host, h)
		}
	}
	// Plain HTTP on the source is redirected to HTTPS there, as the site
	// says; the HTTPS request then goes through as above.
	if code, h, _ := source.get(t, d, "/x"); code != 301 || !strings.HasPrefix(h.Get("Location"), "https://"+d) {
		t.Fatalf("plain HTTP on the source: %d %q", code, h.Get("Location"))
	}
	// The target never takes a client's word for the scheme: plain HTTP
	// claiming X-Forwarded-Proto: https is still redirected.
	req, err := http.NewRequest("GET", "http://"+target.addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = d
	req.Header.Set("X-Forwarded-Proto", "https")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 301 || !strings.HasPrefix(resp.Header.Get("Location"), "https://"+d) {
		t.Fatalf("plain HTTP with X-Forwarded-Proto: https to the target: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Repeated: nothing changes. Rolled back: served locally again.
	if res := source.ensure(t, so, sp, false); res.Changed || len(res.Reloaded) != 0 {
		t.Fatalf("repeated ensure: %+v", res)
	}
	writeAs(t, so, "public_html/index.html", "source page")
	sp.ProxyTo, sp.ProxyToHttps = "", ""
	source.ensure(t, so, sp, false)
	if r := source.mustTLSGet(t, d, "/", nil); r.code != 200 || r.body != "source page" {
		t.Fatalf("after rollback: %d %q", r.code, r.body)
	}
}
