package controlplane_test

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// A real Prometheus scrapes an agent over TLS and verifies it: the cluster
// root as ca_file, the target's address as the name the agent's
// certificate must carry (the node's address as an IP SAN), no
// insecure_skip_verify. One job presents a client certificate from the
// cluster CA and no token, the other the scrape token over HTTPS (the
// deploy/prometheus example); a third asks for another server name and is
// refused, so the first two prove verification happened.
func TestPrometheusScrapesAgentOverTLS(t *testing.T) {
	testenv.RequireDaemon(t, prometheusBin)
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	a := s.StartAgent(t, "tls-1")
	testenv.WaitFor(t, 10*time.Second, "tls-1 READY", func() bool { return nodeStatus(t, s, "tls-1") == "READY" })

	leaf := testenv.AgentCert(t, a).Leaf
	if got := pki.HostsOf(leaf.IPAddresses, leaf.DNSNames); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Fatalf("node certificate names %q, want the node's address [127.0.0.1]", got)
	}

	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rootFile := write("root.crt", pki.EncodeCertsPEM([]*x509.Certificate{s.CA().Root()}))
	// Any certificate chaining to the cluster root is a client the agent
	// admits; a server identity is one the test can mint on the spot.
	client, err := s.CA().IssueServerCertificate("prometheus", nil)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKeyPEM(client.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	inter, err := x509.ParseCertificate(client.Certificate[1])
	if err != nil {
		t.Fatal(err)
	}
	certFile := write("client.crt", pki.EncodeCertsPEM([]*x509.Certificate{client.Leaf, inter}))
	keyFile := write("client.key", keyPEM)
	tok, _, err := s.Admin.CreateScrapeToken(ctx, "prometheus")
	if err != nil {
		t.Fatal(err)
	}
	tokFile := write("token", []byte(tok))

	sdURL := strings.Replace(s.URL(), "https://", "http://", 1) + "/v1/prometheus/sd"
	job := func(name, auth, tls string) string {
		return fmt.Sprintf(`
  - job_name: %[1]s
    scheme: https%[2]s
    tls_config:
      ca_file: %[3]s%[4]s
    http_sd_configs:
      - url: %[5]s
        refresh_interval: 1s
        authorization:
          credentials_file: %[6]s
    relabel_configs:
      - source_labels: [service]
        regex: agent
        action: keep
      - regex: service
        action: labeldrop
`, name, auth, rootFile, tls, sdURL, tokFile)
	}
	clientCert := fmt.Sprintf("\n      cert_file: %s\n      key_file: %s", certFile, keyFile)
	token := fmt.Sprintf("\n    authorization:\n      credentials_file: %s", tokFile)
	base := startPrometheus(t, `
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:`+
		job("by-certificate", "", clientCert)+
		job("by-token", token, "")+
		job("wrong-name", token, clientCert+"\n      server_name: 192.0.2.1"))

	type target struct {
		Labels    map[string]string `json:"labels"`
		Health    string            `json:"health"`
		LastError string            `json:"lastError"`
		ScrapeURL string            `json:"scrapeUrl"`
	}
	targets := func() map[string]target {
		var out struct {
			Data struct {
				ActiveTargets []target `json:"activeTargets"`
			} `json:"data"`
		}
		promGet(t, base, "/api/v1/targets?state=active", &out)
		m := map[string]target{}
		for _, tg := range out.Data.ActiveTargets {
			m[tg.Labels["job"]] = tg
		}
		return m
	}
	var got map[string]target
	testenv.WaitFor(t, 60*time.Second, "the three jobs scraped tls-1", func() bool {
		got = targets()
		for _, j := range []string{"by-certificate", "by-token", "wrong-name"} {
			if got[j].Health == "" || got[j].Health == "unknown" {
				return false
			}
		}
		return true
	})
	for _, j := range []string{"by-certificate", "by-token"} {
		tg := got[j]
		if tg.Health != "up" || tg.Labels["node"] != "tls-1" || !strings.HasPrefix(tg.ScrapeURL, "https://127.0.0.1:") {
			t.Errorf("%s: %+v, want tls-1 up over https://127.0.0.1", j, tg)
		}
	}
	if tg := got["wrong-name"]; tg.Health != "down" || !strings.Contains(tg.LastError, "certificate is valid for 127.0.0.1") {
		t.Errorf("wrong-name: %+v, want down on the certificate's name", tg)
	}
}

