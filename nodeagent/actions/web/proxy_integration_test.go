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
