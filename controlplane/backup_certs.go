package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// restoreCertificates brings back the certificates of a whole-account
// restore that set the account up on a node (a deleted account recreated,
// or one whose node is gone). Ordered certificates are written back as
// they were asked for (names, challenge, auto-renew) and the certificate
// controller orders them on the account's node. An installed (custom)
// certificate was bought elsewhere: the node that served it kept its key
// in the backup (encrypted with the repository), and the restore's node
// serves it again (res names it restored); its record is then ISSUED
// there. One whose key the backup does not hold (a backup made before
// keys were kept, or the key could not be read then), or whose key the
// node could not serve, is a failed item (the restore is PARTIAL) and its
// record says so (FAILED, lastError) rather than ISSUED with nobody
// serving it. It returns the items restored and those that failed.
func (bc *backupController) restoreCertificates(ctx context.Context, r *store.Restore, a *store.Account, state *BackupState, res *agentpb.RestoreResult) (done []string, failed []store.BackupItemFailure) {
	now := time.Now().UTC()
	nodeFailed := map[string]string{}
	for _, f := range res.GetFailed() {
		nodeFailed[f.GetItem()] = f.GetError()
	}
	for _, sc := range state.Certificates {
		item := "certificate:" + sc.ID
		i := a.SiteIndex(sc.ID)
		if i < 0 {
			continue // the site is not the account's any more
		}
		if a.AllSites()[i].AliasOf != "" {
			// A parked site is served by its target's certificate and
			// has no record of its own (the controller would only
			// remove one written here).
			continue
		}
		var err error
		switch {
		case sc.Custom && slices.Contains(res.GetRestored(), item):
			err = bc.servedCustomCert(ctx, r, a, sc, now)
		case sc.Custom && nodeFailed[item] != "":
			// The node names the failure itself: the record only.
			if err := bc.unservedCustomCert(ctx, r, a, sc, "its key from the backup could not be served: "+nodeFailed[item], now); err != nil {
				failed = append(failed, store.BackupItemFailure{Item: item, Error: err.Error()})
			}
			continue
		case sc.Custom:
			err = bc.reportCustomCert(ctx, r, a, sc, now)
		default:
			err = bc.reorderCert(ctx, r, a, sc, now)
		}
		if err != nil {
			failed = append(failed, store.BackupItemFailure{Item: item, Error: err.Error()})
			continue
		}
		done = append(done, item)
	}
	return done, failed
}

// errKeyNotInBackup is the failure of a custom certificate whose key the
// backup does not hold.
func errKeyNotInBackup(sc BackupStateCertChain) error {
	return fmt.Errorf("the installed certificate (serial %s) was not restored: the backup does not hold its private key (made before keys were kept, or the key could not be read); install it again (the site is served with an ordered or self-signed certificate meanwhile)", sc.Serial)
}

// holdCustomCerts writes, as a restore sets the account up on node, the
// record of each installed certificate whose key the backup holds (keys):
// installed, waiting for the restore to serve its key there. The
// certificate controller orders nothing for its site meanwhile, where an
// automatic order would race the key coming back. It returns the sites
// held; a record with an order in flight is not.
func (bc *backupController) holdCustomCerts(ctx context.Context, r *store.Restore, a *store.Account, node string, state *BackupState, keys []string) (held []string, err error) {
	now := time.Now().UTC()
	why := "restoring from backup " + r.Backup + " onto node " + node + ": the installed certificate's key comes back from the backup"
	hold := func(c *store.Certificate, sc BackupStateCertChain) {
		c.Account, c.Node, c.Domains, c.Mail = a.ID, node, slices.Clone(sc.Domains), sc.Mail
		c.Custom, c.CustomChainPEM, c.SealedKey, c.AllowUntrusted = true, sc.ChainPEM, nil, true
		c.Auto, c.AutoRenew, c.Revoke = false, false, false
		clearServed(c)
		c.Status.State, c.Status.LastError = store.CertPending, why
		c.Status.ObservedGeneration = c.Generation // nothing to send: the restore serves it
		c.AddEvent(now, "restoring", why)
	}
	for _, sc := range state.Certificates {
		if !sc.Custom || !slices.Contains(keys, sc.ID) {
			continue
		}
		if i := a.SiteIndex(sc.ID); i < 0 || a.AllSites()[i].AliasOf != "" {
			continue
		}
		ok, err := bc.holdCert(ctx, sc, a, node, why, hold)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", sc.ID, err)
		}
		if ok {
			held = append(held, sc.ID)
		}
	}
	return held, nil
}

