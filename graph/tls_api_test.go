package graph_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

const tenantPassword = "tenant-password-0123456789"

// certTenants: two resellers with an account each, each account with an
// owner, on two nodes whose (fake) agents have keys to seal to.
type certTenants struct {
	s                  *testenv.Server
	admin              *client.Client
	resA, resB         *client.Client
	userA, userB       *client.Client
	a1, b1             *client.Account
	caRoot             *x509.Certificate
	caKey              crypto.Signer
	nodeKeys           map[string]*ecdsa.PrivateKey
	a1Domain, b1Domain string
}

func loginAs(t *testing.T, s *testenv.Server, user, pw string) *client.Client {
	t.Helper()
	c, _, err := client.New(s.URL(), "").Login(context.Background(), user, pw)
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

func setupCertTenants(t *testing.T, opts ...testenv.ServerOption) *certTenants {
	t.Helper()
	ctx := context.Background()
	s := testenv.StartServer(t, opts...)
	tn := &certTenants{s: s, admin: s.Admin, nodeKeys: map[string]*ecdsa.PrivateKey{},
		a1Domain: "alpha1.example.com", b1Domain: "bravo1.example.com"}
	for _, n := range []string{"n-eu", "n-us"} {
		s.FakeNode(t, n, map[string]string{"zone": strings.TrimPrefix(n, "n-")}, 100, 100_000)
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(k.Public())
		if err := s.Store().UpdateNodeState(ctx, n, func(ns *store.NodeState) bool { ns.PublicKey = der; return true }); err != nil {
			t.Fatal(err)
		}
		tn.nodeKeys[n] = k
	}
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "basic", DiskMB: 100, BandwidthMB: 1000, Domains: 3, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"resa", "resb"} {
		if _, err := s.Admin.CreateReseller(ctx, r, tenantPassword, 3, 1000, []string{"basic"}, ""); err != nil {
			t.Fatal(err)
		}
	}
	tn.resA, tn.resB = loginAs(t, s, "resa", tenantPassword), loginAs(t, s, "resb", tenantPassword)
	var err error
	if tn.a1, err = tn.resA.CreateAccount(ctx, client.CreateAccountInput{Username: "alpha1", Domain: tn.a1Domain, Plan: "basic"}); err != nil {
		t.Fatal(err)
	}
	if tn.b1, err = tn.resB.CreateAccount(ctx, client.CreateAccountInput{Username: "bravo1", Domain: tn.b1Domain, Plan: "basic"}); err != nil {
		t.Fatal(err)
	}
	if err := tn.resA.CreateUser(ctx, "alphauser", tenantPassword, "alpha1"); err != nil {
		t.Fatal(err)
	}
	if err := tn.resB.CreateUser(ctx, "bravouser", tenantPassword, "bravo1"); err != nil {
		t.Fatal(err)
	}
	tn.userA, tn.userB = loginAs(t, s, "alphauser", tenantPassword), loginAs(t, s, "bravouser", tenantPassword)
	testenv.WaitFor(t, 15*time.Second, "alpha1 and bravo1 placed", func() bool {
		a, errA := tn.admin.Account(ctx, "alpha1")
		b, errB := tn.admin.Account(ctx, "bravo1")
		return errA == nil && errB == nil && a != nil && b != nil && a.NodeName() != "" && b.NodeName() != ""
	})
	// A CA the test trusts in place of the system's roots.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Cert API Test Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	tn.caRoot, _ = x509.ParseCertificate(der)
	tn.caKey = key
	pool := x509.NewCertPool()
	pool.AddCert(tn.caRoot)
	t.Cleanup(graph.SetCertificateRoots(pool))
	t.Cleanup(graph.SetCertificateOrderRate(time.Millisecond, 1000, 1000))
	t.Cleanup(graph.SetCertificateOrdersPerWeek(1000))
	return tn
}

