package controlplane_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
)

func parseLeaf(chainPEM []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(chainPEM)
	if b == nil {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

// installedOn makes the site's certificate of a an installed one that
// node serves (as installCertificate then the node's result leave it).
func installedOn(t *testing.T, st *store.Store, a *client.Account, node string) string {
	t.Helper()
	domain := a.Username + ".example.com"
	certPEM, _, _, leaf := boughtCert(t, domain)
	set := func(c *store.Certificate) {
		c.Account, c.Node, c.Domains = a.ID, node, []string{domain}
		c.Custom, c.CustomChainPEM, c.Auto, c.AutoRenew = true, certPEM, false, false
		c.Status = store.CertStatus{State: store.CertIssued, ObservedGeneration: c.Generation, ChainPEM: certPEM,
			Serial: leaf.SerialNumber.Text(16), Issuer: leaf.Issuer.CommonName, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
			IssuedDomains: leaf.DNSNames}
	}
	putCert(t, st, domain, set)
	return domain
}

// putCert writes certificate id as set makes it, over the record there is
// or as a new one: the controller may create the site's automatic one at
// any moment, so a create that finds one updates it instead.
func putCert(t *testing.T, st *store.Store, id string, set func(c *store.Certificate)) {
	t.Helper()
	if _, err := st.PutCertificate(context.Background(), id, func(c *store.Certificate, _ bool) error { set(c); return nil }, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
}

// A live migration exports an installed certificate's key from the
// source, sealed to the target, and the target is asked to install it
// with that sealed key; the record follows the account, ISSUED.
func TestMigrationMovesCustomCertificate(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	domain := installedOn(t, e.st, a, "web-1")
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))

	exp := e.n1.tasks("exportCredentials")
	if len(exp) == 0 || len(exp[0].GetExportCredentials().GetCertificates()) != 1 ||
		exp[0].GetExportCredentials().GetCertificates()[0].GetId() != domain {
		t.Fatalf("export tasks on web-1: %v", exp)
	}
	testenv.WaitFor(t, 15*time.Second, "installed on web-2", func() bool {
		c, err := e.st.GetCertificate(ctx, domain)
		return err == nil && c.Node == "web-2" && c.Status.State == store.CertIssued && c.Status.ObservedGeneration == c.Generation && len(c.SealedKey) == 0
	})
	inst := e.n2.tasks("installCertificate")
	if len(inst) == 0 || string(inst[0].GetInstallCertificate().GetSealedPrivateKey()) != "sealed-key:"+domain {
		t.Fatalf("install tasks on web-2: %v", inst)
	}
	if n := len(e.n1.tasks("installCertificate")); n != 0 {
		t.Fatalf("%d installs on the source", n)
	}
}

// When the key cannot come (the source is down: the account is restored
// from a backup onto the target), the certificate is not left looking
// ISSUED with nobody serving it: FAILED, a lastError naming where the key
// stayed, an event and an audit entry.
func TestMigrationSourceDownCustomCertificateReported(t *testing.T) {
	e, accts := newMigEnv(t, 1, func(c *controlplane.Config) {
		c.Backup.SchedulePass = 200 * time.Millisecond
		c.Backup.Sweep = 500 * time.Millisecond
	})
	ctx := context.Background()
	a := accts[0]
	domain := installedOn(t, e.st, a, "web-1")
	if err := e.st.CreateBackupTarget(ctx, &store.BackupTarget{Name: "s3", Kind: store.TargetS3, Endpoint: "http://127.0.0.1:9", Bucket: "b"}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	b := &store.Backup{ID: store.NewBackupID(a.Username, time.Now()), Account: a.Username, AccountID: a.ID, Owner: "admin", Node: "web-1", Target: "s3"}
	if err := e.st.CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "backup succeeded", func() bool {
		got, err := e.st.GetBackup(ctx, b.ID)
		return err == nil && got.Status.State == store.BackupSucceeded
	})
	e.n2.mu.Lock()
	e.n2.restoreFrom = e.n1.tasks("backupAccount")[0].GetBackupAccount()
	e.n2.mu.Unlock()
	e.n1.kill()
	testenv.WaitFor(t, 20*time.Second, "web-1 DOWN", func() bool {
		v, err := e.st.GetNode(ctx, "web-1")
		return err == nil && v.State.Status == store.NodeDown
	})
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))

	c, err := e.st.GetCertificate(ctx, domain)
	if err != nil {
		t.Fatal(err)
	}
	if c.Node != "web-2" || c.Status.State != store.CertFailed || c.Status.ChainPEM != "" ||
		!strings.Contains(c.Status.LastError, "stayed on node web-1") || !strings.Contains(c.Status.LastError, "install it again") || !strings.Contains(c.Status.LastError, "not served on node web-2") {
		t.Fatalf("certificate after a restore onto web-2: node %s, %s, %q", c.Node, c.Status.State, c.Status.LastError)
	}
	if ev := c.Status.Events[len(c.Status.Events)-1]; ev.Kind != "unserved" {
		t.Fatalf("last event %+v", ev)
	}
	audit, _, _, err := e.st.ListAudit(ctx, store.AuditFilter{Action: "certificate.unserved", Target: domain}, "", 10)
	if err != nil || len(audit) != 1 || !strings.HasPrefix(audit[0].Result, "failed: ") {
		t.Fatalf("audit %+v, %v", audit, err)
	}
	if n := len(e.n2.tasks("installCertificate")); n != 0 {
		t.Fatalf("%d installs without a key", n)
	}
}

