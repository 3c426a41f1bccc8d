package controlplane_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"google.golang.org/protobuf/proto"
)

// fakeCertNode answers every task queued for a fake node as its agent
// would (CompleteTask with a typed result): accounts and zones apply,
// certificates are "issued" by a test CA made here with crypto/x509 for
// the names ordered, so that the certificate controller is tested alone.
// Its DNS server is reported running, so zones are served on it.
type fakeCertNode struct {
	node     string
	caKey    *ecdsa.PrivateKey
	caCert   *x509.Certificate
	lifetime atomic.Int64 // of issued certificates, ns
	serial   atomic.Int64

	mu      sync.Mutex
	seen    []*agentpb.Task
	seenIDs map[string]bool
	fail    bool            // issueCertificate fails
	hold    map[string]bool // certificate ids whose orders stay unanswered
	// holdAccounts leaves account tasks unanswered: the node has not
	// applied an account's change yet.
	holdAccounts bool

	// Secondary syncs received: tasks, bytes, the largest, zones named.
	syncTasks, syncBytes, syncMax, syncZones atomic.Int64
}

func startFakeCertNode(t testing.TB, s *testenv.Server, node string) *fakeCertNode {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st := s.Store()
	if err := st.PutServices(ctx, store.NodeServices{Node: node, ReportedAt: time.Now().UTC(),
		Services: []store.ServiceStatus{{Name: "pdns", State: "running", Listen: []string{"127.0.0.1:5300"}}}}); err != nil {
		t.Fatal(err)
	}
	nodeKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&nodeKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateNodeState(ctx, node, func(ns *store.NodeState) bool { ns.PublicKey = pub; return true }); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Fake ACME CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	f := &fakeCertNode{node: node, caKey: key, caCert: ca, hold: map[string]bool{}, seenIDs: map[string]bool{}}
	f.lifetime.Store(int64(90 * 24 * time.Hour))
	f.serial.Store(100)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			tasks, _, err := st.PendingTasks(ctx, node)
			if err != nil {
				continue
			}
			for _, task := range tasks {
				res := f.answer(t, task)
				if res == nil {
					continue
				}
				res.TaskId = task.GetId()
				if res.Status == agentpb.TaskStatus_TASK_STATUS_UNSPECIFIED {
					res.Status = agentpb.TaskStatus_TASK_STATUS_SUCCEEDED
				}
				_, _ = st.CompleteTask(ctx, node, res, store.NewAuditEvent("node:"+node, "test", "", "", ""))
			}
		}
	}()
	return f
}

func (f *fakeCertNode) setFail(on bool) {
	f.mu.Lock()
	f.fail = on
	f.mu.Unlock()
}

func (f *fakeCertNode) setHold(id string, on bool) {
	f.mu.Lock()
	f.hold[id] = on
	f.mu.Unlock()
}

func (f *fakeCertNode) setHoldAccounts(on bool) {
	f.mu.Lock()
	f.holdAccounts = on
	f.mu.Unlock()
}

func (f *fakeCertNode) answer(t testing.TB, task *agentpb.Task) *agentpb.TaskResult {
	f.mu.Lock()
	// Only certificate tasks are kept: a secondary's zone list grows with
	// every zone, and a thousand of them were most of a large test's heap.
	if m := task.ProtoReflect(); strings.HasSuffix(string(m.WhichOneof(m.Descriptor().Oneofs().ByName("action")).Name()), "_certificate") && !f.seenIDs[task.GetId()] {
		f.seenIDs[task.GetId()] = true
		f.seen = append(f.seen, task)
	}
	fail := f.fail
	hold := f.hold
	holdAccounts := f.holdAccounts
	f.mu.Unlock()
	switch a := task.GetAction().(type) {
	case *agentpb.Task_EnsureAccount:
		if holdAccounts {
			return nil
		}
	case *agentpb.Task_EnsureZone:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Zone{Zone: &agentpb.ZoneResult{Zone: a.EnsureZone.GetZone(), Kind: "Master",
			Serial: uint32(f.serial.Add(1)), Changed: true}}}
	case *agentpb.Task_DeleteZone:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Zone{Zone: &agentpb.ZoneResult{Zone: a.DeleteZone.GetZone()}}}
	case *agentpb.Task_CheckPrimaryZones:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_CheckPrimaryZones{CheckPrimaryZones: &agentpb.CheckPrimaryZonesResult{}}}
	case *agentpb.Task_SyncSecondaryZones:
		size := int64(proto.Size(task))
		f.syncTasks.Add(1)
		f.syncBytes.Add(size)
		f.syncZones.Add(int64(len(a.SyncSecondaryZones.GetZones()) + len(a.SyncSecondaryZones.GetRemoved())))
		for m := f.syncMax.Load(); size > m && !f.syncMax.CompareAndSwap(m, size); m = f.syncMax.Load() {
		}
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_SyncSecondaryZones{SyncSecondaryZones: &agentpb.SyncSecondaryZonesResult{}}}
	case *agentpb.Task_IssueCertificate:
		f.mu.Lock()
		held := hold[a.IssueCertificate.GetId()]
		f.mu.Unlock()
		if held {
			return nil
		}
		if fail {
			return &agentpb.TaskResult{Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "acme: urn:ietf:params:acme:error:connection: fake validation failure"}
		}
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Certificate{Certificate: f.issue(t, a.IssueCertificate.GetDomains())}}
	case *agentpb.Task_InstallCertificate:
		block, _ := pem.Decode(a.InstallCertificate.GetChainPem())
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return &agentpb.TaskResult{Status: agentpb.TaskStatus_TASK_STATUS_FAILED, Error: "bad chain"}
		}
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Certificate{Certificate: &agentpb.CertificateResult{
			ChainPem: a.InstallCertificate.GetChainPem(), Serial: c.SerialNumber.Text(16), Issuer: c.Issuer.CommonName,
			NotBeforeUnix: c.NotBefore.Unix(), NotAfterUnix: c.NotAfter.Unix(), Domains: c.DNSNames}}}
	case *agentpb.Task_RevokeCertificate, *agentpb.Task_RemoveCertificate:
		return &agentpb.TaskResult{Result: &agentpb.TaskResult_Certificate{Certificate: &agentpb.CertificateResult{}}}
	}
	return &agentpb.TaskResult{}
}

