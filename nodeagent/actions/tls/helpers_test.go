package tls

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	legolog "github.com/go-acme/lego/v5/log"

	"github.com/npanel/npanel/internal/testenv/pdns"
	"github.com/npanel/npanel/internal/testenv/pebble"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/nodeagent/platform"
	"github.com/npanel/npanel/protos/agentpb"
)

// recorder is an Installer that remembers what it was given.
type recorder struct {
	mu       sync.Mutex
	installs []installed
	removes  []string
	fail     error
}

type installed struct {
	host       string
	chain, key []byte
}

func (r *recorder) InstallCertificate(_ context.Context, _ *actions.Env, host string, chainPEM, keyPEM []byte) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		return nil, r.fail
	}
	r.installs = append(r.installs, installed{host, bytes.Clone(chainPEM), bytes.Clone(keyPEM)})
	return []string{"nginx"}, nil
}

func (r *recorder) RemoveCertificate(_ context.Context, _ *actions.Env, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removes = append(r.removes, host)
	return []string{"nginx"}, nil
}

func (r *recorder) last(t testing.TB) installed {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.installs) == 0 {
		t.Fatal("nothing installed")
	}
	return r.installs[len(r.installs)-1]
}

// TestMain silences lego's logger, which is process-wide, unless
// NPANEL_TEST_LOG is set.
func TestMain(m *testing.M) {
	legolog.SetDefault(testLogger())
	os.Exit(m.Run())
}

