package tls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/internal/testenv/pebble"
	"github.com/npanel/npanel/nodeagent/actions"
	"github.com/npanel/npanel/protos/agentpb"
)

func issueReq(e *acmeEnv, ch agentpb.AcmeChallenge, domains ...string) *agentpb.IssueCertificateAction {
	r := &agentpb.IssueCertificateAction{
		Id: "cert-1", Username: "alice", Site: domains[0], Domains: domains,
		Challenge: ch, Acme: e.acme(),
	}
	if ch == agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01 {
		r.Site = testZone
		r.Nameservers = []string{e.dns.DNSAddr}
	}
	return r
}

func applyIssue(t testing.TB, e *acmeEnv, req *agentpb.IssueCertificateAction) (*agentpb.CertificateResult, error) {
	t.Helper()
	a := e.m.NewIssue(req)
	if err := a.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := a.Apply(ctx, e.env)
	if err != nil {
		return nil, err
	}
	res, ok := out.(*agentpb.CertificateResult)
	if !ok {
		t.Fatalf("result %T", out)
	}
	return res, nil
}

// checkIssued verifies the result's chain to Pebble's root for every name,
// and that the installer got the leaf's key.
func checkIssued(t *testing.T, e *acmeEnv, res *agentpb.CertificateResult, names ...string) *x509.Certificate {
	t.Helper()
	chain, err := parseCerts(res.ChainPem)
	if err != nil {
		t.Fatal(err)
	}
	roots, _ := e.pebbleRoots(t)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	for _, n := range names {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inter}); err != nil {
			t.Errorf("chain for %s: %v", n, err)
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(res.Domains)), slices.Sorted(slices.Values(names))) {
		t.Errorf("domains %v, want %v", res.Domains, names)
	}
	if res.Serial != leaf.SerialNumber.Text(16) || res.NotAfterUnix != leaf.NotAfter.Unix() || res.Issuer == "" {
		t.Errorf("result metadata %+v", res)
	}
	got := e.web.last(t)
	if string(got.chain) != string(res.ChainPem) {
		t.Error("installer got another chain than the result's")
	}
	key, err := parseKeyPEM(got.key)
	if err != nil {
		t.Fatalf("installed key: %v", err)
	}
	ek, ok := key.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() || !samePublicKey(leaf.PublicKey, key.Public()) {
		t.Error("installed key is not the leaf's P-256 key")
	}
	if slices.Contains([]string{string(res.ChainPem)}, string(got.key)) || containsPrivateKey(res.ChainPem) {
		t.Error("a private key is in the result")
	}
	// No private key in the result or anything logged.
	if strings.Contains(e.log.String(), "PRIVATE KEY") || strings.Contains(e.log.String(), string(got.key)) {
		t.Error("a private key was logged")
	}
	if !slices.Equal(res.Reloaded, []string{"nginx"}) {
		t.Errorf("reloaded %v", res.Reloaded)
	}
	return leaf
}

func containsPrivateKey(b []byte) bool {
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return false
		}
		if blk.Type != "CERTIFICATE" {
			return true
		}
	}
}

// checkAccountFiles: the account key and record are root's and 0600 in a
// 0700 directory.
func checkAccountFiles(t *testing.T, e *acmeEnv) {
	t.Helper()
	dir := accountDir(e.env.DataDir, e.acme())
	for name, mode := range map[string]os.FileMode{"": 0o700 | os.ModeDir, accountKeyFile: 0o600, accountRegFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", filepath.Join(dir, name), fi.Mode(), mode)
		}
	}
}

func TestIssueHTTP01(t *testing.T) {
	e := newACMEEnv(t, "example.com", "www.example.com")
	start := time.Now()
	res, err := applyIssue(t, e, issueReq(e, agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01, "example.com", "www.example.com"))
	if err != nil {
		t.Fatalf("issue: %v\n%s", err, e.pebble.LogTail())
	}
	t.Logf("HTTP-01 issue took %s", time.Since(start))
	checkIssued(t, e, res, "example.com", "www.example.com")
	if len(res.Failed) != 0 {
		t.Errorf("failed %v", res.Failed)
	}
	checkAccountFiles(t, e)
	if ents, _ := os.ReadDir(e.chalDir); len(ents) != 0 {
		t.Errorf("challenge files left: %v", ents)
	}
	if fi, err := os.Stat(e.chalDir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("challenge dir: %v %v", fi.Mode(), err)
	}
	// A second order reuses the account. Its record is made stale first,
	// as a CA whose database was reset would see it: the action registers
	// the same key again and goes on.
	regFile := filepath.Join(accountDir(e.env.DataDir, e.acme()), accountRegFile)
	reg, err := os.ReadFile(regFile)
	if err != nil {
		t.Fatal(err)
	}
	var acct map[string]any
	if err := json.Unmarshal(reg, &acct); err != nil || acct["accountURL"] == nil {
		t.Fatalf("account record %s: %v", reg, err)
	}
	acct["accountURL"] = strings.TrimSuffix(acct["accountURL"].(string), "/") + "0000"
	reg, _ = json.Marshal(acct)
	if err := os.WriteFile(regFile, reg, 0o600); err != nil {
		t.Fatal(err)
	}
	key1, _ := os.ReadFile(filepath.Join(accountDir(e.env.DataDir, e.acme()), accountKeyFile))
	res2, err := applyIssue(t, e, issueReq(e, agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01, "example.com"))
	if err != nil {
		t.Fatalf("second issue: %v", err)
	}
	key2, _ := os.ReadFile(filepath.Join(accountDir(e.env.DataDir, e.acme()), accountKeyFile))
	if string(key1) != string(key2) || res2.Serial == res.Serial {
		t.Error("second issue: new account key or same certificate")
	}
	if !strings.Contains(e.log.String(), "registering again") {
		t.Error("the stale account was not registered again")
	}
}