// issue makes a leaf for names, signed by the fake CA.
func (f *fakeCertNode) issue(t testing.TB, names []string) *agentpb.CertificateResult {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Error(err)
		return nil
	}
	now := time.Now().Truncate(time.Second)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(f.serial.Add(1)), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: now, NotAfter: now.Add(time.Duration(f.lifetime.Load()))}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, &key.PublicKey, f.caKey)
	if err != nil {
		t.Error(err)
		return nil
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.caCert.Raw})...)
	return &agentpb.CertificateResult{ChainPem: chain, Serial: tmpl.SerialNumber.Text(16), Issuer: "Fake ACME CA",
		NotBeforeUnix: tmpl.NotBefore.Unix(), NotAfterUnix: tmpl.NotAfter.Unix(), Domains: names, Reloaded: []string{"nginx"}}
}

// tasks returns the certificate tasks of action seen, oldest first.
func (f *fakeCertNode) tasks(action string) []*agentpb.Task {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*agentpb.Task
	for _, t := range f.seen {
		m := t.ProtoReflect()
		if string(m.WhichOneof(m.Descriptor().Oneofs().ByName("action")).Name()) == action {
			out = append(out, t)
		}
	}
	return out
}

// certEnv is a server with fast certificate timing, one fake web and DNS
// node answering tasks, and an account on it.
type certEnv struct {
	s    *testenv.Server
	st   *store.Store
	node *fakeCertNode
	acct *client.Account
}

func startCertEnv(t *testing.T, username, domain string) *certEnv {
	t.Helper()
	return startCertEnvWith(t, username, domain, nil)
}

// startCertEnvWith is startCertEnv with the ACME configuration changed by
// cfg.
func startCertEnvWith(t *testing.T, username, domain string, cfg func(*controlplane.ACMEConfig)) *certEnv {
	t.Helper()
	s := testenv.StartServer(t, func(c *controlplane.Config) {
		c.ACME = controlplane.ACMEConfig{DirectoryURL: "https://acme.test/dir", Email: "ops@example.net",
			RenewSweep: 100 * time.Millisecond, RetryBase: 500 * time.Millisecond, RetryMax: 2 * time.Second}
		if cfg != nil {
			cfg(&c.ACME)
		}
	})
	s.FakeNode(t, "n1", nil, 100, 100_000)
	e := &certEnv{s: s, st: s.Store(), node: startFakeCertNode(t, s, "n1")}
	ctx := context.Background()
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 5, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	a, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: username, Domain: domain, Plan: "web"})
	if err != nil {
		t.Fatal(err)
	}
	e.acct = a
	return e
}

// waitCert waits until certificate id satisfies cond and returns it.
func (e *certEnv) waitCert(t *testing.T, id, what string, cond func(c *store.Certificate) bool) *store.Certificate {
	t.Helper()
	var got *store.Certificate
	testenv.WaitFor(t, 20*time.Second, id+": "+what, func() bool {
		c, err := e.st.GetCertificate(context.Background(), id)
		if err != nil {
			return false
		}
		got = c
		return cond(c)
	})
	return got
}

