package controlplane_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/nodeagent"
)

// boughtCert makes a certificate "bought elsewhere" for names: a leaf
// with its PKCS#8 key, both PEM, and the key's DER.
func boughtCert(t *testing.T, names ...string) (certPEM, keyPEM string, keyDER []byte, leaf *x509.Certificate) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: names[0], Organization: []string{"a CA elsewhere"}},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	keyDER, _ = x509.MarshalPKCS8PrivateKey(k)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})), keyDER, leaf
}

// servedLeaf is the leaf an HTTPS listener serves for the SNI name host.
func servedLeaf(addr, host string) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{ServerName: host, InsecureSkipVerify: true}} //nolint:gosec // the leaf is compared byte for byte below
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

// bought is a certificate bought elsewhere, installed through the API.
type bought struct {
	domain  string
	certPEM string
	keyPEM  string
	keyDER  []byte
	leaf    *x509.Certificate
}

// installBought installs, through the API, a certificate bought elsewhere
// for domain and www.domain.
func installBought(t *testing.T, s *testenv.Server, domain string) *bought {
	t.Helper()
	b := &bought{domain: domain}
	b.certPEM, b.keyPEM, b.keyDER, b.leaf = boughtCert(t, domain, "www."+domain)
	if _, err := s.Admin.InstallCertificate(testenv.Context(t), client.InstallCertificateInput{Domain: domain, CertificatePEM: b.certPEM, PrivateKeyPEM: b.keyPEM, AllowUntrusted: true}); err != nil {
		t.Fatal(err)
	}
	return b
}

// servedAt reports whether the HTTPS listener at addr serves b's leaf by
// SNI.
func (b *bought) servedAt(addr string) bool {
	got, err := servedLeaf(addr, b.domain)
	return err == nil && bytes.Equal(got.Raw, b.leaf.Raw)
}

// An installed certificate follows its account in a live migration: the
// source exports its key sealed to the target, the target installs it,
// and the target's nginx serves it by SNI; the record points at the
// target, ISSUED, and no key is ever in clear in etcd.
func TestMigrationE2ECustomCertificate(t *testing.T) { migrateServedCertificateE2E(t, false) }

// An ordered certificate moves the same way: the target serves the very
// leaf the source served, and the record stays an automatic one, renewed
// on its schedule, with nothing ordered again. (The certificate is put
// on the source by an install, then its record made an ordered one: the
// node keeps the same files either way, and no ACME server is needed.)
func TestMigrationE2EOrderedCertificate(t *testing.T) { migrateServedCertificateE2E(t, true) }

func migrateServedCertificateE2E(t *testing.T, ordered bool) {
	testenv.RequireDaemon(t, "/usr/sbin/nginx")
	testenv.RequireDaemon(t, "/usr/sbin/php-fpm8.2")
	needMigrationHost(t)
	s := testenv.StartServer(t)
	src := s.StartAgent(t, "src-1", testenv.WithModules(t, "web"), func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	dst := s.StartIsolatedAgent(t, "dst-1", testenv.WithModules(t, "web"), func(c *nodeagent.Config) { c.MigrationListen = testenv.FreeAddr(t) })
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	for _, n := range []string{src.Name, dst.Name} {
		testenv.WaitFor(t, 2*time.Minute, "nginx running on "+n, func() bool {
			svcs, _, err := s.Admin.Services(ctx, n)
			for _, sv := range svcs {
				if sv.Name == "nginx" && sv.State == "RUNNING" {
					return true
				}
			}
			_ = err
			return false
		})
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "mig", DiskMB: 100, BandwidthMB: 1000, Domains: 1, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	user := testenv.TestUsername()
	testenv.RemoveUserAtCleanup(t, user)
	domain := user + ".example.com"
	a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: user, Domain: domain, Plan: "mig", Node: src.Name})
	if err != nil {
		t.Fatal(err)
	}
	waitDomainState(t, s.Admin, a.ID, domain, "ACTIVE")

	cert := installBought(t, s, domain)
	certPEM, keyDER, serves := cert.certPEM, cert.keyDER, cert.servedAt
	testenv.WaitFor(t, time.Minute, "the source serves the installed certificate", func() bool { return serves(src.Config.HTTPSListen) })
	if ordered {
		testenv.WaitFor(t, time.Minute, "the certificate ISSUED on the source", func() bool {
			c, err := s.Store().GetCertificate(ctx, domain)
			return err == nil && c.Status.State == store.CertIssued && c.Status.TaskID == "" && c.Status.ObservedGeneration == c.Generation
		})
		if _, err := s.Store().UpdateCertificate(ctx, domain, func(c *store.Certificate) ([]*store.CertTask, error) {
			c.Custom, c.CustomChainPEM, c.AllowUntrusted, c.Auto, c.AutoRenew = false, "", false, true, true
			c.Domains = []string{domain, "www." + domain}
			return nil, nil
		}, store.AuditEvent{}); err != nil {
			t.Fatal(err)
		}
	}
	if serves(dst.Config.HTTPSListen) {
		t.Fatal("the target serves the certificate before the migration")
	}

	m, err := s.Admin.MigrateAccount(ctx, client.MigrateAccountInput{Account: user, ToNode: dst.Name})
	if err != nil {
		t.Fatal(err)
	}
	waitMigration(t, s.Admin, m.ID, "DONE", 4*time.Minute)

	var c *client.Certificate
	testenv.WaitFor(t, time.Minute, "the certificate ISSUED on the target", func() bool {
		c, err = s.Admin.Certificate(ctx, domain)
		return err == nil && c != nil && c.Node != nil && *c.Node == dst.Name && c.Status == "ISSUED" && c.ObservedGeneration == c.Generation
	})
	if c.Custom == ordered || c.ChainPEM == nil || !strings.Contains(*c.ChainPEM, strings.TrimSpace(strings.Split(certPEM, "\n")[1])) {
		t.Fatalf("certificate after the move: %+v", c)
	}
	if ordered {
		sc, err := s.Store().GetCertificate(ctx, domain)
		if err != nil || !sc.Auto || !sc.AutoRenew || sc.Status.RenewAt.IsZero() || len(sc.SealedKey) != 0 {
			t.Fatalf("ordered certificate after the move: %+v, %v", sc, err)
		}
	}
	// A real TLS client with SNI on the target gets the installed leaf.
	testenv.WaitFor(t, 30*time.Second, "the target serves the installed certificate by SNI", func() bool { return serves(dst.Config.HTTPSListen) })
	kinds := map[string]bool{}
	for _, ev := range c.Events {
		kinds[ev.Kind] = true
	}
	if !kinds["moved"] || !kinds["installed"] {
		t.Fatalf("events: %+v", c.Events)
	}
	audit, _, _, err := s.Store().ListAudit(ctx, store.AuditFilter{Action: "certificate.moved", Target: domain}, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(audit) == 0 {
		t.Error("no certificate.moved in the audit log")
	}

	// The key moved sealed only: no value in etcd holds it in clear.
	b64 := base64.StdEncoding.EncodeToString(keyDER)
	resp, err := s.RawEtcd(t).Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte("PRIVATE KEY")) || bytes.Contains(kv.Value, keyDER) || bytes.Contains(kv.Value, []byte(b64[20:80])) {
			t.Errorf("etcd key %s holds the private key in clear", kv.Key)
		}
	}
}