func logOut() io.Writer {
	if os.Getenv("NPANEL_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func testLogger() *slog.Logger {
	if os.Getenv("NPANEL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// acmeEnv is one test's world: a PowerDNS serving the test zone, a Pebble
// that resolves through it and validates HTTP-01 against a Go file server
// serving the challenge directory, and an agent Env publishing DNS-01
// records into that PowerDNS.
type acmeEnv struct {
	dns     *pdns.Server
	pebble  *pebble.Server
	env     *actions.Env
	m       *Module
	web     *recorder
	mail    *recorder
	chalDir string
	zone    string

	log lockedBuffer // everything the actions logged

	mu        sync.Mutex
	published map[string][]string // fqdn -> TXT values
	publishes int
}

const testZone = "example.com"

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if strings.EqualFold(os.Getenv("CI"), "true") {
			t.Fatal("the ACME tests run as root (make test)")
		}
		t.Skip("needs root")
	}
}

// newACMEEnv starts it all. aRecords are the names of the zone that
// resolve to 127.0.0.1.
func newACMEEnv(t testing.TB, aRecords ...string) *acmeEnv {
	t.Helper()
	return newACMEEnvWith(t, nil, aRecords...)
}

// newACMEEnvWith is newACMEEnv with Pebble's options changed by tune.
func newACMEEnvWith(t testing.TB, tune func(*pebble.Options), aRecords ...string) *acmeEnv {
	t.Helper()
	requireRoot(t)
	pebble.Require(t)
	e := &acmeEnv{zone: testZone, published: map[string][]string{}}
	e.dns = pdns.Start(t, pdns.Options{})
	e.createZone(t, aRecords)

	e.chalDir = filepath.Join(t.TempDir(), "acme-challenge")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/.well-known/acme-challenge/", http.StripPrefix("/.well-known/acme-challenge/", http.FileServer(http.Dir(e.chalDir))))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	popts := pebble.Options{
		HTTPPort:  ln.Addr().(*net.TCPAddr).Port,
		TLSPort:   pebble.FreePort(t),
		DNSServer: e.dns.DNSAddr,
	}
	if tune != nil {
		tune(&popts)
	}
	e.pebble = pebble.Start(t, popts)
	e.web, e.mail = &recorder{}, &recorder{}
	e.m = NewModule(e.web, e.mail)
	e.m.ChallengeDir = e.chalDir
	e.env = &actions.Env{
		Node:    "test",
		Logger:  slog.New(slog.NewTextHandler(io.MultiWriter(&e.log, logOut()), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Profile: platform.Debian12(t.TempDir()),
		DataDir: t.TempDir(),
		Unseal: func(sealed []byte, context string) ([]byte, error) {
			// The test "seals" as context + "\x00" + plain.
			c, p, ok := bytes.Cut(sealed, []byte{0})
			if !ok || string(c) != context {
				return nil, fmt.Errorf("sealed for another context")
			}
			return bytes.Clone(p), nil
		},
		PublishChallenge: e.publish,
	}
	return e
}

func seal(context string, plain []byte) []byte {
	return append([]byte(context+"\x00"), plain...)
}

func (e *acmeEnv) acme() *agentpb.AcmeServer {
	return &agentpb.AcmeServer{DirectoryUrl: e.pebble.DirectoryURL, Email: "admin@example.com", RootCasPem: e.pebble.CAPEM}
}

func (e *acmeEnv) pdnsAPI(t testing.TB, method, path string, body any) []byte {
	t.Helper()
	b, err := e.pdnsDo(method, path, body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *acmeEnv) pdnsDo(method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.dns.APIURL+"/api/v1/servers/localhost"+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-API-Key", e.dns.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return nil, fmt.Errorf("pdns %s %s: %s: %s", method, path, resp.Status, out)
	}
	return out, nil
}

type rrset struct {
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	TTL        int      `json:"ttl"`
	ChangeType string   `json:"changetype,omitempty"`
	Records    []record `json:"records"`
}

type record struct {
	Content  string `json:"content"`
	Disabled bool   `json:"disabled"`
}

func (e *acmeEnv) createZone(t testing.TB, aRecords []string) {
	z := e.zone + "."
	sets := []rrset{
		{Name: z, Type: "SOA", TTL: 60, Records: []record{{Content: "ns1." + z + " hostmaster." + z + " 1 3600 600 86400 60"}}},
		{Name: z, Type: "NS", TTL: 60, Records: []record{{Content: "ns1." + z}}},
		{Name: "ns1." + z, Type: "A", TTL: 60, Records: []record{{Content: "127.0.0.1"}}},
	}
	for _, n := range aRecords {
		sets = append(sets, rrset{Name: n + ".", Type: "A", TTL: 60, Records: []record{{Content: "127.0.0.1"}}})
	}
	e.pdnsAPI(t, http.MethodPost, "/zones", map[string]any{"name": z, "kind": "Native", "rrsets": sets})
}

// publish is the test's control plane: it adds or withdraws one value of
// the challenge's TXT record set in PowerDNS.
func (e *acmeEnv) publish(_ context.Context, req *agentpb.PublishChallengeRequest) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.publishes++
	if !strings.HasPrefix(req.Fqdn, "_acme-challenge.") || strings.HasSuffix(req.Fqdn, ".") {
		return fmt.Errorf("bad fqdn %q", req.Fqdn)
	}
	vals := e.published[req.Fqdn]
	if req.Remove {
		vals = slices.DeleteFunc(vals, func(v string) bool { return v == req.Value })
	} else if !slices.Contains(vals, req.Value) {
		vals = append(vals, req.Value)
	}
	e.published[req.Fqdn] = vals
	set := rrset{Name: req.Fqdn + ".", Type: "TXT", TTL: 5, ChangeType: "REPLACE"}
	if len(vals) == 0 {
		set.ChangeType = "DELETE"
	}
	for _, v := range vals {
		set.Records = append(set.Records, record{Content: `"` + v + `"`})
	}
	_, err := e.pdnsDo(http.MethodPatch, "/zones/"+e.zone+".", map[string]any{"rrsets": []rrset{set}})
	return err
}

// txt returns the TXT values PowerDNS has for fqdn.
func (e *acmeEnv) txt(t testing.TB, fqdn string) []string {
	t.Helper()
	b := e.pdnsAPI(t, http.MethodGet, "/zones/"+e.zone+".", nil)
	var z struct{ RRsets []rrset }
	if err := json.Unmarshal(b, &z); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range z.RRsets {
		if s.Name == fqdn+"." && s.Type == "TXT" {
			for _, r := range s.Records {
				out = append(out, r.Content)
			}
		}
	}
	return out
}

// pebbleRoots returns a pool with this Pebble run's issuing root.
func (e *acmeEnv) pebbleRoots(t testing.TB) (*x509.CertPool, []byte) {
	t.Helper()
	root, err := e.pebble.Root(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(root) {
		t.Fatalf("no root in %q", root)
	}
	return pool, root
}