// A rollback after the cutover points the installed certificate back at
// the source, which kept its key: nothing is sent there, and the record
// stays ISSUED with the same chain.
func TestMigrationRollbackKeepsCustomCertificate(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	domain := installedOn(t, e.st, a, "web-1")
	before, _ := e.st.GetCertificate(ctx, domain)
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	testenv.WaitFor(t, 15*time.Second, "installed on web-2", func() bool {
		c, err := e.st.GetCertificate(ctx, domain)
		return err == nil && c.Node == "web-2" && c.Status.ObservedGeneration == c.Generation
	})
	e.request(t, id, func(m *store.Migration) { m.RollbackRequested = true })
	e.wait(t, id, "ROLLED_BACK", migStatus(store.MigrationRolledBack))
	testenv.WaitFor(t, 15*time.Second, "back on web-1", func() bool {
		c, err := e.st.GetCertificate(ctx, domain)
		return err == nil && c.Node == "web-1" && c.Status.ObservedGeneration == c.Generation
	})
	c, _ := e.st.GetCertificate(ctx, domain)
	if c.Status.State != store.CertIssued || c.Status.ChainPEM != before.Status.ChainPEM || len(c.SealedKey) != 0 {
		t.Fatalf("after the rollback: %s, sealed key %d bytes", c.Status.State, len(c.SealedKey))
	}
	if n := len(e.n1.tasks("installCertificate")); n != 0 {
		t.Fatalf("%d installs on the source, which kept its key", n)
	}
}

// A key the source cannot export (say the vhost serves another
// certificate than the record's) does not fail the migration: the site
// moves, and the certificate is reported as not served on the target.
func TestMigrationCustomCertificateKeyNotExported(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	domain := installedOn(t, e.st, a, "web-1")
	e.n1.setFail("exportCredentials-partial", true)
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	c, err := e.st.GetCertificate(ctx, domain)
	if err != nil || c.Node != "web-2" || c.Status.State != store.CertFailed ||
		!strings.Contains(c.Status.LastError, "the served key does not match") {
		t.Fatalf("certificate: %+v, %v", c.Status, err)
	}
	if n := len(e.n2.tasks("installCertificate")); n != 0 {
		t.Fatalf("%d installs without a key", n)
	}
}

