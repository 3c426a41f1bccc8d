package graph_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// TestCpanelImporterCertificate: a certificate of a cPanel archive, its key
// sealed by the node, is installed through installCertificate's record
// path as the importing admin (the record an installed certificate has,
// with autoRenew on: ACME takes over its renewal; the installCertificate
// audit event from the import), once however often
// the step runs; a refusal (another node, untrusted, not the account's
// site, not canonical, no key) writes nothing.
func TestCpanelImporterCertificate(t *testing.T) {
	tn := setupCertTenants(t, pauseBackups)
	ctx := context.Background()
	imp := graph.NewCpanelImporter(&graph.Resolver{Store: tn.s.Store(), Log: slog.New(slog.DiscardHandler)})
	d := tn.a1Domain
	a, _, err := tn.s.Store().GetAccount(ctx, tn.a1.ID)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good, _, goodDER := tn.issue(t, false, now.Add(-time.Hour), now.Add(30*24*time.Hour), d, "www."+d)
	self, _, selfDER := tn.issue(t, true, now.Add(-time.Hour), now.Add(30*24*time.Hour), d)
	seal := func(der []byte, node, id string) []byte {
		s, err := pki.Seal(&tn.nodeKeys[node].PublicKey, der, agentpb.CertificateKeySealContext(id))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	other := "n-eu"
	if a.Node == other {
		other = "n-us"
	}
	sealed := seal(goodDER, a.Node, d)
	b, _, err := tn.s.Store().GetAccount(ctx, tn.b1.ID)
	if err != nil {
		t.Fatal(err)
	}

	before := certState(t, tn)
	for _, c := range []struct {
		name, account, node, domain, chain string
		key                                []byte
		code                               string
	}{
		{"another node", a.ID, other, d, good, sealed, "CONFLICT"},
		{"untrusted", a.ID, a.Node, d, self, seal(selfDER, a.Node, d), "INVALID_INPUT"},
		{"another account's site", a.ID, b.Node, tn.b1Domain, good, sealed, "CONFLICT"},
		{"a site the chain does not cover", b.ID, b.Node, tn.b1Domain, good, sealed, "INVALID_INPUT"},
		{"no site", a.ID, a.Node, "nowhere.example.org", good, sealed, "NOT_FOUND"},
		{"not canonical", a.ID, a.Node, "Alpha1.Example.com", good, sealed, "INVALID_INPUT"},
		{"no key", a.ID, a.Node, d, good, nil, "INVALID_INPUT"},
	} {
		err := imp.InstallSealedCertificate(ctx, "admin", "imp-test", c.account, c.node, c.domain, c.chain, c.key)
		if code := graph.CodeOf(err); code != c.code {
			t.Errorf("%s: %s (%v), want %s", c.name, code, err, c.code)
		}
	}
	if after := certState(t, tn); after != before {
		t.Fatalf("refused installs changed state:\nbefore %s\nafter  %s", before, after)
	}

	// The site's automatic certificate, served for mail.DOMAIN too: the
	// imported one, which does not cover that name, takes its record for
	// the site only.
	if _, err := tn.s.Store().GetCertificate(ctx, d); err == nil {
		if _, err := tn.s.Store().UpdateCertificate(ctx, d, func(c *store.Certificate) ([]*store.CertTask, error) {
			c.Mail = true
			return nil, nil
		}, store.AuditEvent{}); err != nil {
			t.Fatal(err)
		}
	} else if err := tn.s.Store().CreateCertificate(ctx, &store.Certificate{ID: d, Account: a.ID, Node: a.Node, Domains: []string{d},
		Auto: true, AutoRenew: true, Mail: true, Generation: 1}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	if err := imp.InstallSealedCertificate(ctx, "admin", "imp-test", a.ID, a.Node, d, good, sealed); err != nil {
		t.Fatal(err)
	}
	c, err := tn.s.Store().GetCertificate(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Custom || !c.AutoRenew || c.Auto || c.Mail || c.AllowUntrusted || c.Node != a.Node || string(c.SealedKey) != string(sealed) || c.Account != a.ID {
		t.Fatalf("stored certificate: %+v", c)
	}
	if opened, err := unsealForNode(tn.nodeKeys[c.Node], c.SealedKey, d); err != nil || string(opened) != string(goodDER) {
		t.Fatalf("the stored key does not open on %s: %v", c.Node, err)
	}
	// Run again (an import step repeated after a crash): nothing new.
	if err := imp.InstallSealedCertificate(ctx, "admin", "imp-test", a.ID, a.Node, d, good, seal(goodDER, a.Node, d)); err != nil {
		t.Fatal(err)
	}
	again, err := tn.s.Store().GetCertificate(ctx, d)
	if err != nil || again.Generation != c.Generation || string(again.SealedKey) != string(c.SealedKey) {
		t.Fatalf("repeated install changed the record: generation %d → %d, %v", c.Generation, again.Generation, err)
	}
	// Audited as installCertificate, by the importing admin, from the import.
	evs, _, _, err := tn.s.Store().ListAudit(ctx, store.AuditFilter{Action: "installCertificate", Target: d}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	ok := 0
	for _, ev := range evs {
		if ev.Actor == "admin" && ev.Source == "import/imp-test" && ev.Result == "ok" && ev.Detail["trusted"] == "true" {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("%d installCertificate events from the import, want 1: %+v", ok, evs)
	}
}