// holdCert holds sc's record (hold), creating it if there is none; false
// when the record is another's, being deleted, or busy with an order.
func (bc *backupController) holdCert(ctx context.Context, sc BackupStateCertChain, a *store.Account, node, why string, hold func(*store.Certificate, BackupStateCertChain)) (bool, error) {
	held := false
	_, err := bc.st.PutCertificate(ctx, sc.ID, func(c *store.Certificate, created bool) error {
		held = created
		if !created {
			if c.Account != a.ID || c.Deleting || c.Status.TaskID != "" {
				return store.ErrUnchanged
			}
			held = true
			if c.Custom && c.Status.LastError == why && c.Node == node {
				return store.ErrUnchanged // held already (a repeated step)
			}
			c.Generation++
		}
		hold(c, sc)
		return nil
	}, store.AuditEvent{})
	return held && err == nil, err
}

// servedCustomCert records an installed certificate the restore's node
// serves again from the backup's key.
func (bc *backupController) servedCustomCert(ctx context.Context, r *store.Restore, a *store.Account, sc BackupStateCertChain, now time.Time) error {
	chain, err := validate.CheckCertificateChain(sc.ID, sc.ChainPEM, "", true, nil, now)
	if err != nil {
		return err
	}
	msg := "served on node " + a.Node + " again, its key from backup " + r.Backup
	_, err = bc.st.UpdateCertificate(ctx, sc.ID, func(c *store.Certificate) ([]*store.CertTask, error) {
		if c.Account != a.ID || c.Deleting || c.Status.TaskID != "" {
			return nil, fmt.Errorf("certificate %s is another's or busy: %w", sc.ID, store.ErrConflict)
		}
		c.Node, c.Custom, c.CustomChainPEM, c.SealedKey = a.Node, true, sc.ChainPEM, nil
		c.Auto, c.AutoRenew, c.Revoke = false, false, false
		st := &c.Status
		leaf := chain.Leaf
		st.State, st.ChainPEM, st.Serial, st.Issuer = store.CertIssued, sc.ChainPEM, leaf.SerialNumber.Text(16), leaf.Issuer.CommonName
		st.NotBefore, st.NotAfter, st.RenewAt, st.IssuedDomains = leaf.NotBefore.UTC(), leaf.NotAfter.UTC(), time.Time{}, slices.Clone(leaf.DNSNames)
		st.LastError, st.Failures, st.NextAttempt = "", 0, time.Time{}
		st.ObservedGeneration = c.Generation
		c.AddEvent(now, "restored", msg)
		return nil, nil
	}, store.AuditEvent{})
	if err != nil {
		return err
	}
	_ = bc.st.AppendAudit(ctx, store.NewAuditEvent("system", bc.s.id, "certificate.restored", sc.ID, "ok: "+msg))
	return nil
}

// unservedCustomCert records why the restore's node does not serve an
// installed certificate whose key the backup held.
func (bc *backupController) unservedCustomCert(ctx context.Context, r *store.Restore, a *store.Account, sc BackupStateCertChain, why string, now time.Time) error {
	msg := "the installed certificate (serial " + sc.Serial + ") is not served on node " + a.Node + ": " + why + " (restore " + r.ID + "); install it again, or request one"
	return bc.unserve(ctx, sc.ID, a, now, func(c *store.Certificate) string {
		if c.Status.LastError == msg {
			return ""
		}
		c.Node = a.Node
		clearServed(c)
		c.Status.State, c.Status.ObservedGeneration = store.CertFailed, c.Generation
		return msg
	})
}

// reportCustomCert records that an installed certificate whose key the
// backup does not hold stayed behind, and returns the restore's failure.
func (bc *backupController) reportCustomCert(ctx context.Context, r *store.Restore, a *store.Account, sc BackupStateCertChain, now time.Time) error {
	err := bc.unserve(ctx, sc.ID, a, now, func(c *store.Certificate) string {
		if c.Node == a.Node && c.Status.ChainPEM != "" {
			return "" // the key went with the account already
		}
		if c.Status.ChainPEM == "" && c.Status.State == store.CertFailed {
			return "" // reported already
		}
		from := c.Node
		c.Node = a.Node
		c.Generation++
		c.SealedKey = nil
		return keyLeftBehind(c, from, "the account was restored from backup "+r.Backup+" onto node "+a.Node)
	})
	if err != nil {
		return err
	}
	return errKeyNotInBackup(sc)
}