// orderedOn makes the site's certificate of a an ordered (ACME) one that
// node serves, renewed automatically.
func orderedOn(t *testing.T, st *store.Store, a *client.Account, node string) (string, *store.Certificate) {
	t.Helper()
	ctx := context.Background()
	domain := a.Username + ".example.com"
	// The site's automatic names, so that nothing asks for others.
	names := []string{domain, "www." + domain}
	certPEM, _, _, leaf := boughtCert(t, names...)
	c, err := st.UpdateCertificate(ctx, domain, func(c *store.Certificate) ([]*store.CertTask, error) {
		c.Account, c.Node, c.Domains = a.ID, node, names
		c.Custom, c.CustomChainPEM, c.SealedKey, c.Auto, c.AutoRenew = false, "", nil, true, true
		c.Status = store.CertStatus{State: store.CertIssued, ObservedGeneration: c.Generation, ChainPEM: certPEM,
			Serial: leaf.SerialNumber.Text(16), Issuer: leaf.Issuer.CommonName, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
			IssuedDomains: leaf.DNSNames, RenewAt: leaf.NotAfter.Add(-10 * 24 * time.Hour)}
		return nil, nil
	}, store.AuditEvent{})
	if err != nil {
		t.Fatal(err)
	}
	return domain, c
}