// change writes a certificate's spec as the API does.
func (e *certEnv) change(t *testing.T, id string, fn func(c *store.Certificate)) {
	t.Helper()
	if _, err := e.st.UpdateCertificate(context.Background(), id, func(c *store.Certificate) ([]*store.CertTask, error) {
		fn(c)
		c.Generation++
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
}

func hasEvent(c *store.Certificate, kind, substr string) bool {
	return slices.ContainsFunc(c.Status.Events, func(ev store.CertEvent) bool {
		return ev.Kind == kind && strings.Contains(ev.Message, substr)
	})
}

func issuedState(c *store.Certificate) bool {
	return c.Status.State == store.CertIssued && c.Status.TaskID == "" && c.Status.ObservedGeneration == c.Generation
}

// TestCertAutomaticIssue: a new account's site gets a certificate without
// anyone asking, for the site and its www name, ordered by HTTP-01 from
// the configured ACME server, issued and scheduled for renewal; a name
// that does not resolve to the node on our nameservers is left out with
// an event; a site whose own name does not resolve waits, and is ordered
// as soon as its zone is fixed.
func TestCertAutomaticIssue(t *testing.T) {
	e := startCertEnv(t, "certa", "certa.example.com")
	ctx := context.Background()
	const id = "certa.example.com"
	c := e.waitCert(t, id, "issued", issuedState)
	if !c.Auto || !c.AutoRenew || c.Challenge != store.ChallengeHTTP01 || c.Node != "n1" {
		t.Fatalf("automatic certificate: %+v", c)
	}
	if want := []string{"certa.example.com", "www.certa.example.com"}; !slices.Equal(c.Status.IssuedDomains, want) {
		t.Fatalf("issued for %v, want %v", c.Status.IssuedDomains, want)
	}
	if !strings.Contains(c.Status.ChainPEM, "BEGIN CERTIFICATE") || c.Status.Serial == "" || c.Status.Issuer != "Fake ACME CA" {
		t.Fatalf("served certificate not recorded: %+v", c.Status)
	}
	life := c.Status.NotAfter.Sub(c.Status.NotBefore)
	if lead := c.Status.NotAfter.Sub(c.Status.RenewAt); lead < life/3 || lead > life/3+life/10 {
		t.Fatalf("renewal %s before expiry, want a third of %s plus jitter", lead, life)
	}
	if !hasEvent(c, "issued", c.Status.Serial) {
		t.Fatalf("no issued event: %+v", c.Status.Events)
	}
	// The expiry gauge, computed at scrape time, and the attempts counter.
	testenv.WaitFor(t, 10*time.Second, "certificate metrics", func() bool {
		req, _ := http.NewRequest(http.MethodGet, e.s.URL()+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+e.s.Admin.Token())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		return strings.Contains(body, `npanel_certificate_expiry_seconds{certificate="certa.example.com"} 7.7`) &&
			strings.Contains(body, `npanel_certificate_attempts_total{action="issue",result="ok"} 1`)
	})
	orders := e.node.tasks("issue_certificate")
	if len(orders) != 1 {
		t.Fatalf("%d orders, want 1", len(orders))
	}
	o := orders[0].GetIssueCertificate()
	if o.GetAcme().GetDirectoryUrl() != "https://acme.test/dir" || o.GetAcme().GetEmail() != "ops@example.net" ||
		o.GetChallenge() != agentpb.AcmeChallenge_ACME_CHALLENGE_HTTP01 || o.GetUsername() != "certa" || o.GetSite() != id {
		t.Fatalf("order: %v", o)
	}

	// A user's certificate with a name nobody points at us: ordered
	// without it, and the name is reported.
	e.change(t, id, func(c *store.Certificate) {
		c.Auto = false
		c.Domains = append(c.Domains, "elsewhere.certa.example.com")
	})
	c = e.waitCert(t, id, "issued again", func(c *store.Certificate) bool { return issuedState(c) && c.Generation == 2 })
	if !hasEvent(c, "skipped", "skipped elsewhere.certa.example.com: does not resolve to n1 on our nameservers") {
		t.Fatalf("no skipped event: %+v", c.Status.Events)
	}
	if got := e.node.tasks("issue_certificate")[1].GetIssueCertificate().GetDomains(); slices.Contains(got, "elsewhere.certa.example.com") {
		t.Fatalf("a name that does not resolve was ordered: %v", got)
	}

	// The site's own name moves away: the order waits with the reason,
	// and the served certificate stays.
	setApex := func(addr string) {
		t.Helper()
		if _, err := e.st.UpdateZone(ctx, id, func(z *store.Zone) error {
			for i, r := range z.Records {
				if r.Name == id+"." && r.Type == "A" {
					z.Records[i].Content = addr
				}
			}
			z.Generation++
			return nil
		}, store.NewAuditEvent("test", "", "zone", id, "ok")); err != nil {
			t.Fatal(err)
		}
	}
	setApex("192.0.2.99")
	testenv.WaitFor(t, 20*time.Second, "zone applied", func() bool {
		z, _, err := e.st.GetZone(ctx, id)
		return err == nil && z.AppliedGeneration == z.Generation
	})
	serial := c.Status.Serial
	e.change(t, id, func(*store.Certificate) {})
	c = e.waitCert(t, id, "waiting for its name", func(c *store.Certificate) bool {
		return strings.Contains(c.Status.LastError, "does not resolve to n1")
	})
	if c.Status.State != store.CertIssued || c.Status.Serial != serial || c.Status.TaskID != "" {
		t.Fatalf("a certificate waiting for its name lost the served one or ordered: %+v", c.Status)
	}
	before := len(e.node.tasks("issue_certificate"))
	setApex("127.0.0.1")
	c = e.waitCert(t, id, "ordered once the zone resolves", func(c *store.Certificate) bool { return issuedState(c) && c.Generation == 3 })
	if c.Status.LastError != "" || len(e.node.tasks("issue_certificate")) != before+1 {
		t.Fatalf("after the zone change: lastError %q, %d orders (had %d)", c.Status.LastError, len(e.node.tasks("issue_certificate")), before)
	}
}

// TestCertRenewal: a short-lived certificate is renewed when a third of
// its lifetime remains; a failed renewal leaves the served certificate in
// place with lastError, failures, a growing backoff and an event; the
// next attempt that succeeds replaces it and clears the error.
func TestCertRenewal(t *testing.T) {
	e := startCertEnv(t, "certr", "certr.example.com")
	const id = "certr.example.com"
	e.node.lifetime.Store(int64(9 * time.Second))
	c := e.waitCert(t, id, "issued", issuedState)
	first := c.Status
	c = e.waitCert(t, id, "renewed", func(c *store.Certificate) bool { return c.Status.Serial != first.Serial && issuedState(c) })
	if c.Status.NotBefore.Before(first.RenewAt.Truncate(time.Second)) {
		t.Fatalf("renewed at %s, before its renewal time %s", c.Status.NotBefore, first.RenewAt)
	}
	if !c.Status.NotBefore.Before(first.NotAfter) {
		t.Fatalf("renewed at %s, after the old one expired at %s", c.Status.NotBefore, first.NotAfter)
	}

	// Renewals fail now.
	e.node.setFail(true)
	served := c.Status.Serial
	c = e.waitCert(t, id, "renewal failed twice", func(c *store.Certificate) bool { return c.Status.Failures >= 2 })
	if c.Status.State != store.CertIssued || c.Status.Serial != served || c.Status.ChainPEM == "" {
		t.Fatalf("a failed renewal dropped the served certificate: %+v", c.Status)
	}
	if !strings.Contains(c.Status.LastError, "fake validation failure") || !hasEvent(c, "failed", "attempt 2") {
		t.Fatalf("failure not visible: lastError %q events %+v", c.Status.LastError, c.Status.Events)
	}
	var times []time.Time
	for _, o := range e.node.tasks("issue_certificate") {
		times = append(times, time.Unix(0, o.GetCreatedUnixNano()))
	}
	if n := len(times); n >= 4 && times[n-1].Sub(times[n-2]) < 400*time.Millisecond {
		t.Fatalf("retries do not back off: %v", times)
	}
	e.node.setFail(false)
	c = e.waitCert(t, id, "renewed after the failures", func(c *store.Certificate) bool {
		return c.Status.Serial != served && c.Status.Failures == 0 && issuedState(c)
	})
	if c.Status.LastError != "" || !c.Status.NextAttempt.IsZero() {
		t.Fatalf("success did not clear the failure: %+v", c.Status)
	}
}

// TestCertRenewalWaitsForSiteChange: a renewal asked for while the node
// applies a change of the site (here a forced HTTPS redirect) waits for
// it, and is ordered as soon as the node has applied it, not at the next
// look minutes later.
func TestCertRenewalWaitsForSiteChange(t *testing.T) {
	e := startCertEnv(t, "certw", "certw.example.com")
	const id = "certw.example.com"
	ctx := context.Background()
	first := e.waitCert(t, id, "issued", issuedState).Status
	e.node.setHoldAccounts(true)
	if _, err := e.s.Admin.SetHTTPSRedirect(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Admin.RenewCertificate(ctx, id); err != nil {
		t.Fatal(err)
	}
	c := e.waitCert(t, id, "waiting for the site change", func(c *store.Certificate) bool {
		return strings.Contains(c.Status.LastError, "to serve the site")
	})
	if c.Status.Serial != first.Serial || c.Status.State != store.CertIssued {
		t.Fatalf("the served certificate changed while waiting: %+v", c.Status)
	}
	e.node.setHoldAccounts(false)
	e.waitCert(t, id, "renewed once the site change is applied", func(c *store.Certificate) bool {
		return c.Status.Serial != first.Serial && issuedState(c) && c.Status.LastError == ""
	})
}

// TestCertFailedFirstIssue: a certificate never issued whose order fails
// is FAILED with the reason, and is retried with backoff.
func TestCertFailedFirstIssue(t *testing.T) {
	e := startCertEnv(t, "certf", "certf.example.com")
	e.node.setFail(true)
	c := e.waitCert(t, "certf.example.com", "failed", func(c *store.Certificate) bool { return c.Status.Failures >= 1 })
	if c.Status.State != store.CertFailed || c.Status.ChainPEM != "" || c.Status.NextAttempt.IsZero() {
		t.Fatalf("first failure: %+v", c.Status)
	}
	e.node.setFail(false)
	e.waitCert(t, "certf.example.com", "issued after the backoff", issuedState)
}

// TestCertRevokeAndDelete: revoking asks the node to revoke the served
// chain and turns auto-renewal off; deleting removes the certificate from
// the node, then the record; a removed site's certificate goes the same
// way.
func TestCertRevokeAndDelete(t *testing.T) {
	e := startCertEnv(t, "certd", "certd.example.com")
	ctx := context.Background()
	const id = "certd.example.com"
	issued := e.waitCert(t, id, "issued", issuedState)
	e.change(t, id, func(c *store.Certificate) { c.Revoke, c.RevokeReason = true, 4 })
	c := e.waitCert(t, id, "revoked", func(c *store.Certificate) bool { return c.Status.State == store.CertRevoked })
	if c.AutoRenew || !hasEvent(c, "revoked", issued.Status.Serial) {
		t.Fatalf("revoked: autoRenew %t events %+v", c.AutoRenew, c.Status.Events)
	}
	rv := e.node.tasks("revoke_certificate")
	if len(rv) != 1 || rv[0].GetRevokeCertificate().GetReason() != 4 || string(rv[0].GetRevokeCertificate().GetChainPem()) != issued.Status.ChainPEM {
		t.Fatalf("revoke tasks: %v", rv)
	}

	e.change(t, id, func(c *store.Certificate) { c.Deleting = true })
	// Deleted; the site (still without NoAutoCertificate, which the API
	// would set) may get a new automatic one at once.
	testenv.WaitFor(t, 20*time.Second, "record deleted", func() bool {
		c, err := e.st.GetCertificate(ctx, id)
		return err != nil || c.CreatedAt.After(issued.CreatedAt)
	})
	if len(e.node.tasks("remove_certificate")) != 1 {
		t.Fatal("not removed from the node before the record went")
	}

	// An add-on domain gets its own automatic certificate; removing the
	// domain removes it.
	const addon = "addon-certd.example.org"
	if _, err := e.s.Admin.AddDomain(ctx, e.acct.ID, addon, ""); err != nil {
		t.Fatal(err)
	}
	e.waitCert(t, addon, "issued", issuedState)
	if err := e.s.Admin.RemoveDomain(ctx, e.acct.ID, addon); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "add-on's certificate deleted", func() bool {
		_, err := e.st.GetCertificate(ctx, addon)
		return err != nil
	})
	if len(e.node.tasks("remove_certificate")) != 2 {
		t.Fatal("the removed site's certificate was not removed from the node")
	}

	// Deleting the account deletes its certificates' records.
	e.waitCert(t, id, "the site's automatic certificate back", issuedState)
	if _, err := e.s.Admin.AccountAction(ctx, "deleteAccount", e.acct.ID); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "the deleted account's certificate gone", func() bool {
		_, err := e.st.GetCertificate(ctx, id)
		return err != nil
	})
}

// TestCertMailNames: once the account has mail on the site's domain, its
// automatic certificate adds mail. and webmail. and is served by the mail
// daemons too; webmail. validates as well (zones get a webmail name).
func TestCertMailNames(t *testing.T) {
	e := startCertEnv(t, "certm", "certm.example.com")
	ctx := context.Background()
	const id = "certm.example.com"
	e.waitCert(t, id, "issued", issuedState)
	if _, err := e.s.Admin.CreateMailbox(ctx, e.acct.ID, "info@"+id, "", 0); err != nil {
		t.Fatal(err)
	}
	c := e.waitCert(t, id, "reissued with mail", func(c *store.Certificate) bool { return c.Mail && issuedState(c) })
	want := []string{id, "www." + id, "mail." + id, "webmail." + id}
	if !slices.Equal(c.Domains, want) {
		t.Fatalf("names %v, want %v", c.Domains, want)
	}
	if !slices.Equal(c.Status.IssuedDomains, want) || hasEvent(c, "skipped", "webmail."+id) {
		t.Fatalf("issued for %v; events %+v", c.Status.IssuedDomains, c.Status.Events)
	}
	orders := e.node.tasks("issue_certificate")
	if o := orders[len(orders)-1].GetIssueCertificate(); !o.GetMail() {
		t.Fatalf("the order does not serve mail: %v", o)
	}
}

// TestCertPublishChallenge: the gateway publishes a DNS-01 record only for
// the node that orders the certificate, while it orders it, and only at
// _acme-challenge.NAME of its names; two values coexist at one name and
// each is withdrawn alone.
func TestCertPublishChallenge(t *testing.T) {
	e := startCertEnv(t, "certp", "certp.example.com")
	ctx := context.Background()
	const id = "certp.example.com"
	e.waitCert(t, id, "issued", issuedState)
	const fqdn = "_acme-challenge.certp.example.com"
	req := func(cert, fqdn, value string, remove bool) *agentpb.PublishChallengeRequest {
		return &agentpb.PublishChallengeRequest{CertificateId: cert, Fqdn: fqdn, Value: value, Remove: remove}
	}
	wantCode := func(what string, err error, code codes.Code) {
		t.Helper()
		if status.Code(err) != code {
			t.Fatalf("%s: %v, want %s", what, err, code)
		}
	}
	v1 := strings.Repeat("v", 43)
	wantCode("no order in flight", e.s.PublishChallengeForTest(ctx, "n1", req(id, fqdn, v1, false)), codes.PermissionDenied)

	// Order a wildcard by DNS-01; the node holds the order open.
	e.node.setHold(id, true)
	e.change(t, id, func(c *store.Certificate) {
		c.Auto, c.Challenge = false, store.ChallengeDNS01
		c.Domains = []string{id, "*." + id}
	})
	c := e.waitCert(t, id, "ordering", func(c *store.Certificate) bool { return c.Status.TaskID != "" && c.Generation == 2 })
	testenv.WaitFor(t, 10*time.Second, "the node sees the DNS-01 order", func() bool { return len(e.node.tasks("issue_certificate")) == 2 })
	o := e.node.tasks("issue_certificate")[1].GetIssueCertificate()
	if o.GetChallenge() != agentpb.AcmeChallenge_ACME_CHALLENGE_DNS01 || !slices.Equal(o.GetNameservers(), []string{"127.0.0.1:5300"}) ||
		!slices.Equal(o.GetDomains(), []string{id, "*." + id}) {
		t.Fatalf("DNS-01 order: %v", o)
	}
	if c.Status.State != store.CertRenewing {
		t.Fatalf("state while reordering: %s", c.Status.State)
	}

	wantCode("missing certificate", e.s.PublishChallengeForTest(ctx, "n1", req("nosuch.example.com", fqdn, v1, false)), codes.NotFound)
	wantCode("another node", e.s.PublishChallengeForTest(ctx, "n2", req(id, fqdn, v1, false)), codes.PermissionDenied)
	wantCode("a name not in the certificate", e.s.PublishChallengeForTest(ctx, "n1", req(id, "_acme-challenge.other.certp.example.com", v1, false)), codes.PermissionDenied)
	wantCode("not a challenge name", e.s.PublishChallengeForTest(ctx, "n1", req(id, "certp.example.com", v1, false)), codes.InvalidArgument)
	wantCode("a value that is not one", e.s.PublishChallengeForTest(ctx, "n1", req(id, fqdn, `"x" y`, false)), codes.InvalidArgument)
	wantCode("not a digest", e.s.PublishChallengeForTest(ctx, "n1", req(id, fqdn, "apex-value", false)), codes.InvalidArgument)
	wantCode("a digest too long", e.s.PublishChallengeForTest(ctx, "n1", req(id, fqdn, v1+"v", false)), codes.InvalidArgument)
	apex, wild := strings.Repeat("a", 43), strings.Repeat("w", 43)

	txt := func() []string {
		z, _, err := e.st.GetZone(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range z.Records {
			if r.Type == "TXT" && r.Name == fqdn+"." {
				out = append(out, strings.Trim(r.Content, `"`))
			}
		}
		slices.Sort(out)
		return out
	}
	z0, _, _ := e.st.GetZone(ctx, id)
	for _, v := range []string{apex, wild, apex} {
		if err := e.s.PublishChallengeForTest(ctx, "n1", req(id, fqdn+".", v, false)); err != nil {
			t.Fatalf("publish %s: %v", v, err)
		}
	}
	if got := txt(); !slices.Equal(got, []string{apex, wild}) {
		t.Fatalf("TXT after publishing: %v", got)
	}
	wantCode("a third value at the name", e.s.PublishChallengeForTest(ctx, "n1", req(id, fqdn, v1, false)), codes.FailedPrecondition)
	if c, _ := e.st.GetCertificate(ctx, id); len(c.Status.Challenges) != 2 {
		t.Fatalf("published values not recorded in the status: %+v", c.Status.Challenges)
	}
	z1, _, _ := e.st.GetZone(ctx, id)
	if z1.Generation != z0.Generation+2 {
		t.Fatalf("zone generation %d -> %d, want two changes", z0.Generation, z1.Generation)
	}
	if err := e.s.PublishChallengeForTest(ctx, "n1", req(id, fqdn, apex, true)); err != nil {
		t.Fatal(err)
	}
	if got := txt(); !slices.Equal(got, []string{wild}) {
		t.Fatalf("TXT after withdrawing one: %v", got)
	}
	if c, _ := e.st.GetCertificate(ctx, id); len(c.Status.Challenges) != 1 || c.Status.Challenges[0].Value != wild {
		t.Fatalf("withdrawn value still recorded: %+v", c.Status.Challenges)
	}
	// The order completes without the node withdrawing the other value
	// (as if it died): the controller withdraws it; the node's late
	// withdrawal is still accepted.
	e.node.setHold(id, false)
	e.waitCert(t, id, "issued by DNS-01, challenges withdrawn", func(c *store.Certificate) bool {
		return issuedState(c) && c.Generation == 2 && len(c.Status.Challenges) == 0
	})
	if got := txt(); len(got) != 0 {
		t.Fatalf("TXT left behind: %v", got)
	}
	if err := e.s.PublishChallengeForTest(ctx, "n1", req(id, fqdn, wild, true)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, "zone served without the record", func() bool {
		z, _, err := e.st.GetZone(ctx, id)
		return err == nil && z.AppliedGeneration == z.Generation
	})
}

// TestCertInstallCustom: an installed certificate's key travels sealed to
// the node, is dropped from the record once the node has it, and no
// private key is anywhere in etcd in clear; a custom certificate is never
// renewed by ACME.
func TestCertInstallCustom(t *testing.T) {
	e := startCertEnv(t, "certi", "certi.example.com")
	ctx := context.Background()
	const id = "certi.example.com"
	e.waitCert(t, id, "issued", issuedState)
	leaf := e.node.issue(t, []string{id, "www." + id})
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ns, _, err := e.st.GetNodeState(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := pki.SealDER(ns.PublicKey, der, agentpb.CertificateKeySealContext(id))
	if err != nil {
		t.Fatal(err)
	}
	e.change(t, id, func(c *store.Certificate) {
		c.Auto, c.AutoRenew, c.Custom = false, false, true
		c.CustomChainPEM, c.SealedKey = string(leaf.GetChainPem()), sealed
	})
	c := e.waitCert(t, id, "installed", func(c *store.Certificate) bool { return issuedState(c) && c.Generation == 2 })
	if len(c.SealedKey) != 0 || c.Status.Serial != leaf.GetSerial() || !hasEvent(c, "installed", leaf.GetSerial()) {
		t.Fatalf("installed: sealed key kept %t, serial %s, events %+v", len(c.SealedKey) != 0, c.Status.Serial, c.Status.Events)
	}
	inst := e.node.tasks("install_certificate")
	if len(inst) != 1 || string(inst[0].GetInstallCertificate().GetSealedPrivateKey()) != string(sealed) {
		t.Fatalf("install tasks: %d", len(inst))
	}
	resp, err := e.s.RawEtcd(t).Get(ctx, "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if strings.Contains(string(kv.Value), "PRIVATE KEY") {
			t.Fatalf("a PEM private key in etcd under %s", kv.Key)
		}
	}
}

// TestCertNodeRemovedLosesTask: a node removed while an order is in
// flight takes its queue with it; the certificate does not wait for that
// task for ever (it is recorded as lost), no task is written for the
// missing node, and a deletion is forgotten at once.
func TestCertNodeRemovedLosesTask(t *testing.T) {
	e := startCertEnv(t, "certn", "certn.example.com")
	ctx := context.Background()
	const id = "certn.example.com"
	e.waitCert(t, id, "issued", issuedState)
	e.node.setHold(id, true)
	e.change(t, id, func(c *store.Certificate) {})
	e.waitCert(t, id, "renewal in flight", func(c *store.Certificate) bool { return c.Status.TaskID != "" })
	if err := e.st.RemoveNode(ctx, "n1", store.NewAuditEvent("test", "test", "node.remove", "n1", "ok")); err != nil {
		t.Fatal(err)
	}
	c := e.waitCert(t, id, "task lost", func(c *store.Certificate) bool {
		return c.Status.TaskID == "" && hasEvent(c, "failed", "task record lost")
	})
	if c.Status.ChainPEM == "" || c.Status.State != store.CertIssued {
		t.Fatalf("the served certificate was dropped: %+v", c.Status)
	}
	e.waitCert(t, id, "waiting for the node", func(c *store.Certificate) bool {
		return c.Status.TaskID == "" && strings.Contains(c.Status.LastError, "was removed")
	})
	_, err := e.st.UpdateCertificate(ctx, id, func(c *store.Certificate) ([]*store.CertTask, error) {
		return []*store.CertTask{{Node: "n1", Spec: &agentpb.Task{Action: &agentpb.Task_RemoveCertificate{RemoveCertificate: &agentpb.RemoveCertificateAction{Id: id}}}}}, nil
	}, store.AuditEvent{})
	if !errors.Is(err, store.ErrNoNode) {
		t.Fatalf("task for a removed node: err %v, want ErrNoNode", err)
	}
	e.change(t, id, func(c *store.Certificate) { c.Deleting = true })
	testenv.WaitFor(t, 20*time.Second, "record forgotten", func() bool {
		_, err := e.st.GetCertificate(ctx, id)
		return err != nil
	})
}

// TestCertOfNoSiteRemoved: a certificate record naming a site its account
// no longer has (written as the site went, before the controller indexed
// it, so the account's event found nothing to remove) is removed by its
// own sync, which hands it to the account's.
func TestCertOfNoSiteRemoved(t *testing.T) {
	e := startCertEnv(t, "certn", "certn.example.com")
	e.waitCert(t, "certn.example.com", "issued", issuedState)
	ctx := context.Background()
	const gone = "gone.certn.example.com"
	c := &store.Certificate{ID: gone, Account: e.acct.ID, Domains: []string{gone}, Challenge: store.ChallengeHTTP01, Generation: 1,
		Status: store.CertStatus{State: store.CertPending}}
	if err := e.st.CreateCertificate(ctx, c, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 20*time.Second, gone+" removed", func() bool {
		_, err := e.st.GetCertificate(ctx, gone)
		return errors.Is(err, store.ErrNotFound)
	})
	if _, err := e.st.GetCertificate(ctx, "certn.example.com"); err != nil {
		t.Fatalf("the site's own certificate: %v", err)
	}
}

// TestCertSiteReAdded: a domain removed and added again gets its automatic
// certificate back, whether the old one was still being removed (same
// account: the deletion is cancelled) or belonged to another account (it
// is forgotten once removed, then the new owner's is created).
func TestCertSiteReAdded(t *testing.T) {
	e := startCertEnv(t, "certr", "certr.example.com")
	ctx := context.Background()
	const addon = "addon-certr.example.org"
	readd := func(acct string) {
		t.Helper()
		testenv.WaitFor(t, 20*time.Second, "domain added again", func() bool {
			_, err := e.s.Admin.AddDomain(ctx, acct, addon, "")
			return err == nil
		})
	}
	if _, err := e.s.Admin.AddDomain(ctx, e.acct.ID, addon, ""); err != nil {
		t.Fatal(err)
	}
	e.waitCert(t, addon, "issued", issuedState)
	if err := e.s.Admin.RemoveDomain(ctx, e.acct.ID, addon); err != nil {
		t.Fatal(err)
	}
	readd(e.acct.ID)
	e.waitCert(t, addon, "issued again for the same account", func(c *store.Certificate) bool {
		return issuedState(c) && !c.Deleting && c.Account == e.acct.ID
	})

	other, err := e.s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "certr2", Domain: "certr2.example.com", Plan: "web"})
	if err != nil {
		t.Fatal(err)
	}
	e.waitCert(t, "certr2.example.com", "the other account's own", issuedState)
	if err := e.s.Admin.RemoveDomain(ctx, e.acct.ID, addon); err != nil {
		t.Fatal(err)
	}
	readd(other.ID)
	e.waitCert(t, addon, "issued for the new owner", func(c *store.Certificate) bool {
		return issuedState(c) && !c.Deleting && c.Account == other.ID
	})
}

