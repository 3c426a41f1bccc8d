package controlplane_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/npanel/npanel/client"
	"github.com/npanel/npanel/controlplane"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/internal/testenv"
	"github.com/npanel/npanel/protos/agentpb"
)

// A whole-account restore onto another node (the first is gone) brings
// the certificates back: one a user requested (a wildcard over DNS-01,
// auto-renew off) is requested again with its names and settings, its
// record having been removed. An installed one comes back when the
// backup holds its key (TestRestoreAllServesInstalledCertificate); here
// it does not (a backup made before keys were kept), and the certificate
// is named in the restore's failed items (PARTIAL) and on its record
// (FAILED, lastError), never left ISSUED.
func TestRestoreAllBringsCertificatesBack(t *testing.T) { restoreAllCertificates(t, keyNotInBackup) }

// An installed certificate whose key the backup holds is held for the
// restore as the account is set up on the new node (nothing is ordered
// for its site meanwhile), served there by the restore, and ISSUED on
// the new node.
func TestRestoreAllServesInstalledCertificate(t *testing.T) { restoreAllCertificates(t, keyServed) }

// An installed certificate whose key the backup holds but the new node
// could not serve is the node's failed item, once, and its record says
// why (FAILED).
func TestRestoreAllInstalledCertificateNotServed(t *testing.T) {
	restoreAllCertificates(t, keyNotServed)
}

type restoredKey int

const (
	keyNotInBackup restoredKey = iota
	keyServed
	keyNotServed
)