func hasEventWith(c *store.Certificate, kind string, parts ...string) bool {
	for _, ev := range c.Status.Events {
		if ev.Kind != kind {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(ev.Message, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// An ordered certificate moves as an installed one does: its served key
// is exported sealed to the target and installed there with the served
// chain; nothing is ordered again, and it stays automatically renewed.
// The finished migration keeps no sealed key.
func TestMigrationMovesOrderedCertificate(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	domain, before := orderedOn(t, e.st, a, "web-1")
	id := e.create(t, a, "web-2")
	m := e.wait(t, id, "DONE", migStatus(store.MigrationDone))

	exp := e.n1.tasks("exportCredentials")
	if len(exp) == 0 || len(exp[0].GetExportCredentials().GetCertificates()) != 1 ||
		string(exp[0].GetExportCredentials().GetCertificates()[0].GetChainPem()) != before.Status.ChainPEM {
		t.Fatalf("export tasks on web-1: %v", exp)
	}
	testenv.WaitFor(t, 15*time.Second, "installed on web-2", func() bool {
		c, err := e.st.GetCertificate(ctx, domain)
		return err == nil && c.Node == "web-2" && c.Status.State == store.CertIssued && c.Status.ObservedGeneration == c.Generation
	})
	inst := e.n2.tasks("installCertificate")
	if len(inst) != 1 || string(inst[0].GetInstallCertificate().GetSealedPrivateKey()) != "sealed-key:"+domain ||
		string(inst[0].GetInstallCertificate().GetChainPem()) != before.Status.ChainPEM {
		t.Fatalf("install tasks on web-2: %v", inst)
	}
	c, _ := e.st.GetCertificate(ctx, domain)
	if c.Custom || !c.Auto || !c.AutoRenew || len(c.SealedKey) != 0 || c.Status.ChainPEM != before.Status.ChainPEM ||
		c.Status.Serial != before.Status.Serial || c.Status.RenewAt.IsZero() || !c.Status.RenewAt.Before(c.Status.NotAfter) {
		t.Fatalf("certificate on web-2: %+v", c)
	}
	if !hasEventWith(c, "moved", "serial "+before.Status.Serial, "web-2") {
		t.Fatalf("no move event: %+v", c.Status.Events)
	}
	if n := len(e.n2.tasks("issueCertificate")); n != 0 {
		t.Fatalf("%d orders on web-2", n)
	}
	m, _ = e.st.GetMigration(ctx, m.ID)
	if len(m.SealedCertKeys)+len(m.SealedMailboxes)+len(m.SealedDBUsers)+len(m.ExportedCertChains) != 0 {
		t.Fatalf("the finished migration keeps sealed secrets: %d keys", len(m.SealedCertKeys))
	}
}

// When the ordered certificate's key cannot come, it is ordered again on
// the target, and its record says why: never silently.
func TestMigrationOrderedCertificateKeyNotExported(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	domain, before := orderedOn(t, e.st, a, "web-1")
	e.n1.setFail("exportCredentials-partial", true)
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	c, err := e.st.GetCertificate(ctx, domain)
	if err != nil || c.Node != "web-2" || c.Status.State == store.CertIssued || c.Status.ChainPEM != "" || c.Generation <= before.Generation {
		t.Fatalf("certificate: %+v, %v", c, err)
	}
	if !hasEventWith(c, "unserved", "the served key does not match", "ordered again on node web-2") {
		t.Fatalf("events: %+v", c.Status.Events)
	}
	audit, _, _, err := e.st.ListAudit(ctx, store.AuditFilter{Action: "certificate.unserved", Target: domain}, "", 10)
	if err != nil || len(audit) != 1 {
		t.Fatalf("audit %+v, %v", audit, err)
	}
	if n := len(e.n2.tasks("installCertificate")); n != 0 {
		t.Fatalf("%d installs without a key", n)
	}
}

// The target refusing the install (say the key does not unseal there)
// falls back to ordering again, with the failure in the record.
func TestMigrationOrderedCertificateInstallFails(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	domain, _ := orderedOn(t, e.st, a, "web-1")
	e.n2.setFail("installCertificate", true)
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	testenv.WaitFor(t, 15*time.Second, "the install failed on web-2", func() bool {
		c, err := e.st.GetCertificate(ctx, domain)
		return err == nil && c.Status.TaskID == "" && c.Status.Failures > 0
	})
	c, _ := e.st.GetCertificate(ctx, domain)
	if c.Node != "web-2" || c.Status.State != store.CertFailed || c.Status.ChainPEM != "" || c.Generation <= c.Status.ObservedGeneration ||
		!strings.Contains(c.Status.LastError, "installCertificate fails") {
		t.Fatalf("certificate: %s, chain %d bytes, gen %d/%d, %q", c.Status.State, len(c.Status.ChainPEM), c.Generation, c.Status.ObservedGeneration, c.Status.LastError)
	}
}

// A rollback gives the source's certificate back to the record: the
// source kept serving it, even when its key did not come to the target.
func TestMigrationRollbackRestoresCertificates(t *testing.T) {
	for _, tc := range []struct {
		name      string
		custom    bool
		keyStayed bool
	}{
		{"installed-key-left-behind", true, true},
		{"ordered-moved", false, false},
		{"ordered-key-left-behind", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, accts := newMigEnv(t, 1)
			ctx := context.Background()
			a := accts[0]
			var domain string
			if tc.custom {
				domain = installedOn(t, e.st, a, "web-1")
			} else {
				domain, _ = orderedOn(t, e.st, a, "web-1")
			}
			before, _ := e.st.GetCertificate(ctx, domain)
			e.n1.setFail("exportCredentials-partial", tc.keyStayed)
			id := e.create(t, a, "web-2")
			e.wait(t, id, "DONE", migStatus(store.MigrationDone))
			testenv.WaitFor(t, 15*time.Second, "settled on web-2", func() bool {
				c, err := e.st.GetCertificate(ctx, domain)
				return err == nil && c.Node == "web-2" && c.Status.TaskID == "" && (tc.keyStayed || c.Status.State == store.CertIssued)
			})
			if m, _ := e.st.GetMigration(ctx, id); len(m.CertsAtSource) != 1 {
				t.Fatalf("the source's certificates are not kept for a rollback: %d", len(m.CertsAtSource))
			}
			e.request(t, id, func(m *store.Migration) { m.RollbackRequested = true })
			m := e.wait(t, id, "ROLLED_BACK", migStatus(store.MigrationRolledBack))
			testenv.WaitFor(t, 15*time.Second, "back on web-1", func() bool {
				c, err := e.st.GetCertificate(ctx, domain)
				return err == nil && c.Node == "web-1" && c.Status.TaskID == ""
			})
			c, _ := e.st.GetCertificate(ctx, domain)
			if c.Status.State != store.CertIssued || c.Status.ChainPEM != before.Status.ChainPEM || c.Status.Serial != before.Status.Serial ||
				c.Status.LastError != "" || c.Status.ObservedGeneration != c.Generation || len(c.SealedKey) != 0 {
				t.Fatalf("after the rollback: %s, chain same %t, %q, gen %d/%d", c.Status.State, c.Status.ChainPEM == before.Status.ChainPEM,
					c.Status.LastError, c.Generation, c.Status.ObservedGeneration)
			}
			if !c.Custom && !c.Status.RenewAt.Equal(before.Status.RenewAt) {
				t.Fatalf("renewal at %s, was %s", c.Status.RenewAt, before.Status.RenewAt)
			}
			if ev := c.Status.Events[len(c.Status.Events)-1]; ev.Kind != "moved" || !strings.Contains(ev.Message, "still serves serial "+before.Status.Serial) {
				t.Fatalf("last event %+v", ev)
			}
			if n := len(e.n1.tasks("installCertificate")) + len(e.n1.tasks("issueCertificate")); n != 0 {
				t.Fatalf("%d tasks on the source, which kept its certificate", n)
			}
			if m, _ = e.st.GetMigration(ctx, m.ID); len(m.CertsAtSource)+len(m.SealedCertKeys) != 0 {
				t.Fatalf("the rolled back migration keeps %d certificates", len(m.CertsAtSource))
			}
		})
	}
}

// An installation pending on the source at the migration (its key sealed
// to the source) does not reach the target with the served
// certificate's key: the target installs the chain whose key was
// exported.
func TestMigrationCustomCertificatePendingInstall(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	domain := installedOn(t, e.st, a, "web-1")
	served, _ := e.st.GetCertificate(ctx, domain)
	newPEM, _, _, _ := boughtCert(t, domain)
	e.n1.setHold("installCertificate", true)
	if _, err := e.st.UpdateCertificate(ctx, domain, func(c *store.Certificate) ([]*store.CertTask, error) {
		c.CustomChainPEM, c.SealedKey = newPEM, []byte("sealed-to-web-1")
		c.Generation++
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "the install sent to web-1", func() bool { return len(e.n1.tasks("installCertificate")) == 1 })
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	e.n1.setHold("installCertificate", false)
	testenv.WaitFor(t, 15*time.Second, "installed on web-2", func() bool {
		c, err := e.st.GetCertificate(ctx, domain)
		return err == nil && c.Node == "web-2" && c.Status.TaskID == "" && c.Status.ObservedGeneration == c.Generation
	})
	inst := e.n2.tasks("installCertificate")
	if len(inst) != 1 || string(inst[0].GetInstallCertificate().GetChainPem()) != served.Status.ChainPEM ||
		string(inst[0].GetInstallCertificate().GetSealedPrivateKey()) != "sealed-key:"+domain {
		t.Fatalf("install tasks on web-2: %v", inst)
	}
	c, _ := e.st.GetCertificate(ctx, domain)
	if c.Status.ChainPEM != served.Status.ChainPEM || c.CustomChainPEM != served.Status.ChainPEM || !hasEventWith(c, "moved", "install it again") {
		t.Fatalf("certificate on web-2: %+v", c)
	}
}

// A revocation asked for on the target is not undone by a rollback: the
// record goes back to the source with the revocation still to make.
func TestMigrationRollbackKeepsRevocation(t *testing.T) {
	e, accts := newMigEnv(t, 1)
	ctx := context.Background()
	a := accts[0]
	domain, _ := orderedOn(t, e.st, a, "web-1")
	id := e.create(t, a, "web-2")
	e.wait(t, id, "DONE", migStatus(store.MigrationDone))
	testenv.WaitFor(t, 15*time.Second, "installed on web-2", func() bool {
		c, err := e.st.GetCertificate(ctx, domain)
		return err == nil && c.Node == "web-2" && c.Status.State == store.CertIssued && c.Status.TaskID == ""
	})
	if _, err := e.st.UpdateCertificate(ctx, domain, func(c *store.Certificate) ([]*store.CertTask, error) {
		c.Revoke, c.RevokeReason = true, 1
		c.Generation++
		return nil, nil
	}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	e.request(t, id, func(m *store.Migration) { m.RollbackRequested = true })
	e.wait(t, id, "ROLLED_BACK", migStatus(store.MigrationRolledBack))
	testenv.WaitFor(t, 15*time.Second, "back on web-1", func() bool {
		c, err := e.st.GetCertificate(ctx, domain)
		return err == nil && c.Node == "web-1"
	})
	c, _ := e.st.GetCertificate(ctx, domain)
	// The revocation goes on from the source (here it waits: no ACME
	// server is configured).
	if !c.Revoke || hasEventWith(c, "moved", "still serves") || !hasEventWith(c, "moved", "revocation asked for") {
		t.Fatalf("after the rollback: revoke %t, %s, gen %d/%d, events %+v", c.Revoke, c.Status.State, c.Generation, c.Status.ObservedGeneration, c.Status.Events)
	}
}