// issue makes a certificate for names signed by signer (nil: the test
// root; else a self-signed one), valid from..until; certificate and key
// PEM, and the key's PKCS#8 DER.
func (tn *certTenants) issue(t *testing.T, selfSigned bool, from, until time.Time, names ...string) (string, string, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: from, NotAfter: until, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	parent, signer := tn.caRoot, tn.caKey
	if selfSigned {
		parent, signer = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalPKCS8PrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})), k
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: succeeded, want %s", what, code)
	}
	if got := client.CodeOf(err); got != code {
		t.Fatalf("%s: code %q (%v), want %s", what, got, err, code)
	}
}

// certState is every certificate record and the account records' site
// settings as stored, for "nothing changed" checks.
func certState(t *testing.T, tn *certTenants) string {
	t.Helper()
	ctx := context.Background()
	certs, err := tn.s.Store().ListCertificates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, c := range certs {
		// The spec only: the certificate controller writes the status
		// (and may create automatic certificates for the sites).
		if c.Auto {
			continue
		}
		c.Status, c.UpdatedAt = store.CertStatus{}, time.Time{}
		j, _ := json.Marshal(c)
		b.Write(j)
	}
	for _, id := range []string{tn.a1.ID, tn.b1.ID} {
		a, _, err := tn.s.Store().GetAccount(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		j, _ := json.Marshal(a.AllSites())
		b.Write(j)
	}
	return b.String()
}

// TestCertRBAC walks every certificate query and mutation with each role:
// the account's owner, its reseller and admins may; another account's
// owner and another reseller see NOT_FOUND (null for the certificate
// query, nothing in lists) and change nothing; anonymous callers are
// UNAUTHENTICATED.
func TestCertRBAC(t *testing.T) {
	tn := setupCertTenants(t)
	ctx := context.Background()
	d := tn.a1Domain
	if _, err := tn.userA.RequestCertificate(ctx, d, []string{"www." + d}, ""); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	certPEM, keyPEM, _ := tn.issue(t, false, now.Add(-time.Hour), now.Add(30*24*time.Hour), d, "www."+d)

	type call func(*client.Client) error
	n := 0
	mutations := map[string]call{
		"requestCertificate": func(c *client.Client) error { _, err := c.RequestCertificate(ctx, d, nil, ""); return err },
		"renewCertificate":   func(c *client.Client) error { _, err := c.RenewCertificate(ctx, d); return err },
		"revokeCertificate":  func(c *client.Client) error { _, err := c.RevokeCertificate(ctx, d, "SUPERSEDED"); return err },
		"deleteCertificate":  func(c *client.Client) error { _, err := c.DeleteCertificate(ctx, d); return err },
		"setAutoRenew":       func(c *client.Client) error { _, err := c.SetAutoRenew(ctx, d, false); return err },
		"installCertificate": func(c *client.Client) error {
			_, err := c.InstallCertificate(ctx, client.InstallCertificateInput{Domain: d, CertificatePEM: certPEM, PrivateKeyPEM: keyPEM})
			return err
		},
		// A setting written as it stands changes nothing and is not
		// audited: each call writes a new value.
		"setHTTPSRedirect": func(c *client.Client) error {
			_, err := c.SetHTTPSRedirect(ctx, d, !siteOf(t, tn, d).HTTPSRedirect)
			return err
		},
		"setHSTS": func(c *client.Client) error { n++; _, err := c.SetHSTS(ctx, d, 3600+n); return err },
	}
	anon := client.New(tn.s.URL(), "")
	before := certState(t, tn)
	for name, c := range mutations {
		wantCode(t, "resb: "+name, c(tn.resB), "NOT_FOUND")
		wantCode(t, "bravouser: "+name, c(tn.userB), "NOT_FOUND")
		wantCode(t, "anonymous: "+name, c(anon), "UNAUTHENTICATED")
	}
	for _, c := range []*client.Client{tn.resB, tn.userB} {
		if got, err := c.Certificate(ctx, d); err != nil || got != nil {
			t.Fatalf("another tenant's certificate visible: %+v, %v", got, err)
		}
		if list, _, err := c.Certificates(ctx, client.CertificateFilter{}, 50, ""); err != nil || hasCert(list, d) {
			t.Fatalf("another tenant lists alpha1's certificate: %+v, %v", list, err)
		}
		if list, _, err := c.Certificates(ctx, client.CertificateFilter{Account: "alpha1"}, 50, ""); err != nil || len(list) != 0 {
			t.Fatalf("another tenant lists alpha1's: %d, %v", len(list), err)
		}
		// The refusal ends the stream before any event.
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if evs, err := c.CertificateEvents(sctx, d); err == nil {
			for e := range evs {
				t.Fatalf("another tenant got an event: %+v", e)
			}
		}
		if sctx.Err() != nil {
			t.Fatal("another tenant's subscription was not refused")
		}
		cancel()
	}
	_, _, err := anon.Certificates(ctx, client.CertificateFilter{}, 50, "")
	wantCode(t, "anonymous certificates", err, "UNAUTHENTICATED")
	// allowUntrusted is an admin's call, whoever owns the site.
	for name, c := range map[string]*client.Client{"resa": tn.resA, "alphauser": tn.userA, "resb": tn.resB} {
		_, err := c.InstallCertificate(ctx, client.InstallCertificateInput{Domain: d, CertificatePEM: certPEM, PrivateKeyPEM: keyPEM, AllowUntrusted: true})
		wantCode(t, name+": allowUntrusted", err, "FORBIDDEN")
	}
	if after := certState(t, tn); after != before {
		t.Fatalf("refused calls changed state:\nbefore %s\nafter  %s", before, after)
	}
	// Nor may alpha1's owner or reseller touch bravo1's site.
	for name, c := range map[string]*client.Client{"resa": tn.resA, "alphauser": tn.userA} {
		_, err := c.RequestCertificate(ctx, tn.b1Domain, nil, "")
		wantCode(t, name+": bravo1 request", err, "NOT_FOUND")
		_, err = c.SetHSTS(ctx, tn.b1Domain, 60)
		wantCode(t, name+": bravo1 hsts", err, "NOT_FOUND")
	}

	// The owner, its reseller and admins may each do all of it, in an
	// order where each call has what it needs.
	order := []string{"requestCertificate", "setAutoRenew", "renewCertificate", "setHTTPSRedirect", "setHSTS", "revokeCertificate",
		"installCertificate", "deleteCertificate"}
	for _, who := range []struct {
		name string
		c    *client.Client
	}{{"alphauser", tn.userA}, {"resa", tn.resA}, {"admin", tn.admin}} {
		for _, name := range order {
			if err := mutations[name](who.c); err != nil {
				t.Fatalf("%s: %s: %v", who.name, name, err)
			}
		}
		got, err := who.c.Certificate(ctx, d)
		if err != nil || got == nil {
			t.Fatalf("%s: certificate: %+v %v", who.name, got, err)
		}
		list, _, err := who.c.Certificates(ctx, client.CertificateFilter{Account: "alpha1"}, 50, "")
		if err != nil || len(list) != 1 || list[0].ID != d {
			t.Fatalf("%s: certificates: %+v %v", who.name, list, err)
		}
		// The owner's stream of events starts with the history.
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		evs, err := who.c.CertificateEvents(sctx, d)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case e, ok := <-evs:
			if !ok || e.Kind == "" {
				t.Fatalf("%s: no event: %+v", who.name, e)
			}
		case <-sctx.Done():
			t.Fatalf("%s: no event within 10s", who.name)
		}
		cancel()
		if !got.Deleting {
			t.Fatalf("%s: deleted certificate not marked deleting: %+v", who.name, got)
		}
		// The controller's part: the record goes once the node removed it.
		if err := tn.s.Store().DeleteCertificate(ctx, d, store.AuditEvent{}); err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatal(err)
		}
	}
	// Every mutation was audited, with its actor.
	for name := range mutations {
		for _, actor := range []string{"alphauser", "resa", "admin"} {
			evs, _, _, err := tn.s.Store().ListAudit(ctx, store.AuditFilter{Action: name, Actor: actor}, "", 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				t.Errorf("no audit event of %s by %s", name, actor)
			}
		}
	}
}