func restoreAllCertificates(t *testing.T, key restoredKey) {
	s := testenv.StartServer(t, func(c *controlplane.Config) { c.Backup.Sweep = 500 * time.Millisecond })
	st := s.Store()
	ctx := context.Background()
	n1, n2 := startBackupNode(t, s, "web-1"), startBackupNode(t, s, "web-2")
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 5, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateBackupTarget(ctx, &store.BackupTarget{Name: "s3", Kind: store.TargetS3, Endpoint: "http://127.0.0.1:9", Bucket: "b"}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	const domain, shop = "bkcert.example.com", "shop-bkcert.example.com"
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "bkcert", Domain: domain, Plan: "web", Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "account active on web-1", func() bool {
		a, _, err := st.GetAccount(ctx, acct.ID)
		return err == nil && a.Node == "web-1" && a.Status == store.AccountActive
	})
	if _, err := s.Admin.AddDomain(ctx, acct.ID, shop, ""); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "the add-on site served", func() bool {
		a, _, err := st.GetAccount(ctx, acct.ID)
		return err == nil && a.SiteIndex(shop) >= 0 && a.AppliedGeneration >= a.Generation
	})
	// The site's certificate as a user requested it.
	wanted := []string{domain, "*." + domain}
	requested := func(c *store.Certificate) {
		c.Account, c.Node, c.Domains, c.Challenge = acct.ID, "web-1", wanted, store.ChallengeDNS01
		c.Auto, c.AutoRenew = false, false
	}
	putCert(t, st, domain, requested)
	// The add-on's, installed.
	installedOn(t, st, &client.Account{ID: acct.ID, Username: "shop-bkcert"}, "web-1")

	n1.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if task.GetBackupAccount() != nil {
			return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"s"}, SizeBytes: 1})
		}
		return nil
	})
	b := &store.Backup{ID: store.NewBackupID("bkcert", time.Now()), Account: "bkcert", AccountID: acct.ID, Owner: "admin", Node: "web-1", Target: "s3"}
	if err := st.CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "backup succeeded", func() bool {
		got, err := st.GetBackup(ctx, b.ID)
		return err == nil && got.Status.State == store.BackupSucceeded
	})
	backupTask := n1.tasksOf(func(t *agentpb.Task) bool { return t.GetBackupAccount() != nil })[0].GetBackupAccount()
	stateJSON := backupTask.GetStateJson()
	if !strings.Contains(string(stateJSON), `"challenge":"DNS01"`) || !strings.Contains(string(stateJSON), `"requested":true`) {
		t.Fatalf("the backup's state lacks how the certificate was requested: %s", stateJSON)
	}
	if bc := backupTask.GetCertificates(); len(bc) != 1 || bc[0].GetSite() != shop || len(bc[0].GetChainPem()) == 0 {
		t.Fatalf("the backup task asks to keep the keys of %v, want the installed certificate of %s only", bc, shop)
	}

	// web-1 is gone, and the requested certificate's record with it (as
	// an account's deletion removes them).
	if err := st.RemoveNode(ctx, "web-1", store.NewAuditEvent("test", "", "removeNode", "web-1", "ok")); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteCertificate(ctx, domain, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	var heldBeforeRestore atomic.Bool
	n2.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if r := task.GetRestoreBackup(); r != nil {
			res := &agentpb.RestoreResult{StateJson: stateJSON, ZoneFiles: backupTask.GetZoneFiles()}
			if key != keyNotInBackup {
				res.CertificateKeys = []string{shop}
			}
			if r.GetWhat() == agentpb.RestoreWhat_RESTORE_WHAT_ALL {
				res.Restored = []string{"files", "state"}
				if c, err := st.GetCertificate(ctx, shop); err == nil && c.Custom && c.Node == "web-2" && c.Status.State == store.CertPending &&
					slices.Contains(r.GetCertificateSites(), shop) {
					heldBeforeRestore.Store(true)
				}
				switch key {
				case keyServed:
					res.Restored = append(res.Restored, "certificate:"+shop)
				case keyNotServed:
					res.Failed = []*agentpb.BackupItemFailure{{Item: "certificate:" + shop, Error: "the certificate expired on 2026-01-01T00:00:00Z"}}
				}
			}
			return &agentpb.TaskResult{Result: &agentpb.TaskResult_Restore{Restore: res}}
		}
		return nil
	})
	r := &store.Restore{ID: store.NewRestoreID("bkcert", time.Now()), Backup: b.ID, Account: "bkcert", AccountID: acct.ID, Owner: "admin",
		What: store.RestoreAll, InPlace: true, Node: "web-2", Requester: "admin"}
	if err := st.CreateRestore(ctx, r, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	var got *store.Restore
	testenv.WaitFor(t, 30*time.Second, "restore finished", func() bool {
		rr, _, err := st.GetRestoreRev(ctx, r.ID)
		got = rr
		return err == nil && restoreDone(rr.Status.State)
	})
	if !slices.Contains(got.Status.Restored, "certificate:"+domain) {
		t.Fatalf("restored %v", got.Status.Restored)
	}
	if key != keyNotInBackup && !heldBeforeRestore.Load() {
		t.Fatal("the installed certificate was not held for the restore on web-2 when the node was asked to serve it")
	}
	switch key {
	case keyServed:
		ic, err := st.GetCertificate(ctx, shop)
		if got.Status.State != store.BackupSucceeded || !slices.Contains(got.Status.Restored, "certificate:"+shop) {
			t.Fatalf("restore: %s, restored %v, failed %+v", got.Status.State, got.Status.Restored, got.Status.Failed)
		}
		if err != nil || ic.Node != "web-2" || !ic.Custom || ic.Auto || ic.Status.State != store.CertIssued || ic.Status.ChainPEM == "" ||
			ic.Status.LastError != "" || ic.Status.ObservedGeneration != ic.Generation || !hasEvent(ic, "restored", b.ID) {
			t.Fatalf("installed certificate after the restore: %+v, %v", ic, err)
		}
		return
	case keyNotServed:
		if got.Status.State != store.BackupPartial || len(got.Status.Failed) != 1 || got.Status.Failed[0].Item != "certificate:"+shop {
			t.Fatalf("restore: %s, failed %+v", got.Status.State, got.Status.Failed)
		}
		ic, err := st.GetCertificate(ctx, shop)
		if err != nil || ic.Node != "web-2" || ic.Status.State != store.CertFailed || !strings.Contains(ic.Status.LastError, "could not be served: the certificate expired") {
			t.Fatalf("installed certificate after the restore: %+v, %v", ic.Status, err)
		}
		return
	}
	if got.Status.State != store.BackupPartial || len(got.Status.Failed) != 1 || got.Status.Failed[0].Item != "certificate:"+shop ||
		!strings.Contains(got.Status.Failed[0].Error, "install it again") {
		t.Fatalf("restore: %s, failed %+v", got.Status.State, got.Status.Failed)
	}
	c, err := st.GetCertificate(ctx, domain)
	if err != nil || c.Account != acct.ID || !slices.Equal(c.Domains, wanted) || c.Challenge != store.ChallengeDNS01 || c.Auto || c.AutoRenew || c.Custom {
		t.Fatalf("requested certificate after the restore: %+v, %v", c, err)
	}
	testenv.WaitFor(t, 15*time.Second, "the requested certificate on web-2", func() bool {
		c, err := st.GetCertificate(ctx, domain)
		return err == nil && c.Node == "web-2"
	})
	ic, err := st.GetCertificate(ctx, shop)
	if err != nil || ic.Node != "web-2" || ic.Status.State != store.CertFailed || ic.Status.ChainPEM != "" ||
		!strings.Contains(ic.Status.LastError, "stayed on node web-1") {
		t.Fatalf("installed certificate after the restore: %+v, %v", ic.Status, err)
	}
	audit, _, _, err := st.ListAudit(ctx, store.AuditFilter{Action: "certificate.unserved", Target: shop}, "", 10)
	if err != nil || len(audit) != 1 {
		t.Fatalf("audit %+v, %v", audit, err)
	}
}