// unserve records on the installed certificate id of a that it is not
// served on a's node: mark changes the record and returns why, or "" to
// leave it as it is. The reason becomes its lastError, an event and an
// audit entry. A record that is another's now (an ordered one) is left.
func (bc *backupController) unserve(ctx context.Context, id string, a *store.Account, now time.Time, mark func(c *store.Certificate) string) error {
	var msg string
	_, err := bc.st.UpdateCertificate(ctx, id, func(c *store.Certificate) ([]*store.CertTask, error) {
		msg = ""
		if c.Account != a.ID || !c.Custom || c.Deleting {
			return nil, store.ErrUnchanged
		}
		if msg = mark(c); msg == "" {
			return nil, store.ErrUnchanged
		}
		c.Status.LastError = msg
		c.AddEvent(now, "unserved", msg)
		return nil, nil
	}, store.AuditEvent{})
	switch {
	case err == nil:
		_ = bc.st.AppendAudit(ctx, store.NewAuditEvent("system", bc.s.id, "certificate.unserved", id, "failed: "+msg))
	case !errors.Is(err, store.ErrUnchanged) && !errors.Is(err, store.ErrNotFound):
		return err
	}
	return nil
}

// reorderCert writes an ordered certificate back as it was requested;
// the automatic certificate of the site, which the controller creates
// itself, only gets the requested names and settings over it.
func (bc *backupController) reorderCert(ctx context.Context, r *store.Restore, a *store.Account, sc BackupStateCertChain, now time.Time) error {
	challenge := sc.Challenge
	if challenge == "" {
		challenge = store.ChallengeHTTP01
	}
	if err := checkRestoredCert(a, sc, challenge); err != nil {
		return err
	}
	why := "restored from backup " + r.Backup + ": ordered again on node " + a.Node
	_, err := bc.st.PutCertificate(ctx, sc.ID, func(c *store.Certificate, created bool) error {
		if created {
			c.Account, c.Node, c.Status = a.ID, a.Node, store.CertStatus{State: store.CertPending}
		} else {
			if c.Account != a.ID || c.Deleting || c.Custom {
				return fmt.Errorf("certificate %s is another's now: %w", sc.ID, store.ErrConflict)
			}
			if slices.Equal(c.Domains, sc.Domains) && c.Challenge == challenge && c.Auto == !sc.Requested && c.AutoRenew == !sc.NoAutoRenew {
				return store.ErrUnchanged // as asked for already
			}
			c.Generation++
		}
		c.Domains, c.Challenge = slices.Clone(sc.Domains), challenge
		c.Auto, c.AutoRenew = !sc.Requested, !sc.NoAutoRenew
		c.AddEvent(now, "requested", why)
		return nil
	}, store.NewAuditEvent("system", bc.s.id, "certificate.requested", sc.ID, "ok: "+why))
	return err
}

// maxRestoredCertNames bounds the names of a certificate a restore writes
// back (the API allows fewer).
const maxRestoredCertNames = 100

// checkRestoredCert checks what a backup's state says of an ordered
// certificate before it is written back: the state comes from the node
// that holds the repository, so it gets the checks a request gets
// (names well formed, its site first, all within the account's domains,
// a wildcard only with DNS01). The controller then orders only the names
// in the account's zones.
func checkRestoredCert(a *store.Account, sc BackupStateCertChain, challenge store.CertChallenge) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("the backup's certificate %s is not restored: "+format, append([]any{sc.ID}, args...)...)
	}
	if challenge != store.ChallengeHTTP01 && challenge != store.ChallengeDNS01 {
		return bad("unknown challenge %q", challenge)
	}
	if len(sc.Domains) == 0 || sc.Domains[0] != sc.ID {
		return bad("its names do not start with its site")
	}
	if len(sc.Domains) > maxRestoredCertNames {
		return bad("%d names, at most %d", len(sc.Domains), maxRestoredCertNames)
	}
	sites := a.AllSites()
	for _, n := range sc.Domains {
		base, wildcard := strings.CutPrefix(n, "*.")
		if d, err := validate.Domain(base); err != nil || d != base {
			return bad("%q is not a domain name", n)
		}
		if wildcard && challenge != store.ChallengeDNS01 {
			return bad("the wildcard %s needs DNS01", n)
		}
		if !slices.ContainsFunc(sites, func(s store.Site) bool { return base == s.Domain || strings.HasSuffix(base, "."+s.Domain) }) {
			return bad("%s is not within the account's domains", n)
		}
	}
	return nil
}