// Renewal names the node's address as its record says at that moment: a
// changed address is in the next certificate, the identity is unchanged.
func TestRenewFollowsNodeAddress(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := testenv.Context(t)
	a := s.StartAgent(t, "addr-1")
	cert := testenv.AgentCert(t, a)
	if ips := cert.Leaf.IPAddresses; len(ips) != 1 || !ips[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("enrolled certificate IP SANs %v, want [127.0.0.1]", ips)
	}
	ev := store.NewAuditEvent("test", "", "updateNode", "addr-1", "ok")
	if _, err := s.Store().UpdateNode(ctx, "addr-1", func(n *store.Node) error { n.Address = "127.0.0.2"; return nil }, ev); err != nil {
		t.Fatal(err)
	}
	resp, err := gatewayClient(t, s, cert).Renew(ctx, &agentpb.RenewRequest{})
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := x509.ParseCertificate(resp.GetCertificateChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := pki.HostsOf(renewed.IPAddresses, renewed.DNSNames); !slices.Equal(got, []string{"127.0.0.2"}) {
		t.Errorf("renewed certificate names %q, want the new address [127.0.0.2]", got)
	}
	if n, err := pki.NodeName(renewed); err != nil || n != "addr-1" {
		t.Errorf("renewed certificate's node %q, %v", n, err)
	}
	evs, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{Action: "renewCertificate", Target: "addr-1"}, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Detail["hosts"] != "127.0.0.2" || evs[0].Detail["serial"] != pki.SerialHex(renewed) {
		t.Errorf("renewal audit events %+v, want one naming hosts 127.0.0.2 and the new serial", evs)
	}

	// A record whose address no certificate can name (the API refuses
	// such addresses; an old or hand-edited record) does not block the
	// renewal: the certificate then names no address.
	if _, err := s.Store().UpdateNode(ctx, "addr-1", func(n *store.Node) error { n.Address = "10.0.0.1:22"; return nil }, ev); err != nil {
		t.Fatal(err)
	}
	next := &tls.Certificate{Certificate: resp.GetCertificateChain(), PrivateKey: cert.PrivateKey, Leaf: renewed}
	resp, err = gatewayClient(t, s, next).Renew(ctx, &agentpb.RenewRequest{})
	if err != nil {
		t.Fatalf("renewal with an unusable address on record: %v", err)
	}
	again, err := x509.ParseCertificate(resp.GetCertificateChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(again.IPAddresses)+len(again.DNSNames) != 0 {
		t.Errorf("renewed with an unusable address: names %v %v, want none", again.IPAddresses, again.DNSNames)
	}
}

// A renewed certificate keeps the node's address: after the agent renews,
// its /metrics port serves the new certificate, and a client dialling the
// node's address verifies it with the cluster root alone.
func TestRenewedAgentCertificateKeepsAddress(t *testing.T) {
	s := testenv.StartServer(t, testenv.WithCertLifetime(6*time.Second))
	a := s.StartAgent(t, "renew-1")
	ctx := testenv.Context(t)
	roots := x509.NewCertPool()
	roots.AddCert(s.CA().Root())
	var newest string
	testenv.WaitFor(t, 15*time.Second, "certificate renewed", func() bool {
		st, _, err := s.Store().GetNodeState(ctx, "renew-1")
		if err != nil || len(st.CertSerials) != 2 {
			return false
		}
		newest = st.CertSerials[1]
		return true
	})
	var served *x509.Certificate
	testenv.WaitFor(t, 10*time.Second, "the renewed certificate served on /metrics", func() bool {
		// The address is 127.0.0.1:port: crypto/tls verifies the IP SAN.
		c, err := tls.Dial("tcp", a.MetricsAddr(), &tls.Config{RootCAs: roots})
		if err != nil {
			t.Logf("dial %s: %v", a.MetricsAddr(), err)
			return false
		}
		defer c.Close()
		served = c.ConnectionState().PeerCertificates[0]
		return pki.SerialHex(served) == newest
	})
	if got := pki.HostsOf(served.IPAddresses, served.DNSNames); !slices.Equal(got, []string{"127.0.0.1"}) {
		t.Errorf("renewed certificate names %q, want [127.0.0.1]", got)
	}
}