// A backup's state that names a certificate for a parked (alias) site,
// which is served by its target's certificate and has none of its own,
// does not get one written by a whole-account restore.
func TestRestoreAllSkipsAliasCertificate(t *testing.T) {
	s := testenv.StartServer(t, func(c *controlplane.Config) { c.Backup.Sweep = 500 * time.Millisecond })
	st := s.Store()
	ctx := context.Background()
	n1, n2 := startBackupNode(t, s, "web-1"), startBackupNode(t, s, "web-2")
	if _, err := s.Admin.CreatePlan(ctx, client.Plan{Name: "web", DiskMB: 100, BandwidthMB: 1000, Domains: 5, Mailboxes: 1, Databases: 1, PHPVersions: []string{"8.2"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateBackupTarget(ctx, &store.BackupTarget{Name: "s3", Kind: store.TargetS3, Endpoint: "http://127.0.0.1:9", Bucket: "b"}, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	const domain, park = "bkalias.example.com", "park-bkalias.example.com"
	acct, err := s.Admin.CreateAccount(ctx, client.CreateAccountInput{Username: "bkalias", Domain: domain, Plan: "web", Node: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Admin.AddAliasDomain(ctx, acct.ID, park, domain); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "the alias served", func() bool {
		a, _, err := st.GetAccount(ctx, acct.ID)
		return err == nil && a.SiteIndex(park) >= 0 && a.Status == store.AccountActive && a.AppliedGeneration >= a.Generation
	})
	n1.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if task.GetBackupAccount() != nil {
			return backupResult(&agentpb.BackupResult{SnapshotIds: []string{"s"}, SizeBytes: 1})
		}
		return nil
	})
	b := &store.Backup{ID: store.NewBackupID("bkalias", time.Now()), Account: "bkalias", AccountID: acct.ID, Owner: "admin", Node: "web-1", Target: "s3"}
	if err := st.CreateBackup(ctx, b, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 15*time.Second, "backup succeeded", func() bool {
		got, err := st.GetBackup(ctx, b.ID)
		return err == nil && got.Status.State == store.BackupSucceeded
	})
	backupTask := n1.tasksOf(func(t *agentpb.Task) bool { return t.GetBackupAccount() != nil })[0].GetBackupAccount()
	var state controlplane.BackupState
	if err := json.Unmarshal(backupTask.GetStateJson(), &state); err != nil {
		t.Fatal(err)
	}
	// As a backup taken while the alias was a site of its own says.
	state.Certificates = append(state.Certificates, controlplane.BackupStateCertChain{ID: park, Domains: []string{park}})
	stateJSON, err := json.Marshal(&state)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.RemoveNode(ctx, "web-1", store.NewAuditEvent("test", "", "removeNode", "web-1", "ok")); err != nil {
		t.Fatal(err)
	}
	n2.setAnswer(func(task *agentpb.Task) *agentpb.TaskResult {
		if r := task.GetRestoreBackup(); r != nil {
			res := &agentpb.RestoreResult{StateJson: stateJSON, ZoneFiles: backupTask.GetZoneFiles()}
			if r.GetWhat() == agentpb.RestoreWhat_RESTORE_WHAT_ALL {
				res.Restored = []string{"files", "state"}
			}
			return &agentpb.TaskResult{Result: &agentpb.TaskResult_Restore{Restore: res}}
		}
		return nil
	})
	r := &store.Restore{ID: store.NewRestoreID("bkalias", time.Now()), Backup: b.ID, Account: "bkalias", AccountID: acct.ID, Owner: "admin",
		What: store.RestoreAll, InPlace: true, Node: "web-2", Requester: "admin"}
	if err := st.CreateRestore(ctx, r, store.AuditEvent{}); err != nil {
		t.Fatal(err)
	}
	var got *store.Restore
	testenv.WaitFor(t, 30*time.Second, "restore finished", func() bool {
		rr, _, err := st.GetRestoreRev(ctx, r.ID)
		got = rr
		return err == nil && restoreDone(rr.Status.State)
	})
	if slices.Contains(got.Status.Restored, "certificate:"+park) || slices.ContainsFunc(got.Status.Failed, func(f store.BackupItemFailure) bool { return f.Item == "certificate:"+park }) {
		t.Fatalf("restore: %s, restored %v, failed %+v", got.Status.State, got.Status.Restored, got.Status.Failed)
	}
	audit, _, _, err := st.ListAudit(ctx, store.AuditFilter{Action: "certificate.requested", Target: park}, "", 10)
	if err != nil || len(audit) != 0 {
		t.Fatalf("audit %+v, %v", audit, err)
	}
}