// One name without an address must not fail the others.
func TestIssueHTTP01OneNameFails(t *testing.T) {
	e := newACMEEnv(t, "example.com", "www.example.com")
	res, err := applyIssue(t, e, issueReq(e, agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01, "example.com", "www.example.com", "mail.example.com"))
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	checkIssued(t, e, res, "example.com", "www.example.com")
	if len(res.Failed) != 1 || res.Failed[0].Name != "mail.example.com" || res.Failed[0].Error == "" {
		t.Fatalf("failed = %v", res.Failed)
	}
	t.Logf("mail.example.com: %s", res.Failed[0].Error)
}

// The site's own name failing fails the action, and nothing is installed.
func TestIssueHTTP01SiteFails(t *testing.T) {
	e := newACMEEnv(t, "www.example.com")
	_, err := applyIssue(t, e, issueReq(e, agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01, "example.com", "www.example.com"))
	if err == nil {
		t.Fatal("issued without the site's name")
	}
	if len(e.web.installs) != 0 {
		t.Error("something was installed")
	}
	t.Logf("error (%s): %v", actions.ReasonOf(err), err)
}

func TestIssueDNS01Wildcard(t *testing.T) {
	e := newACMEEnv(t)
	start := time.Now()
	res, err := applyIssue(t, e, issueReq(e, agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01, "*.example.com", "example.com"))
	if err != nil {
		t.Fatalf("issue: %v\n%s", err, e.pebble.LogTail())
	}
	t.Logf("DNS-01 issue took %s", time.Since(start))
	leaf := checkIssued(t, e, res, "*.example.com", "example.com")
	if err := leaf.VerifyHostname("anything.example.com"); err != nil {
		t.Error(err)
	}
	if got := e.txt(t, "_acme-challenge.example.com"); len(got) != 0 {
		t.Errorf("challenge record left: %v", got)
	}
	e.mu.Lock()
	n := e.publishes
	e.mu.Unlock()
	if n != 4 {
		t.Errorf("%d publish calls, want 2 presents and 2 withdrawals", n)
	}
}

func TestRevoke(t *testing.T) {
	// Short-lived, as renewal tests will need: Pebble's
	// certificateValidityPeriod.
	e := newACMEEnvWith(t, func(o *pebble.Options) { o.CertificateValidity = time.Hour }, "example.com")
	res, err := applyIssue(t, e, issueReq(e, agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01, "example.com"))
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if life := time.Duration(res.NotAfterUnix-res.NotBeforeUnix) * time.Second; life < 59*time.Minute || life > 61*time.Minute {
		t.Errorf("lifetime %s, want 1h", life)
	}
	t.Logf("renew after (ARI): %d (0: none offered), not after %d", res.RenewAfterUnix, res.NotAfterUnix)
	ctx := context.Background()
	a := e.m.NewRevoke(&agentpb.RevokeCertificateAction{Id: "cert-1", Username: "alice", Site: "example.com", ChainPem: res.ChainPem, Reason: 4, Acme: e.acme()})
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, e.env); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	st, err := e.pebble.CertStatus(ctx, res.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "Revoked" || st.Reason != 4 {
		t.Errorf("pebble says %+v", st)
	}
	if !slices.Equal(e.web.removes, []string{"example.com"}) {
		t.Errorf("removed %v", e.web.removes)
	}
	// Again: the CA has it revoked already, the action still succeeds.
	if _, err := a.Apply(ctx, e.env); err != nil {
		t.Errorf("second revoke: %v", err)
	}
}

// A directory nobody answers on is UNAVAILABLE, and nothing is installed.
func TestIssueUnreachable(t *testing.T) {
	e := &acmeEnv{web: &recorder{}}
	e.m = NewModule(e.web, nil)
	e.env = &actions.Env{Logger: testLogger(), DataDir: t.TempDir()}
	a := e.m.NewIssue(&agentpb.IssueCertificateAction{
		Id: "c", Username: "alice", Site: "example.com", Domains: []string{"example.com"},
		Challenge: agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01,
		Acme:      &agentpb.AcmeServer{DirectoryUrl: "https://127.0.0.1:1/dir"},
	})
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err := a.Apply(context.Background(), e.env)
	if actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_UNAVAILABLE {
		t.Fatalf("err = %v (%s)", err, actions.ReasonOf(err))
	}
	if errors.Is(err, context.Canceled) || len(e.web.installs) != 0 {
		t.Fatal("installed")
	}
}

// External Account Binding: Pebble requires it; the HMAC arrives sealed.
func TestIssueEAB(t *testing.T) {
	const kid, hmac = "kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	e := newACMEEnvWith(t, func(o *pebble.Options) { o.EABKeys = map[string]string{kid: hmac} }, "example.com")
	req := issueReq(e, agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01, "example.com")
	// Without the binding the CA refuses the account.
	if _, err := applyIssue(t, e, req); actions.ReasonOf(err) != agentpb.ErrorReason_ERROR_REASON_INVALID {
		t.Fatalf("without EAB: %v (%s), want INVALID", err, actions.ReasonOf(err))
	}
	req.Acme.EabKid = kid
	req.Acme.SealedEabHmac = seal(agentpb.AcmeEABSealContext(kid), []byte(hmac))
	res, err := applyIssue(t, e, req)
	if err != nil {
		t.Fatalf("issue with EAB: %v", err)
	}
	checkIssued(t, e, res, "example.com")
	if strings.Contains(e.log.String(), hmac) {
		t.Error("the HMAC key was logged")
	}
}
