package console

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The embedded vendored files are the ones assets/README.md and SHA256SUMS
// describe, byte for byte once decompressed.
func TestVendoredAssetsMatchChecksums(t *testing.T) {
	f, err := os.Open("assets/SHA256SUMS")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string]string{}
	for sc := bufio.NewScanner(f); sc.Scan(); {
		name, sum, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", sc.Text())
		}
		want["assets/"+name+".gz"] = sum
	}
	embedded, err := fs.Glob(files, "assets/*/*.gz")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(embedded)
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(embedded, names) {
		t.Fatalf("embedded %v, SHA256SUMS lists %v", embedded, names)
	}
	for name, sum := range want {
		gz, _ := fs.ReadFile(files, name)
		if got := hex.EncodeToString(sha256Sum(t, gunzip(t, gz))); got != sum {
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s", name, got, sum)
		}
		dir := name[:strings.LastIndex(name, "/")]
		if _, err := os.Stat(dir + "/LICENSE"); err != nil {
			t.Errorf("%s has no LICENSE next to it: %v", name, err)
		}
	}
}

func TestPage(t *testing.T) {
	c := Handler()
	req := httptest.NewRequest(http.MethodGet, "/graphql", nil)
	req.Host = "panel.example:8443"
	req.Header.Set("Accept-Encoding", "gzip, deflate, br")
	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, req)
	res := rec.Result()
	if res.StatusCode != 200 || res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("status %d, encoding %q", res.StatusCode, res.Header.Get("Content-Encoding"))
	}
	if got := res.Header.Get("Cache-Control"); got != "no-cache" {
		t.Errorf("page Cache-Control %q", got)
	}
	policy := res.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self';", "style-src 'self';",
		"connect-src 'self' ws://panel.example:8443 wss://panel.example:8443;", "frame-ancestors 'none'"} {
		if !strings.Contains(policy, want) {
			t.Errorf("CSP %q lacks %q", policy, want)
		}
	}
	if strings.Contains(policy, "unsafe") {
		t.Errorf("CSP allows something unsafe: %q", policy)
	}
	page := string(gunzip(t, rec.Body.Bytes()))
	// No inline script or style: every <script> has a src, no style
	// attribute or element.
	for _, tag := range regexp.MustCompile(`(?i)<script[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(tag, " src=") {
			t.Errorf("inline script: %s", tag)
		}
	}
	if regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=`).MatchString(page) {
		t.Errorf("page has an inline style or event handler")
	}
	refs := regexp.MustCompile(`(?:src|href)="(console/[^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) != 6 {
		t.Fatalf("page references %d assets, want 6: %v", len(refs), refs)
	}
	for _, m := range refs {
		if p := "/" + m[1]; c.assets[p] == nil {
			t.Errorf("page references %s, which is not served", p)
		}
	}
}

// A Host header cannot write into the policy.
func TestPolicyIgnoresOddHost(t *testing.T) {
	for _, host := range []string{"a; script-src *", "a b", "", "[::1]:80x"} {
		if p := csp(host); strings.Contains(p, "ws:") || strings.Contains(p, "*") {
			t.Errorf("host %q: policy %q", host, p)
		}
	}
	if p := csp("[::1]:8080"); !strings.Contains(p, "ws://[::1]:8080 wss://[::1]:8080") {
		t.Errorf("IPv6 host: %q", p)
	}
}

func TestAssets(t *testing.T) {
	c := Handler()
	for p := range c.assets {
		for _, gz := range []bool{true, false} {
			req := httptest.NewRequest(http.MethodGet, p, nil)
			if gz {
				req.Header.Set("Accept-Encoding", "gzip")
			} else {
				req.Header.Set("Accept-Encoding", "gzip;q=0, identity")
			}
			rec := httptest.NewRecorder()
			c.ServeHTTP(rec, req)
			res := rec.Result()
			if res.StatusCode != 200 {
				t.Fatalf("GET %s: %d", p, res.StatusCode)
			}
			if got := res.Header.Get("Cache-Control"); !strings.Contains(got, "immutable") || !strings.Contains(got, "max-age=31536000") {
				t.Errorf("%s: Cache-Control %q", p, got)
			}
			if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/javascript") && !strings.HasPrefix(ct, "text/css") {
				t.Errorf("%s: Content-Type %q", p, ct)
			}
			body := rec.Body.Bytes()
			if gz {
				if res.Header.Get("Content-Encoding") != "gzip" {
					t.Fatalf("%s: not gzipped", p)
				}
				body = gunzip(t, body)
			} else if res.Header.Get("Content-Encoding") != "" {
				t.Fatalf("%s: encoded %q for a client that refuses gzip", p, res.Header.Get("Content-Encoding"))
			}
			if !bytes.Equal(body, gunzip(t, c.assets[p].gz)) || len(body) == 0 {
				t.Fatalf("%s: body differs", p)
			}
		}
	}
	for _, p := range []string{AssetPrefix, AssetPrefix + "000000000000/graphiql.min.js", AssetPrefix + "../console.go"} {
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, p, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	for header, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, "deflate, gzip;q=0.5": true, "*": true,
		"gzip;q=0": false, "gzip; q=0.000": false, "br": false, "identity": false, "x-gzip": true,
	} {
		if got := acceptsGzip(header); got != want {
			t.Errorf("acceptsGzip(%q) = %v", header, got)
		}
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sha256Sum(t *testing.T, b []byte) []byte {
	t.Helper()
	s := sha256.Sum256(b)
	return s[:]
}
