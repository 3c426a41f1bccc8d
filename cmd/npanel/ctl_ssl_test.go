package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

// npanel ctl ssl through the real binary against a server in the test
// process (whose store the test drives as the certificate controller
// would): every subcommand's happy path, and exit 2 with a message for bad
// input, the CLI's own checks and the server's INVALID_INPUT alike.
func TestSSLCLI(t *testing.T) {
	s := testenv.StartServer(t)
	ctx := context.Background()
	s.FakeNode(t, "n1", nil, 100, 100_000)
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := x509.MarshalPKIXPublicKey(nodeKey.Public())
	if err := s.Store().UpdateNodeState(ctx, "n1", func(ns *store.NodeState) bool { ns.PublicKey = pub; return true }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "ssl", DiskMB: 100, BandwidthMB: 100, Domains: 2, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	const d = "clissl.example.com"
	if _, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "clissl", Domain: d, Plan: "ssl"}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "clissl placed", func() bool {
		a, err := s.Admin.Account(ctx, "clissl")
		return err == nil && a != nil && a.NodeName() != ""
	})
	env := []string{"XDG_CONFIG_HOME=" + t.TempDir(), "NPANEL_SERVER=" + s.URL()}
	if out, code := run(t, env, testenv.AdminPassword, "ctl", "login", "--password-stdin"); code != 0 {
		t.Fatalf("login: exit %d: %s", code, out)
	}

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, certFile, keyFile, d, "www."+d)
	strayCert, strayKey := filepath.Join(dir, "stray.pem"), filepath.Join(dir, "stray.key")
	writeSelfSigned(t, strayCert, strayKey, d)

	for _, args := range [][]string{
		{"ctl", "ssl", "request", d, "--challenge", "tls-alpn01"},
		{"ctl", "ssl", "request", d, "--san", "*." + d},
		{"ctl", "ssl", "request", d, "--san", "www.example.org"},
		{"ctl", "ssl", "request", "not a domain"},
		{"ctl", "ssl", "request"},
		{"ctl", "ssl", "list", "--status", "bogus"},
		{"ctl", "ssl", "list", "--limit", "0"},
		{"ctl", "ssl", "expiring", "--days", "-1"},
		{"ctl", "ssl", "revoke", d, "--reason", "because", "--yes"},
		{"ctl", "ssl", "revoke", d, "--reason", "2", "--yes"},
		{"ctl", "ssl", "install", d, "--cert", certFile},
		{"ctl", "ssl", "install", d, "--cert", certFile, "--key", filepath.Join(dir, "missing.pem")},
		{"ctl", "ssl", "install", d, "--cert", certFile, "--key", strayKey, "--allow-untrusted"},
		{"ctl", "ssl", "install", d, "--cert", keyFile, "--key", keyFile, "--allow-untrusted"},
		{"ctl", "ssl", "install", d, "--cert", certFile, "--key", keyFile},
		{"ctl", "ssl", "redirect", d, "maybe"},
		{"ctl", "ssl", "hsts", d, "forever"},
		{"ctl", "ssl", "hsts", d, "99999999999"},
		{"ctl", "ssl", "auto-renew", d, "sometimes"},
		{"ctl", "ssl", "show"},
		{"ctl", "ssl", "frobnicate"},
	} {
		out, code := run(t, env, "", args...)
		if code != 2 || len(strings.TrimSpace(out)) == 0 {
			t.Errorf("%v: exit %d, want 2 with a message: %s", args, code, out)
		}
		if strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("%v: the output quotes a key: %s", args, out)
		}
	}
	if c, err := s.Store().GetCertificate(ctx, d); err == nil && !c.Auto {
		t.Fatalf("refused commands stored a certificate: %+v", c)
	}
	for _, args := range [][]string{
		{"ctl", "ssl", "show", "nowhere.example.com"},
		{"ctl", "ssl", "renew", "nowhere.example.com"},
		{"ctl", "ssl", "delete", "nowhere.example.com", "--yes"},
	} {
		if out, code := run(t, env, "", args...); code != 1 || !strings.Contains(out, "NOT_FOUND") {
			t.Errorf("%v: exit %d, want 1 with NOT_FOUND: %s", args, code, out)
		}
	}

	// request --wait follows the order until the controller reports it.
	go func() {
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if _, err := s.Store().GetCertificate(ctx, d); err == nil {
				break
			}
		}
		_, _ = s.Store().UpdateCertificate(ctx, d, func(c *store.Certificate) ([]*store.CertTask, error) {
			c.Status.State, c.Status.ObservedGeneration = store.CertIssued, c.Generation
			c.Status.Issuer, c.Status.Serial = "CN=Test CA", "abc123"
			c.Status.NotBefore, c.Status.NotAfter = time.Now(), time.Now().Add(20*24*time.Hour)
			c.AddEvent(time.Now(), "issued", "by the test")
			return nil, nil
		}, store.AuditEvent{})
	}()
	out, code := run(t, env, "", "ctl", "ssl", "request", d, "--san", "www."+d, "--wait", "--timeout", "30s")
	if code != 0 || !strings.Contains(out, "ISSUED") || !strings.Contains(out, "www."+d) {
		t.Fatalf("request --wait: exit %d: %s", code, out)
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ctl", "ssl", "list"}, d},
		{[]string{"ctl", "ssl", "list", "--account", "clissl", "--status", "issued", "-o", "json"}, `"id":"` + d + `"`},
		{[]string{"ctl", "ssl", "list", "--domain", "www." + d}, d},
		{[]string{"ctl", "ssl", "expiring", "--days", "30"}, d},
		{[]string{"ctl", "ssl", "show", d}, "abc123"},
		{[]string{"ctl", "ssl", "renew", d}, "renew-requested"},
		{[]string{"ctl", "ssl", "auto-renew", d, "off", "-o", "json"}, `"autoRenew":false`},
		{[]string{"ctl", "ssl", "redirect", d, "on"}, "yes"},
		{[]string{"ctl", "ssl", "hsts", d, "8760h"}, "31536000"},
		{[]string{"ctl", "ssl", "revoke", d, "--reason", "superseded", "--yes"}, "revoke-requested"},
		{[]string{"ctl", "ssl", "install", d, "--cert", certFile, "--key", keyFile, "--allow-untrusted"}, "(installed)"},
		{[]string{"ctl", "ssl", "delete", d, "--yes"}, "(deleting)"},
	} {
		out, code := run(t, env, "", c.args...)
		if code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, want %q in: %s", c.args, code, c.want, out)
		}
		if strings.Contains(out, "PRIVATE KEY") {
			t.Errorf("%v: the output quotes a key: %s", c.args, out)
		}
	}
	if out, code := run(t, env, "", "ctl", "ssl", "expiring", "--days", "1", "-o", "json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("expiring --days 1: exit %d: %s", code, out)
	}
	// Completion of ids.
	for _, sub := range []string{"show", "renew", "delete", "request", "hsts"} {
		if out, code := run(t, env, "", "__complete", "ctl", "ssl", sub, "cli"); code != 0 || !strings.Contains(out, d) {
			t.Errorf("completion of %s: exit %d: %s", sub, code, out)
		}
	}
}

// writeSelfSigned writes a self-signed certificate for names and its key.
func writeSelfSigned(t *testing.T, certFile, keyFile string, names ...string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}), 0o600); err != nil {
		t.Fatal(err)
	}
}
