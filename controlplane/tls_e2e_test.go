package controlplane_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/internal/testenv/pebble"
	"github.com/npanel/npanel/nodeagent"
)

// lockedBuffer collects the logs of a test's server and agent, to be
// searched for private keys.
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

// gql posts one GraphQL request as token and keeps the raw response, to
// be searched for private keys.
func (n *tlsNode) gql(t testing.TB, token, query string, vars map[string]any, out any) error {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, n.s.URL()+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	n.logs.Write(raw)
	var r struct {
		Data   json.RawMessage `json:"data"`
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	if len(r.Errors) > 0 {
		return fmt.Errorf("%s", r.Errors[0].Message)
	}
	if out != nil {
		return json.Unmarshal(r.Data, out)
	}
	return nil
}

// tlsNode is a cluster of one web+DNS node ordering from a real Pebble
// that validates through the node's PowerDNS and nginx.
type tlsNode struct {
	s      *testenv.Server
	ag     *testenv.Agent
	pebble *pebble.Server
	logs   *lockedBuffer
	mail   bool   // the node runs mail and has the role
	http   string // the node's HTTP listener
	https  string // the node's HTTPS listener
	dns    string // the node's PowerDNS
}

func startTLSNode(t testing.TB, validity time.Duration, mail bool, acme ...func(*controlplane.ACMEConfig)) *tlsNode {
	t.Helper()
	daemons := []string{"/usr/sbin/nginx", "/usr/sbin/php-fpm8.2", "/usr/sbin/pdns_server", "/usr/bin/pebble"}
	modules, roles := []string{"web", "dns"}, []string{"WEB", "DNS"}
	if mail {
		daemons = append(daemons, "/usr/sbin/exim4", "/usr/sbin/dovecot")
		modules, roles = append(modules, "mail"), append(roles, "MAIL")
		// The agent creates the system user Roundcube's pool runs as.
		if !testenv.HasUser("npanel-webmail") {
			testenv.RemoveUserAtCleanup(t, "npanel-webmail")
		}
	}
	for _, d := range daemons {
		testenv.RequireDaemon(t, d)
	}
	if os.Geteuid() != 0 {
		t.Skip("creating Linux users needs root")
	}
	n := &tlsNode{logs: &lockedBuffer{}, mail: mail}
	httpAddr, httpsAddr, dnsAddr := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	_, port, _ := net.SplitHostPort(httpAddr)
	httpPort, _ := strconv.Atoi(port)
	n.http, n.https, n.dns = httpAddr, httpsAddr, dnsAddr
	n.pebble = testenv.StartPebble(t, pebble.Options{HTTPPort: httpPort, DNSServer: dnsAddr, CertificateValidity: validity})
	caFile := filepath.Join(t.TempDir(), "pebble-ca.pem")
	if err := os.WriteFile(caFile, n.pebble.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	n.s = testenv.StartServer(t, func(c *controlplane.Config) {
		c.Logger = log
		c.ACME = controlplane.ACMEConfig{DirectoryURL: n.pebble.DirectoryURL, Email: "hostmaster@example.com", RootCAFile: caFile,
			RenewSweep: time.Second, RetryBase: 2 * time.Second, RetryMax: 10 * time.Second}
		for _, f := range acme {
			f(&c.ACME)
		}
	})
	n.ag = n.s.StartAgent(t, "web-1", testenv.WithModules(t, modules...), func(c *nodeagent.Config) {
		c.HTTPListen, c.HTTPSListen, c.DNSListen = httpAddr, httpsAddr, dnsAddr
		c.NoMailAntivirus = true
		c.Logger = log
	})
	ctx := context.Background()
	testenv.WaitFor(t, 20*time.Second, "web-1 READY", func() bool {
		svcs, _, err := n.s.Admin.Services(ctx, "web-1")
		running := map[string]bool{}
		for _, sv := range svcs {
			running[sv.Name] = sv.State == "RUNNING"
		}
		return err == nil && running["nginx"] && running["pdns"] && (!mail || running["exim"] && running["dovecot"])
	})
	if _, err := n.s.Admin.UpdateNode(ctx, "web-1", client.NodeUpdate{Roles: roles}); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *tlsNode) account(t testing.TB, user string) (id, domain string) {
	t.Helper()
	return n.accountWith(t, user, 3)
}

// accountWith is account with a plan of the given number of domains.
func (n *tlsNode) accountWith(t testing.TB, user string, domains int) (id, domain string) {
	t.Helper()
	ctx := context.Background()
	plan := "tls-" + user
	mailboxes := 0
	if n.mail {
		mailboxes = 2 // a plan with mailboxes needs a node with the mail role
	}
	if _, err := n.s.Admin.CreatePlan(ctx, client.Plan{Name: plan, DiskMB: 2000, BandwidthMB: 1000, Domains: domains, Mailboxes: mailboxes, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	domain = user + ".example.com"
	acct, err := n.s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 60*time.Second, user+" ACTIVE", func() bool {
		a, err := n.s.Admin.Account(ctx, acct.ID)
		return err == nil && a.Status == "ACTIVE"
	})
	return acct.ID, domain
}

type certView struct {
	ID        string   `json:"id"`
	Domains   []string `json:"domains"`
	Issued    []string `json:"issuedDomains"`
	Status    string   `json:"status"`
	Issuer    string   `json:"issuer"`
	Serial    string   `json:"serial"`
	NotAfter  string   `json:"notAfter"`
	LastError *string  `json:"lastError"`
	Events    []struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	} `json:"events"`
}

const certFields = `id domains issuedDomains status issuer serial notAfter lastError events { kind message }`

func (n *tlsNode) certificate(t testing.TB, token, domain string) *certView {
	t.Helper()
	var out struct {
		Certificates struct {
			Edges []struct{ Node certView } `json:"edges"`
		} `json:"certificates"`
	}
	q := `query($d: String) { certificates(filter: {domain: $d}) { edges { node { ` + certFields + ` } } } }`
	if err := n.gql(t, token, q, map[string]any{"d": domain}, &out); err != nil {
		t.Fatal(err)
	}
	for _, e := range out.Certificates.Edges {
		if e.Node.ID == domain {
			return &e.Node
		}
	}
	return nil
}

func (n *tlsNode) waitCert(t testing.TB, token, domain string, timeout time.Duration, ok func(*certView) bool) *certView {
	t.Helper()
	var last *certView
	testenv.WaitFor(t, timeout, "certificate of "+domain, func() bool {
		last = n.certificate(t, token, domain)
		return last != nil && ok(last)
	})
	return last
}

// served returns the leaf the node's nginx serves for name, verified
// against Pebble's roots (nil roots: not verified), and the HTTP status
// and protocol of a GET over it.
func (n *tlsNode) served(t testing.TB, name string, roots *x509.CertPool) (*x509.Certificate, int, string, error) {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{ServerName: name, RootCAs: roots, InsecureSkipVerify: roots == nil},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, n.https)
		},
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := hc.Get("https://" + name + "/")
	if err != nil {
		return nil, 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.TLS.PeerCertificates[0], resp.StatusCode, resp.Proto, nil
}

// leafAt returns the serial (hex) of the leaf addr serves for name, with
// implicit TLS.
func leafAt(addr, name string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return fmt.Sprintf("%x", c.ConnectionState().PeerCertificates[0].SerialNumber), nil
}

func txt(t *testing.T, server, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeTXT)
	c := &dns.Client{Net: "tcp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("TXT %s @%s: %v", name, server, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if tx, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(tx.Txt, ""))
		}
	}
	return out
}

