package controlplane_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/internal/etcdtls"
	"github.com/npanel/npanel/internal/testenv"
)

const pebbleBinary = "/usr/bin/pebble"

// --api-domain: the API's certificate is ordered from a real ACME server
// (Pebble, with its real validation authority) through TLS-ALPN-01
// answered by the API listener itself; Pebble finds the name through a DNS
// server of the test's. Its key stays in the data dir, mode 0600.
func TestAPIDomainACME(t *testing.T) {
	if _, err := os.Stat(pebbleBinary); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pebble is not installed: %v", err)
		}
		t.Skipf("pebble is not installed (apt-get install pebble): %v", err)
	}
	const domain = "cp1.hostco.net"
	apiAddr := testenv.FreeAddr(t)
	_, apiPort, _ := net.SplitHostPort(apiAddr)
	dnsAddr := startTestDNS(t, domain)
	dir, mgmt := startPebble(t, apiPort, dnsAddr)

	dataDir := t.TempDir()
	ctx := testenv.Context(t)
	cfg := controlplane.Config{DataDir: dataDir, APIListen: apiAddr, AgentListen: testenv.FreeAddr(t),
		GossipListen: "127.0.0.1:0", AdminPassword: testenv.AdminPassword, APIDomain: domain,
		ACME:   controlplane.ACMEConfig{DirectoryURL: dir.url, RootCAFile: dir.caFile},
		Logger: testenv.Logger()}
	stop := runServer(t, cfg)
	// Pebble's issuing root changes at every start: fetched from its
	// management port.
	roots := x509.NewCertPool()
	haveRoot := false
	testenv.WaitFor(t, 60*time.Second, "the API's ACME certificate", func() bool {
		if !haveRoot {
			pem := pebbleRoot(t, mgmt)
			if pem == nil {
				return false
			}
			haveRoot = roots.AppendCertsFromPEM(pem)
		}
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", apiAddr, &tls.Config{ServerName: domain, RootCAs: roots})
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	api := client.New("https://"+apiAddr, "", client.WithTLS(&tls.Config{ServerName: domain, RootCAs: roots}))
	admin, _, err := api.Login(ctx, "admin", testenv.AdminPassword)
	if err != nil {
		t.Fatalf("login over the ACME certificate: %v", err)
	}
	if _, err := admin.Nodes(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{domain + ".key", "account.key"} {
		fi, err := os.Stat(filepath.Join(dataDir, "api-acme", name))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", name, fi, err)
		}
	}

	// No private key in clear in etcd.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + filepath.Join(dataDir, controlplane.EtcdClientSocket)},
		DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	all, err := cli.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range all.Kvs {
		if strings.Contains(string(kv.Value), "PRIVATE KEY") {
			t.Errorf("etcd key %s holds a PEM private key", kv.Key)
		}
	}

	// A restart serves the stored certificate from its first handshake:
	// no new order.
	stop()
	runServer(t, cfg)
	c, err := tls.Dial("tcp", apiAddr, &tls.Config{ServerName: domain, RootCAs: roots})
	if err != nil {
		t.Fatalf("handshake right after the restart: %v", err)
	}
	c.Close()
}

// runServer runs a replica of cfg until the returned stop (or the test's
// end), once it is ready.
func runServer(t *testing.T, cfg controlplane.Config) (stop func()) {
	t.Helper()
	srv, err := controlplane.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-srv.Ready():
	case err := <-done:
		once.Do(cancel)
		t.Fatalf("server did not start: %v", err)
	}
	return stop
}

// startTestDNS answers A queries for domain with 127.0.0.1 and everything
// else with an empty answer, on UDP and TCP.
func startTestDNS(t *testing.T, domain string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Skipf("TCP port of the test DNS: %v", err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA && strings.EqualFold(q.Name, dns.Fqdn(domain)) {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
					A: net.ParseIP("127.0.0.1")})
			}
		}
		_ = w.WriteMsg(m)
	})
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: ln, Handler: h}
	go func() { _ = udp.ActivateAndServe() }()
	go func() { _ = tcp.ActivateAndServe() }()
	t.Cleanup(func() { _ = udp.Shutdown(); _ = tcp.Shutdown() })
	return pc.LocalAddr().String()
}

type pebbleDir struct {
	url    string // the ACME directory
	caFile string // the CA of Pebble's own HTTPS
}

// startPebble runs Pebble with its real validation authority, validating
// TLS-ALPN-01 on tlsPort and resolving names through dnsServer.
func startPebble(t *testing.T, tlsPort, dnsServer string) (pebbleDir, string) {
	t.Helper()
	dir := t.TempDir()
	files, err := etcdtls.Write(dir) // a serving certificate for 127.0.0.1
	if err != nil {
		t.Fatal(err)
	}
	listen, mgmt := testenv.FreeAddr(t), testenv.FreeAddr(t)
	_, httpPort, _ := net.SplitHostPort(testenv.FreeAddr(t))
	hp, _ := strconv.Atoi(httpPort)
	tp, _ := strconv.Atoi(tlsPort)
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": files.ServerCert, "privateKey": files.ServerKey,
		"httpPort": hp, "tlsPort": tp, "ocspResponderURL": "", "externalAccountBindingRequired": false,
	}})
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(pebbleBinary, "-config", confFile, "-dnsserver", dnsServer)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("pebble:\n%s", out.String())
		}
	})
	ca, err := os.ReadFile(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := fmt.Sprintf("https://%s/dir", listen)
	testenv.WaitFor(t, 30*time.Second, "pebble /dir", func() bool {
		resp, err := hc.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return pebbleDir{url: url, caFile: files.CA}, "https://" + mgmt
}

// pebbleRoot is Pebble's issuing root (PEM), nil while it does not answer.
func pebbleRoot(t *testing.T, mgmt string) []byte {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Get(mgmt + "/roots/0")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return nil
	}
	return b
}