// TestCertOrderPacing: orders over a node's budget are deferred with an
// event, then sent when the bucket has a token again.
func TestCertOrderPacing(t *testing.T) {
	e := startCertEnvWith(t, "certq", "certq.example.com", func(c *controlplane.ACMEConfig) {
		c.OrderBurst, c.OrderEvery = 1, 2*time.Second
	})
	ctx := context.Background()
	e.waitCert(t, "certq.example.com", "issued", issuedState)
	const addon = "addon-certq.example.org"
	if _, err := e.s.Admin.AddDomain(ctx, e.acct.ID, addon, ""); err != nil {
		t.Fatal(err)
	}
	c := e.waitCert(t, addon, "issued after a deferral", issuedState)
	if !hasEvent(c, "deferred", "order rate of node n1") {
		t.Fatalf("no deferral: %+v", c.Status.Events)
	}
}

// TestCertMissingNameRetried: a name left out of an order (it did not
// resolve) is ordered again, without a new generation, once its zone
// serves it; the served certificate stays until that order succeeds.
func TestCertMissingNameRetried(t *testing.T) {
	e := startCertEnv(t, "certl", "certl.example.com")
	ctx := context.Background()
	const id = "certl.example.com"
	const later = "later.certl.example.com"
	e.waitCert(t, id, "issued", issuedState)
	e.change(t, id, func(c *store.Certificate) {
		c.Auto = false
		c.Domains = append(c.Domains, later)
	})
	c := e.waitCert(t, id, "issued without the name", func(c *store.Certificate) bool {
		return issuedState(c) && c.Generation == 2 && hasEvent(c, "skipped", later)
	})
	if slices.Contains(c.Status.IssuedDomains, later) || c.Status.PartialOrders != 1 {
		t.Fatalf("partial issue: %+v", c.Status)
	}
	// Past the partial backoff (RetryBase), nothing new resolves: no
	// order, the served certificate stays.
	orders := len(e.node.tasks("issue_certificate"))
	time.Sleep(2 * time.Second)
	if n := len(e.node.tasks("issue_certificate")); n != orders {
		t.Fatalf("%d orders while no missing name resolves, want %d", n, orders)
	}
	if _, err := e.st.UpdateZone(ctx, id, func(z *store.Zone) error {
		z.Records = append(z.Records, store.ZoneRecord{Name: later + ".", Type: "A", Content: "127.0.0.1", TTL: 300})
		z.Generation++
		return nil
	}, store.NewAuditEvent("test", "", "zone", id, "ok")); err != nil {
		t.Fatal(err)
	}
	c = e.waitCert(t, id, "re-ordered with the name", func(c *store.Certificate) bool {
		return issuedState(c) && slices.Contains(c.Status.IssuedDomains, later)
	})
	if c.Generation != 2 || c.Status.PartialOrders != 0 || len(e.node.tasks("issue_certificate")) != orders+1 {
		t.Fatalf("re-order: generation %d partial %d, %d orders (had %d)", c.Generation, c.Status.PartialOrders, len(e.node.tasks("issue_certificate")), orders)
	}
}
