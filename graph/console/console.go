// Package console serves nPanel's GraphQL console: GraphiQL behind a
// sign-in form, with every script, stylesheet and font embedded in the
// binary, so that it works where a browser reaches nothing but the server
// (a datacenter without internet).
//
// The page is served at the GraphQL endpoint (GET /graphql from a browser)
// and its assets under AssetPrefix at content-hashed URLs, cached for a
// year; the page itself is never cached, so a new binary's page names the
// new assets. The third-party assets (assets/, see its README.md) are
// stored gzipped as vendored and sent as they are to every browser that
// accepts gzip, which is all of them.
package console

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// AssetPrefix is the path the assets are served under; the server routes
// GET AssetPrefix... to Handler.
const AssetPrefix = "/console/"

//go:embed assets/*/*.gz static/*
var files embed.FS

// Console serves the page and the assets. It holds no per-request state.
type Console struct {
	page   *file
	assets map[string]*file // by URL path, AssetPrefix + hash + "/" + name
}

// file is one response body, kept gzipped; identity is decoded per request
// for the rare client that does not accept gzip.
type file struct {
	gz          []byte
	contentType string
}

var shared = sync.OnceValue(func() *Console {
	c, err := build(files)
	if err != nil {
		// The inputs are embedded: a failure is a broken build, which the
		// package's tests catch.
		panic(fmt.Sprintf("console: %v", err))
	}
	return c
})

// Handler returns the console, built once per process on first use (a few
// milliseconds: the vendored assets are gzipped already).
func Handler() *Console { return shared() }

// vendored names the page's third-party assets: template field, file.
var vendored = map[string]string{
	"React":       "assets/react/react.production.min.js.gz",
	"ReactDOM":    "assets/react-dom/react-dom.production.min.js.gz",
	"GraphiQL":    "assets/graphiql/graphiql.min.js.gz",
	"GraphiQLCSS": "assets/graphiql/graphiql.min.css.gz",
}

// own names the console's own assets, gzipped at build.
var own = map[string]string{
	"ConsoleJS":  "static/console.js",
	"ConsoleCSS": "static/console.css",
}

func build(fsys fs.FS) (*Console, error) {
	c := &Console{assets: map[string]*file{}}
	urls := map[string]string{}
	add := func(field, name string, gz []byte) {
		sum := sha256.Sum256(gz)
		p := AssetPrefix + hex.EncodeToString(sum[:6]) + "/" + name
		c.assets[p] = &file{gz: gz, contentType: contentType(name)}
		// Relative to the page's URL (/graphql), so that the console also
		// works behind a proxy that serves the API under a path prefix.
		urls[field] = strings.TrimPrefix(p, "/")
	}
	for field, name := range vendored {
		gz, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		add(field, strings.TrimSuffix(path.Base(name), ".gz"), gz)
	}
	for field, name := range own {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		add(field, path.Base(name), compress(b))
	}
	tmpl, err := template.ParseFS(fsys, "static/index.html")
	if err != nil {
		return nil, err
	}
	var page bytes.Buffer
	if err := tmpl.Execute(&page, urls); err != nil {
		return nil, fmt.Errorf("render index.html: %w", err)
	}
	c.page = &file{gz: compress(page.Bytes()), contentType: "text/html; charset=utf-8"}
	return c, nil
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	}
	return "application/octet-stream"
}

func compress(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// ServeHTTP serves an asset for a path under AssetPrefix and the page for
// any other.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	if strings.HasPrefix(r.URL.Path, AssetPrefix) {
		f := c.assets[r.URL.Path]
		if f == nil {
			http.NotFound(w, r)
			return
		}
		// The URL changes with the content: cache it for good.
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
		f.serve(w, r)
		return
	}
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Security-Policy", csp(r.Host))
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	c.page.serve(w, r)
}

func (f *file) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Add("Vary", "Accept-Encoding")
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		h.Set("Content-Encoding", "gzip")
		h.Set("Content-Length", fmt.Sprint(len(f.gz)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(f.gz)
		}
		return
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	zr, err := gzip.NewReader(bytes.NewReader(f.gz))
	if err != nil {
		return // checked by the tests for every embedded file
	}
	io.Copy(w, zr)
}

// acceptsGzip reports whether an Accept-Encoding header admits gzip: named
// (or *) without q=0.
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding != "gzip" && coding != "x-gzip" && coding != "*" {
			continue
		}
		if v, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q="); ok {
			if q, err := strconv.ParseFloat(v, 64); err == nil && q == 0 {
				continue
			}
		}
		return true
	}
	return false
}

// validHost is what may be copied from the Host header into the policy:
// a name or address and a port, nothing that could end a directive.
var validHost = regexp.MustCompile(`^[A-Za-z0-9.\-]+(:[0-9]+)?$|^\[[0-9A-Fa-f:.]+\](:[0-9]+)?$`)

// csp is the page's Content-Security-Policy: scripts, styles and requests
// from the page's own origin only, and websockets to the same host, which
// 'self' covers in CSP 3 but not in every browser. Fonts and a few icons
// come as data: URLs inside GraphiQL's stylesheet. No inline script or
// style: the page has none.
func csp(host string) string {
	connect := "'self'"
	if validHost.MatchString(host) {
		connect += " ws://" + host + " wss://" + host
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; connect-src " + connect +
		"; img-src 'self' data:; font-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}