// noPrivateKeys fails when any etcd value, log line or API response the
// test produced holds a PEM private key.
func (n *tlsNode) noPrivateKeys(t testing.TB) {
	t.Helper()
	resp, err := n.s.RawEtcd(t).Get(context.Background(), "/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte("PRIVATE KEY")) {
			t.Errorf("etcd %s holds a private key", kv.Key)
		}
	}
	if strings.Contains(n.logs.String(), "PRIVATE KEY") {
		t.Error("a log line or API response holds a private key")
	}
}

// TestTLSEndToEnd: a new account's site gets a certificate from Pebble
// through HTTP-01 without anyone asking and serves it over HTTPS with
// HTTP/2; a wildcard through DNS-01 in our own PowerDNS; a failed
// challenge leaves the working certificate in place; revocation.
func TestTLSEndToEnd(t *testing.T) {
	n := startTLSNode(t, 0, false)
	ctx := context.Background()
	admin := n.s.Admin.Token()
	user := testUsername(t)
	_, domain := n.account(t, user)

	// HTTPS answers at once with a self-signed certificate.
	testenv.WaitFor(t, 30*time.Second, "HTTPS on "+domain, func() bool {
		_, code, _, err := n.served(t, domain, nil)
		return err == nil && code == 200
	})

	start := time.Now()
	c := n.waitCert(t, admin, domain, 60*time.Second, func(c *certView) bool { return c.Status == "ISSUED" })
	t.Logf("automatic HTTP-01 certificate issued %s after the account was ACTIVE: %v", c.Serial, time.Since(start))
	roots := x509.NewCertPool()
	root, err := n.pebble.Root(ctx)
	if err != nil || !roots.AppendCertsFromPEM(root) {
		t.Fatalf("Pebble's root: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, "issued certificate served", func() bool {
		leaf, code, proto, err := n.served(t, domain, roots)
		return err == nil && code == 200 && proto == "HTTP/2.0" && leaf.VerifyHostname("www."+domain) == nil
	})
	// curl, trusting only Pebble's root, with SNI.
	rootFile := filepath.Join(t.TempDir(), "pebble-root.pem")
	if err := os.WriteFile(rootFile, root, 0o644); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(n.https)
	out, err := exec.Command("/usr/bin/curl", "-sS", "--http2", "--cacert", rootFile, "--resolve", "www."+domain+":"+port+":127.0.0.1",
		"-o", "/dev/null", "-w", "%{http_code} %{http_version}", "https://www."+domain+":"+port+"/").CombinedOutput()
	if err != nil || string(out) != "200 2" {
		t.Fatalf("curl --cacert pebble-root https://www.%s: %s, %v", domain, out, err)
	}

	// A failed challenge (nginx's workers can no longer reach the tokens)
	// keeps the working certificate and reports the failure.
	chall := filepath.Join(n.ag.Config.Prefix, "var/lib/npanel")
	if err := os.Chmod(chall, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := n.gql(t, admin, `mutation($id: ID!) { renewCertificate(id: $id) { id } }`, map[string]any{"id": domain}, nil); err != nil {
		t.Fatal(err)
	}
	failed := n.waitCert(t, admin, domain, 60*time.Second, func(c *certView) bool { return c.LastError != nil && *c.LastError != "" })
	if failed.Status != "ISSUED" || failed.Serial != c.Serial {
		t.Fatalf("after a failed renewal: status %s serial %s, want ISSUED %s", failed.Status, failed.Serial, c.Serial)
	}
	if leaf, _, _, err := n.served(t, domain, roots); err != nil || fmt.Sprintf("%x", leaf.SerialNumber) != strings.ToLower(c.Serial) {
		t.Fatalf("after a failed renewal the node serves %v (err %v), want serial %s", leaf.SerialNumber, err, c.Serial)
	}
	if err := os.Chmod(chall, 0o755); err != nil {
		t.Fatal(err)
	}

	// DNS-01 with a wildcard, through our PowerDNS.
	start = time.Now()
	q := `mutation($d: String!) { requestCertificate(input: {domain: $d, sans: ["*.` + domain + `"], challenge: DNS01}) { id status } }`
	if err := n.gql(t, admin, q, map[string]any{"d": domain}, nil); err != nil {
		t.Fatal(err)
	}
	w := n.waitCert(t, admin, domain, 90*time.Second, func(v *certView) bool {
		return v.Status == "ISSUED" && v.Serial != c.Serial && v.Serial != failed.Serial
	})
	t.Logf("DNS-01 wildcard certificate issued in %v", time.Since(start))
	testenv.WaitFor(t, 10*time.Second, "wildcard served", func() bool {
		leaf, _, _, err := n.served(t, domain, roots)
		return err == nil && leaf.VerifyHostname("anything."+domain) == nil
	})
	testenv.WaitFor(t, 20*time.Second, "challenge record removed", func() bool {
		return len(txt(t, n.dns, "_acme-challenge."+domain)) == 0
	})

	// Revocation: Pebble knows it revoked, and the site goes back to a
	// self-signed certificate.
	if err := n.gql(t, admin, `mutation($id: ID!) { revokeCertificate(id: $id, reason: SUPERSEDED) { id } }`, map[string]any{"id": domain}, nil); err != nil {
		t.Fatal(err)
	}
	n.waitCert(t, admin, domain, 30*time.Second, func(v *certView) bool { return v.Status == "REVOKED" })
	if st, err := n.pebble.CertStatus(ctx, w.Serial); err != nil || st.Status != "Revoked" {
		t.Errorf("Pebble's status of %s: %+v, %v; want Revoked", w.Serial, st, err)
	}
	testenv.WaitFor(t, 10*time.Second, "self-signed back", func() bool {
		_, _, _, err := n.served(t, domain, roots)
		return err != nil
	})

	n.noPrivateKeys(t)
}

// TestTLSHTTP01BehindRedirects: a site that forces HTTPS and redirects
// every request to its www name still validates HTTP-01 against a real
// Pebble (the challenge path is exempt from both), and the renewed
// certificate is served.
func TestTLSHTTP01BehindRedirects(t *testing.T) {
	n := startTLSNode(t, 0, false)
	admin := n.s.Admin.Token()
	_, domain := n.account(t, testUsername(t))
	first := n.waitCert(t, admin, domain, time.Minute, func(c *certView) bool { return c.Status == "ISSUED" })
	for q, vars := range map[string]map[string]any{
		`mutation($d: String!) { setHTTPSRedirect(domain: $d, on: true) { name } }`:        {"d": domain},
		`mutation($d: String!, $to: String) { setRedirect(domain: $d, to: $to) { name } }`: {"d": domain, "to": "https://www." + domain + "/"},
	} {
		if err := n.gql(t, admin, q, vars, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Both are in force: an ordinary request over HTTP is sent away.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	testenv.WaitFor(t, 20*time.Second, "redirects in force on "+domain, func() bool {
		req, _ := http.NewRequest(http.MethodGet, "http://"+n.http+"/index.html", nil)
		req.Host = domain
		resp, err := noFollow.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusMovedPermanently && strings.HasPrefix(resp.Header.Get("Location"), "https://")
	})

	if err := n.gql(t, admin, `mutation($id: ID!) { renewCertificate(id: $id) { id } }`, map[string]any{"id": domain}, nil); err != nil {
		t.Fatal(err)
	}
	c := n.waitCert(t, admin, domain, time.Minute, func(c *certView) bool { return c.Status == "ISSUED" && c.Serial != first.Serial })
	if c.LastError != nil && *c.LastError != "" {
		t.Fatalf("renewed behind redirects with lastError %q", *c.LastError)
	}
	// Served: the TLS handshake's leaf (a request would follow the
	// redirects).
	testenv.WaitFor(t, 10*time.Second, "certificate "+c.Serial+" served", func() bool {
		serial, err := leafAt(n.https, domain)
		return err == nil && strings.EqualFold(serial, c.Serial)
	})
}

// TestTLSRenewalReachesEveryDaemon: with short-lived certificates, the
// automatic certificate of a site with mail covers mail. and webmail.,
// is served by nginx (site and webmail vhost), Exim and Dovecot, is
// renewed on schedule and the renewed one reaches all of them, and the
// site never serves an expired or missing certificate meanwhile.
func TestTLSRenewalReachesEveryDaemon(t *testing.T) {
	n := startTLSNode(t, 2*time.Minute, true)
	ctx := context.Background()
	admin := n.s.Admin.Token()
	user := testUsername(t)
	acct, domain := n.account(t, user)
	if _, err := n.s.Admin.CreateMailbox(ctx, acct, "info@"+domain, "correct horse battery staple", 100); err != nil {
		t.Fatal(err)
	}
	if _, err := n.s.Admin.EnableWebmail(ctx, domain); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	root, err := n.pebble.Root(ctx)
	if err != nil || !roots.AppendCertsFromPEM(root) {
		t.Fatalf("Pebble's root: %v", err)
	}
	covered := func(v *certView) bool {
		return v.Status == "ISSUED" && slices.Contains(v.Issued, "mail."+domain) && slices.Contains(v.Issued, "webmail."+domain)
	}
	first := n.waitCert(t, admin, domain, 2*time.Minute, covered)
	serial := strings.ToLower(first.Serial)
	var lag string
	everywhere := func(want string) func() bool {
		return func() bool {
			for _, at := range []struct{ what, addr, name string }{
				{"nginx", n.https, domain}, {"webmail vhost", n.https, "webmail." + domain},
				{"Dovecot", n.ag.Config.IMAPSListen, "mail." + domain}, {"Exim", n.ag.Config.SMTPSListen, "mail." + domain},
			} {
				if got, err := leafAt(at.addr, at.name); err != nil || got != want {
					lag = fmt.Sprintf("%s serves %s (%v), want %s", at.what, got, err, want)
					return false
				}
			}
			return true
		}
	}
	defer func() {
		if t.Failed() {
			t.Log(lag)
		}
	}()
	testenv.WaitFor(t, 20*time.Second, "the first certificate served by nginx, the webmail vhost, Dovecot and Exim", everywhere(serial))

	// Until the renewal lands, every request verifies against Pebble's
	// roots at the time it is made: never an expired or missing one.
	deadline := time.Now().Add(2 * time.Minute)
	var renewed *certView
	for renewed == nil {
		if time.Now().After(deadline) {
			t.Fatal("no renewal within two minutes of a two-minute certificate")
		}
		if _, code, _, err := n.served(t, domain, roots); err != nil || code != 200 {
			t.Fatalf("HTTPS while waiting for the renewal: %d, %v", code, err)
		}
		if v := n.certificate(t, admin, domain); v != nil && v.Status == "ISSUED" && strings.ToLower(v.Serial) != serial {
			renewed = v
		}
		time.Sleep(250 * time.Millisecond)
	}
	testenv.WaitFor(t, 20*time.Second, "the renewed certificate served everywhere", everywhere(strings.ToLower(renewed.Serial)))
	n.noPrivateKeys(t)
}

// waitServed waits until the node's nginx serves the certificate of
// serial for domain.
func (n *tlsNode) waitServed(t testing.TB, domain, serial string, roots *x509.CertPool) {
	t.Helper()
	testenv.WaitFor(t, 10*time.Second, "certificate "+serial+" served for "+domain, func() bool {
		leaf, _, _, err := n.served(t, domain, roots)
		return err == nil && strings.EqualFold(fmt.Sprintf("%x", leaf.SerialNumber), serial)
	})
}
