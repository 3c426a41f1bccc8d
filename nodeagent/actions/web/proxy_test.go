package web

import (
	"strings"
	"testing"

	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

func TestProxyTarget(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.10:80":          "192.0.2.10:80",
		"[2001:db8::1]:8080":     "[2001:db8::1]:8080",
		"node2.example.com:80":   "node2.example.com:80",
		"127.0.0.1:65535":        "127.0.0.1:65535",
		"[2001:DB8:0::1]:1":      "[2001:db8::1]:1",
		"node-2.example.net:443": "node-2.example.net:443",
	} {
		got, err := proxyTarget(in)
		if err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{
		"", "192.0.2.10", "192.0.2.10:0", "192.0.2.10:65536", "192.0.2.10:080", "192.0.2.10:+80", "192.0.2.10:http",
		"http://192.0.2.10:80", "192.0.2.10:80/path", "192.0.2.10:80;", "node2.example.com:80 ", "Node2.Example.com:80",
		"[fe80::1%eth0]:80", "2001:db8::1:80", "user@host.example.com:80", "host.example.com:80$host",
		"[::ffff:192.0.2.1]:80", "a b:80", "-bad.example.com:80", "node2.example.com:80\n",
	} {
		if got, err := proxyTarget(in); err == nil {
			t.Errorf("%q accepted as %q", in, got)
		}
	}
	if err := ValidateSpec("alice", &agentpb.WebSpec{ProxyTo: "http://x.example.com/"}); err == nil {
		t.Error("ValidateSpec accepted a URL as proxy_to")
	}
}

// A proxied site serves nothing locally: one proxy location, no root, no
// PHP, no local ACME tokens; HTTPS redirect and HSTS as the site says.
func TestRenderProxy(t *testing.T) {
	w := platform.Debian12("/srv/np").Web()
	o := Owner{Username: "alice", UID: 1000, GID: 1000, Home: "/srv/np/home/alice"}
	tl := vhostTLS{Listen: []string{"443"}, Params: tlsParamsFile(w), Challenge: ChallengeDir(w)}
	for _, suspended := range []bool{false, true} {
		s := &agentpb.Site{Domain: "example.com", Aliases: []string{"www.example.com"}, Docroot: "public_html", PhpVersion: "8.2", HttpsRedirect: true}
		sr, conf, err := renderSiteExtra(w, []string{"80"}, tl, o, s, suspended, "192.0.2.7:8080", "")
		if err != nil {
			t.Fatal(err)
		}
		c := string(conf)
		if sr.State != StateProxy || sr.PhpVersion != "" || sr.Docroot != "" {
			t.Fatalf("result %+v", sr)
		}
		for _, want := range []string{"proxy_pass http://192.0.2.7:8080;", "proxy_set_header Host $host;", "X-Forwarded-For $proxy_add_x_forwarded_for", "X-Forwarded-Proto $scheme", "return 301 https://$host"} {
			if !strings.Contains(c, want) {
				t.Errorf("suspended=%v: no %q in\n%s", suspended, want, c)
			}
		}
		for _, not := range []string{"root ", "fastcgi", "acme-challenge", "return 503"} {
			if strings.Contains(c, not) {
				t.Errorf("suspended=%v: %q in a proxied site:\n%s", suspended, not, c)
			}
		}
	}
}

// Whatever proxy_to passes renders with the structure of a benign one.
func FuzzProxyTo(f *testing.F) {
	for _, s := range []string{"192.0.2.10:80", "[2001:db8::1]:8080", "node2.example.com:80", "x.example.com:80;evil", "http://a:1/"} {
		f.Add(s)
	}
	w := platform.Debian12("/srv/np").Web()
	o := Owner{Username: "alice", UID: 1000, GID: 1000, Home: "/srv/np/home/alice"}
	tl := vhostTLS{Listen: []string{"443"}, Params: tlsParamsFile(w), Challenge: ChallengeDir(w)}
	s := &agentpb.Site{Domain: "example.com", Docroot: "public_html"}
	_, want, err := renderSiteExtra(w, []string{"80"}, tl, o, s, false, "192.0.2.10:80", "")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if p == "" || ValidateSpec("alice", &agentpb.WebSpec{Sites: []*agentpb.Site{s}, ProxyTo: p}) != nil {
			return
		}
		_, conf, err := renderSiteExtra(w, []string{"80"}, tl, o, s, false, p, "")
		if err != nil {
			t.Fatalf("valid proxy_to does not render: %v", err)
		}
		if !sameCounts(structural(conf), structural(want)) || strings.Count(string(conf), "/") != strings.Count(string(want), "/") {
			t.Fatalf("proxy_to %q changed the structure of the server block:\n%s", p, conf)
		}
	})
}