// TestCertInstall: installCertificate refuses a mismatched key, an
// expired certificate, a wrong name, an untrusted chain without
// allowUntrusted, with INVALID_INPUT, and changes nothing; an accepted
// one is stored with its key sealed to the account's node (openable by
// that node's key only), and neither etcd nor the API response holds the
// key in clear.
func TestCertInstall(t *testing.T) {
	var logs lockedBuffer
	tn := setupCertTenants(t, func(c *controlplane.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	d := tn.a1Domain
	now := time.Now()
	month := 30 * 24 * time.Hour
	good, goodKey, goodDER := tn.issue(t, false, now.Add(-time.Hour), now.Add(month), d, "www."+d)
	_, strayKey, _ := tn.issue(t, false, now.Add(-time.Hour), now.Add(month), d)
	expired, expiredKey, _ := tn.issue(t, false, now.Add(-2*month), now.Add(-time.Hour), d)
	wrong, wrongKey, _ := tn.issue(t, false, now.Add(-time.Hour), now.Add(month), "elsewhere.example.net")
	self, selfKey, _ := tn.issue(t, true, now.Add(-time.Hour), now.Add(month), d)

	before := certState(t, tn)
	for _, c := range []struct {
		name, cert, key, want string
	}{
		{"mismatched key", good, strayKey, "does not match"},
		{"expired", expired, expiredKey, "expired"},
		{"wrong name", wrong, wrongKey, "does not cover"},
		{"untrusted", self, selfKey, "does not verify"},
		{"key as certificate", goodKey, goodKey, "privateKeyPEM"},
	} {
		resp, err := tn.userA.InstallCertificate(ctx, client.InstallCertificateInput{Domain: d, CertificatePEM: c.cert, PrivateKeyPEM: c.key})
		wantCode(t, c.name, err, "INVALID_INPUT")
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want the reason %q", c.name, err, c.want)
		}
		if strings.Contains(err.Error(), "PRIVATE KEY") || strings.Contains(err.Error(), c.key[40:80]) {
			t.Errorf("%s: the error quotes the key: %v", c.name, err)
		}
		_ = resp
	}
	_, err := tn.userA.InstallCertificate(ctx, client.InstallCertificateInput{Domain: d, CertificatePEM: self, PrivateKeyPEM: selfKey, AllowUntrusted: true})
	wantCode(t, "owner's allowUntrusted", err, "FORBIDDEN")
	if after := certState(t, tn); after != before {
		t.Fatalf("refused installs changed state:\nbefore %s\nafter  %s", before, after)
	}

	// Accepted: the raw HTTP response is scanned, not only the decoded one.
	body := rawGraphQL(t, tn, `mutation($in:InstallCertificateInput!){installCertificate(input:$in){id status custom autoRenew domains chainPEM generation}}`,
		map[string]any{"in": map[string]any{"domain": d, "certificatePEM": good, "privateKeyPEM": goodKey}})
	if bytes.Contains(body, []byte("PRIVATE KEY")) || bytes.Contains(body, []byte(goodKey[30:90])) || !bytes.Contains(body, []byte(`"custom":true`)) {
		t.Fatalf("install response: %s", body)
	}
	c, err := tn.s.Store().GetCertificate(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Custom || c.AutoRenew || c.Auto || c.Generation < 1 || len(c.SealedKey) == 0 || !strings.Contains(c.CustomChainPEM, "CERTIFICATE") || c.Node == "" {
		t.Fatalf("stored certificate: %+v", c)
	}
	// Sealed to the account's node: a quick unseal with its key.
	opened, err := unsealForNode(tn.nodeKeys[c.Node], c.SealedKey, d)
	if err != nil || !bytes.Equal(opened, goodDER) {
		t.Fatalf("sealed key does not open to the installed key on node %s: %v", c.Node, err)
	}
	// A custom certificate is not renewed here, nor set to renew.
	_, err = tn.userA.RenewCertificate(ctx, d)
	wantCode(t, "renew a custom certificate", err, "INVALID_INPUT")
	_, err = tn.userA.SetAutoRenew(ctx, d, true)
	wantCode(t, "auto-renew a custom certificate", err, "INVALID_INPUT")
	// An admin may install an untrusted one.
	if _, err := tn.admin.InstallCertificate(ctx, client.InstallCertificateInput{Domain: d, CertificatePEM: self, PrivateKeyPEM: selfKey, AllowUntrusted: true}); err != nil {
		t.Fatal(err)
	}
	// Every value in etcd: no PEM private key, no key bytes in clear.
	b64 := base64.StdEncoding.EncodeToString(goodDER)
	resp, err := tn.s.RawEtcd(t).Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if bytes.Contains(kv.Value, []byte("PRIVATE KEY")) || bytes.Contains(kv.Value, goodDER) || bytes.Contains(kv.Value, []byte(b64[20:80])) {
			t.Errorf("etcd key %s holds a private key in clear", kv.Key)
		}
	}
	// Nor does any line the server logged.
	if logs.String() == "" {
		t.Error("no server log captured to scan")
	}
	if l := logs.String(); strings.Contains(l, "PRIVATE KEY") || strings.Contains(l, b64[20:80]) || strings.Contains(l, goodKey[30:90]) {
		t.Errorf("the server logged a private key:\n%s", l)
	}
}

// rawGraphQL posts a query as alpha1's owner and returns the body.
func rawGraphQL(t *testing.T, tn *certTenants, query string, vars map[string]any) []byte {
	t.Helper()
	var out json.RawMessage
	if err := tn.userA.Do(context.Background(), query, vars, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCertRequestValidation: names outside the account, another account's
// site, a wildcard without DNS01 are INVALID_INPUT; a request updates the
// site's (automatic) certificate instead of adding one, and clears the
// site's NoAutoCertificate that a deletion set.
func TestCertRequestValidation(t *testing.T) {
	tn := setupCertTenants(t)
	ctx := context.Background()
	d := tn.a1Domain
	certState0 := certState(t, tn)
	for name, sans := range map[string][]string{
		"outside":       {"www.example.org"},
		"other account": {tn.b1Domain},
		"lookalike":     {"evil" + d},
		"wildcard":      {"*." + d},
		"bad name":      {"a b." + d},
		"double star":   {"*.*." + d},
	} {
		_, err := tn.userA.RequestCertificate(ctx, d, sans, "HTTP01")
		wantCode(t, name, err, "INVALID_INPUT")
	}
	// A name within another account's site inside ours, where the
	// cluster lets one be added.
	if _, err := tn.resB.AddDomain(ctx, tn.b1.ID, "shop."+d, ""); err == nil {
		_, err := tn.userA.RequestCertificate(ctx, d, []string{"www.shop." + d}, "")
		wantCode(t, "a name within another account's site", err, "INVALID_INPUT")
	}
	_, err := tn.userA.RequestCertificate(ctx, "nosuch.example.com", nil, "")
	wantCode(t, "no such site", err, "NOT_FOUND")
	_, err = tn.userA.SetHSTS(ctx, d, 3*365*24*3600)
	wantCode(t, "hsts three years", err, "INVALID_INPUT")
	_, err = tn.userA.SetHSTS(ctx, d, -1)
	wantCode(t, "hsts negative", err, "INVALID_INPUT")
	if certState(t, tn) != certState0 {
		t.Fatal("refused requests stored a certificate")
	}

	// The controller's automatic certificate (made here if the controller
	// has not made one yet) is taken over, not doubled.
	auto := &store.Certificate{ID: d, Account: tn.a1.ID, Domains: []string{d, "www." + d}, Challenge: store.ChallengeHTTP01, AutoRenew: true, Auto: true}
	auto.Status.State = store.CertIssued
	if err := tn.s.Store().CreateCertificate(ctx, auto, store.AuditEvent{}); errors.Is(err, store.ErrConflict) {
		if auto, err = tn.s.Store().GetCertificate(ctx, d); err != nil || !auto.Auto {
			t.Fatalf("the site's certificate before any request: %+v, %v", auto, err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	c, err := tn.userA.RequestCertificate(ctx, d, []string{"mail." + d, "MAIL." + d}, "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Auto || c.Generation != auto.Generation+1 || strings.Join(c.Domains, ",") != d+",mail."+d || c.Challenge != "HTTP01" {
		t.Fatalf("request over the automatic certificate: %+v", c)
	}
	if list, _, _ := tn.admin.Certificates(ctx, client.CertificateFilter{Account: "alpha1"}, 10, ""); len(list) != 1 {
		t.Fatalf("alpha1 has %d certificates, want its site's one", len(list))
	}
	// A wildcard with DNS01 in the account's own zone.
	if z, err := tn.admin.Zone(ctx, d); err == nil && z != nil {
		if c, err = tn.userA.RequestCertificate(ctx, d, []string{"*." + d}, "DNS01"); err != nil || c.Challenge != "DNS01" {
			t.Fatalf("wildcard with DNS01: %+v %v", c, err)
		}
	}
	// Deleting stops automatic certificates; a request brings them back.
	if _, err := tn.userA.DeleteCertificate(ctx, d); err != nil {
		t.Fatal(err)
	}
	if !siteOf(t, tn, d).NoAutoCertificate {
		t.Fatal("deleteCertificate left automatic certificates on")
	}
	_, err = tn.userA.RequestCertificate(ctx, d, nil, "")
	wantCode(t, "request while deleting", err, "CONFLICT")
	if err := tn.s.Store().DeleteCertificate(ctx, d, store.AuditEvent{}); err != nil && !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if c, err = tn.userA.RequestCertificate(ctx, d, []string{"www." + d}, ""); err != nil || c.Status != "PENDING" || c.Generation != 1 || !c.AutoRenew {
		t.Fatalf("request after deletion: %+v %v", c, err)
	}
	if siteOf(t, tn, d).NoAutoCertificate {
		t.Fatal("requestCertificate left NoAutoCertificate set")
	}
	// HTTPS redirect and HSTS land on the site, and show on the domain.
	if dm, err := tn.userA.SetHTTPSRedirect(ctx, d, true); err != nil || !dm.HTTPSRedirect {
		t.Fatalf("setHTTPSRedirect: %+v %v", dm, err)
	}
	if dm, err := tn.userA.SetHSTS(ctx, d, 31536000); err != nil || dm.HSTSMaxAge != 31536000 || !dm.HTTPSRedirect {
		t.Fatalf("setHSTS: %+v %v", dm, err)
	}
	if s := siteOf(t, tn, d); !s.HTTPSRedirect || s.HSTSMaxAge != 31536000 {
		t.Fatalf("site: %+v", s)
	}
	var doms struct {
		Domains []struct {
			Name          string
			HTTPSRedirect bool
			HSTSMaxAge    int
			Certificate   *struct{ ID, Status string }
		}
	}
	if err := tn.userA.Do(ctx, `query($a:ID!){domains(account:$a){name httpsRedirect hstsMaxAge certificate{id status}}}`,
		map[string]any{"a": tn.a1.ID}, &doms); err != nil {
		t.Fatal(err)
	}
	if len(doms.Domains) != 1 || !doms.Domains[0].HTTPSRedirect || doms.Domains[0].HSTSMaxAge != 31536000 ||
		doms.Domains[0].Certificate == nil || doms.Domains[0].Certificate.ID != d {
		t.Fatalf("domains: %+v", doms)
	}
	// Filters, on a status and expiry the controller would write (a
	// 20-day certificate half through its life: not due for renewal, so
	// the controller leaves it ISSUED).
	if _, err := tn.s.Store().UpdateCertificate(ctx, d, func(c *store.Certificate) ([]*store.CertTask, error) {
		c.Status.State, c.Status.NotBefore, c.Status.NotAfter = store.CertIssued, time.Now().Add(-10*24*time.Hour), time.Now().Add(10*24*time.Hour)
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	days, few := 30, 5
	for name, f := range map[string]client.CertificateFilter{
		"account": {Account: "alpha1"}, "domain": {Domain: d}, "san": {Domain: "www." + d}, "status": {Status: "ISSUED"},
		"expiring": {ExpiringWithinDays: &days}, "all": {Account: "alpha1", Domain: d, Status: "ISSUED", ExpiringWithinDays: &days},
	} {
		if list, _, err := tn.admin.Certificates(ctx, f, 10, ""); err != nil || !hasCert(list, d) {
			t.Errorf("filter %s: %+v, %v", name, list, err)
		}
	}
	for name, f := range map[string]client.CertificateFilter{
		"account": {Account: "bravo1"}, "domain": {Domain: tn.b1Domain}, "status": {Status: "REVOKED"},
		"expiring": {ExpiringWithinDays: &few}, "no account": {Account: "nobody"},
	} {
		if list, _, err := tn.admin.Certificates(ctx, f, 10, ""); err != nil || hasCert(list, d) {
			t.Errorf("filter %s: %+v, %v", name, list, err)
		}
	}
}

func siteOf(t *testing.T, tn *certTenants, d string) store.Site {
	t.Helper()
	a, _, err := tn.s.Store().GetAccount(context.Background(), tn.a1.ID)
	if err != nil {
		t.Fatal(err)
	}
	return a.AllSites()[a.SiteIndex(d)]
}

// TestCertEvents: certificateEvents sends the history, then each event
// written after, once.
func TestCertEvents(t *testing.T) {
	tn := setupCertTenants(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := tn.a1Domain
	if _, err := tn.userA.RequestCertificate(ctx, d, nil, ""); err != nil {
		t.Fatal(err)
	}
	evs, err := tn.userA.CertificateEvents(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	next := func() client.CertificateEvent {
		select {
		case e, ok := <-evs:
			if !ok {
				t.Fatal("stream ended")
			}
			return e
		case <-ctx.Done():
			t.Fatal("no event")
		}
		return client.CertificateEvent{}
	}
	// The history first (an automatic certificate's events may come
	// before the request's).
	for e := next(); e.Kind != "requested"; e = next() {
	}
	// The controller writes progress.
	for _, kind := range []string{"ordering", "issued"} {
		if _, err := tn.s.Store().UpdateCertificate(ctx, d, func(c *store.Certificate) ([]*store.CertTask, error) {
			c.AddEvent(time.Now(), kind, "")
			return nil, nil
		}, store.AuditEvent{}); err != nil {
			t.Fatal(err)
		}
		for e := next(); e.Kind != kind; e = next() {
			if e.Kind == "requested" {
				t.Fatalf("event %+v sent twice", e)
			}
		}
	}
	if _, err := tn.userA.SetAutoRenew(ctx, d, false); err != nil { // a write without an event
		t.Fatal(err)
	}
	if _, err := tn.userA.RenewCertificate(ctx, d); err != nil {
		t.Fatal(err)
	}
	for e := next(); e.Kind != "renew-requested"; e = next() {
		if e.Kind == "requested" || e.Kind == "issued" {
			t.Fatalf("event %+v sent twice", e)
		}
	}
}

// unsealForNode opens an installed certificate's sealed key as the node
// holding key would.
func unsealForNode(key *ecdsa.PrivateKey, sealed []byte, id string) ([]byte, error) {
	if key == nil {
		return nil, errors.New("no such node key")
	}
	return pki.Unseal(key, sealed, agentpb.CertificateKeySealContext(id))
}

func hasCert(list []client.Certificate, id string) bool {
	for _, c := range list {
		if c.ID == id {
			return true
		}
	}
	return false
}

// lockedBuffer is a log sink the server's goroutines share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