// With proxy_to_https, HTTPS is proxied over TLS to the new node's HTTPS
// address (SNI and Host the request's), so a site that redirects plain
// HTTP to HTTPS there does not send the client back here forever; plain
// HTTP still goes to proxy_to (or is redirected here first).
func TestRenderProxyHTTPS(t *testing.T) {
	w := platform.Debian12("/srv/np").Web()
	o := Owner{Username: "alice", UID: 1000, GID: 1000, Home: "/srv/np/home/alice"}
	tl := vhostTLS{Listen: []string{"443"}, Params: tlsParamsFile(w), Challenge: ChallengeDir(w)}
	for _, redirect := range []bool{false, true} {
		s := &agentpb.Site{Domain: "example.com", Aliases: []string{"www.example.com"}, Docroot: "public_html", HttpsRedirect: redirect}
		sr, conf, err := renderSiteProxy(w, []string{"80"}, tl, o, s, false, "192.0.2.7:8080", "[2001:DB8::7]:8443", "")
		if err != nil {
			t.Fatal(err)
		}
		if sr.State != StateProxy {
			t.Fatalf("result %+v", sr)
		}
		c := string(conf)
		if n := strings.Count(c, "server {"); n != 2 {
			t.Fatalf("redirect=%v: %d server blocks, want HTTP and HTTPS apart:\n%s", redirect, n, c)
		}
		httpSide, tlsSide, _ := strings.Cut(c[strings.Index(c, "server {")+1:], "server {")
		for _, want := range []string{"proxy_pass https://[2001:db8::7]:8443;", "proxy_ssl_server_name on;", "proxy_ssl_name $host;",
			"proxy_ssl_verify off;", "proxy_set_header Host $host;", "X-Forwarded-Proto $scheme", "listen 443 ssl http2;"} {
			if !strings.Contains(tlsSide, want) {
				t.Errorf("redirect=%v: no %q in the HTTPS block:\n%s", redirect, want, tlsSide)
			}
		}
		if strings.Contains(tlsSide, "http://") || strings.Contains(tlsSide, "return 301") {
			t.Errorf("redirect=%v: the HTTPS block goes to plain HTTP:\n%s", redirect, tlsSide)
		}
		if strings.Contains(httpSide, "https://[") || strings.Contains(httpSide, "ssl") {
			t.Errorf("redirect=%v: the HTTP block speaks TLS:\n%s", redirect, httpSide)
		}
		wantHTTP := "proxy_pass http://192.0.2.7:8080;"
		if redirect {
			wantHTTP = "return 301 https://$host$request_uri;"
		}
		if !strings.Contains(httpSide, wantHTTP) {
			t.Errorf("redirect=%v: no %q in the HTTP block:\n%s", redirect, wantHTTP, httpSide)
		}
	}
	// Without proxy_to_https (an older control plane), as before.
	s := &agentpb.Site{Domain: "example.com", Docroot: "public_html"}
	_, conf, err := renderSiteProxy(w, []string{"80"}, tl, o, s, false, "192.0.2.7:8080", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if c := string(conf); strings.Count(c, "server {") != 1 || strings.Contains(c, "https://") || strings.Contains(c, "proxy_ssl") {
		t.Errorf("without proxy_to_https:\n%s", c)
	}
}

func TestValidateProxyToHTTPS(t *testing.T) {
	site := &agentpb.Site{Domain: "example.com", Docroot: "public_html"}
	for _, sp := range []*agentpb.WebSpec{
		{Sites: []*agentpb.Site{site}, ProxyTo: "192.0.2.7:80", ProxyToHttps: "192.0.2.7:443"},
		{Sites: []*agentpb.Site{site}, ProxyTo: "node2.example.com:80", ProxyToHttps: "[2001:db8::7]:8443"},
	} {
		if err := ValidateSpec("alice", sp); err != nil {
			t.Errorf("%v: %v", sp, err)
		}
	}
	for _, sp := range []*agentpb.WebSpec{
		{Sites: []*agentpb.Site{site}, ProxyToHttps: "192.0.2.7:443"}, // without proxy_to
		{Sites: []*agentpb.Site{site}, ProxyTo: "192.0.2.7:80", ProxyToHttps: "https://192.0.2.7:443"},
		{Sites: []*agentpb.Site{site}, ProxyTo: "192.0.2.7:80", ProxyToHttps: "192.0.2.7:443;"},
		{Sites: []*agentpb.Site{site}, ProxyTo: "192.0.2.7:80", ProxyToHttps: "192.0.2.7"},
		{Sites: []*agentpb.Site{site}, ProxyTo: "192.0.2.7:80", ProxyToHttps: "[fe80::1%eth0]:443"},
		{Sites: []*agentpb.Site{site}, ProxyTo: "192.0.2.7:80", ProxyToHttps: "h.example.com:443$host"},
	} {
		if err := ValidateSpec("alice", sp); err == nil {
			t.Errorf("%v accepted", sp)
		}
	}
}

// Whatever proxy_to_https passes renders with the structure of a benign
// one.
func FuzzProxyToHTTPS(f *testing.F) {
	for _, s := range []string{"192.0.2.10:443", "[2001:db8::1]:8443", "node2.example.com:443", "x.example.com:443;evil", "https://a:1/"} {
		f.Add(s)
	}
	w := platform.Debian12("/srv/np").Web()
	o := Owner{Username: "alice", UID: 1000, GID: 1000, Home: "/srv/np/home/alice"}
	tl := vhostTLS{Listen: []string{"443"}, Params: tlsParamsFile(w), Challenge: ChallengeDir(w)}
	s := &agentpb.Site{Domain: "example.com", Docroot: "public_html", HttpsRedirect: true}
	_, want, err := renderSiteProxy(w, []string{"80"}, tl, o, s, false, "192.0.2.10:80", "192.0.2.10:443", "")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if p == "" || ValidateSpec("alice", &agentpb.WebSpec{Sites: []*agentpb.Site{s}, ProxyTo: "192.0.2.10:80", ProxyToHttps: p}) != nil {
			return
		}
		_, conf, err := renderSiteProxy(w, []string{"80"}, tl, o, s, false, "192.0.2.10:80", p, "")
		if err != nil {
			t.Fatalf("valid proxy_to_https does not render: %v", err)
		}
		if !sameCounts(structural(conf), structural(want)) || strings.Count(string(conf), "/") != strings.Count(string(want), "/") {
			t.Fatalf("proxy_to_https %q changed the structure of the server block:\n%s", p, conf)
		}
	})
}
