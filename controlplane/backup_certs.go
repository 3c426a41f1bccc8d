package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/validate"
)

// restoreCertificates brings back the certificates of a whole-account
// restore that set the account up on a node (a deleted account recreated,
// or one whose node is gone). Ordered certificates are written back as
// they were asked for (names, challenge, auto-renew) and the certificate
// controller orders them on the account's node. An installed (custom)
// certificate cannot come back: its private key never leaves the node
// that served it, and backups hold only its public chain. It is reported
// as a failed item naming it (the restore is PARTIAL) and, when its
// record survived, the record says so (FAILED, lastError) rather than
// ISSUED with nobody serving it. It returns the items restored and those
// that failed.
func (bc *backupController) restoreCertificates(ctx context.Context, r *store.Restore, a *store.Account, state *BackupState) (done []string, failed []store.BackupItemFailure) {
	now := time.Now().UTC()
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
		if sc.Custom {
			err = bc.reportCustomCert(ctx, r, a, sc, now)
		} else {
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

// errKeyNotInBackup is a custom certificate's failure in a restore.
func errKeyNotInBackup(sc BackupStateCertChain) error {
	return fmt.Errorf("the installed certificate (serial %s) was not restored: backups hold its chain, never its private key; install it again (the site is served with an ordered or self-signed certificate meanwhile)", sc.Serial)
}

func (bc *backupController) reportCustomCert(ctx context.Context, r *store.Restore, a *store.Account, sc BackupStateCertChain, now time.Time) error {
	var msg string
	_, err := bc.st.UpdateCertificate(ctx, sc.ID, func(c *store.Certificate) ([]*store.CertTask, error) {
		msg = ""
		if c.Account != a.ID || !c.Custom || c.Deleting || c.Node == a.Node && c.Status.ChainPEM != "" {
			// Another record now (an ordered one, or the key went
			// with the account already): nothing to say on it.
			return nil, store.ErrUnchanged
		}
		if c.Status.ChainPEM == "" && c.Status.State == store.CertFailed {
			return nil, store.ErrUnchanged // reported already
		}
		from := c.Node
		c.Node = a.Node
		c.Generation++
		c.SealedKey = nil
		msg = keyLeftBehind(c, from, "the account was restored from backup "+r.Backup+" onto node "+a.Node)
		c.Status.LastError = msg
		c.AddEvent(now, "unserved", msg)
		return nil, nil
	}, store.AuditEvent{})
	switch {
	case err == nil && msg != "":
		_ = bc.st.AppendAudit(ctx, store.NewAuditEvent("system", bc.s.id, "certificate.unserved", sc.ID, "failed: "+msg))
	case err != nil && !errors.Is(err, store.ErrUnchanged) && !errors.Is(err, store.ErrNotFound):
		return err
	}
	return errKeyNotInBackup(sc)
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
	set := func(c *store.Certificate) {
		c.Domains, c.Challenge = slices.Clone(sc.Domains), challenge
		c.Auto, c.AutoRenew = !sc.Requested, !sc.NoAutoRenew
	}
	for range 3 {
		_, err := bc.st.UpdateCertificate(ctx, sc.ID, func(c *store.Certificate) ([]*store.CertTask, error) {
			if c.Account != a.ID || c.Deleting || c.Custom {
				return nil, fmt.Errorf("certificate %s is another's now: %w", sc.ID, store.ErrConflict)
			}
			if slices.Equal(c.Domains, sc.Domains) && c.Challenge == challenge && c.Auto == !sc.Requested && c.AutoRenew == !sc.NoAutoRenew {
				return nil, store.ErrUnchanged // as asked for already
			}
			set(c)
			c.Generation++
			c.AddEvent(now, "requested", why)
			return nil, nil
		}, store.AuditEvent{})
		if errors.Is(err, store.ErrUnchanged) {
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			if err == nil {
				_ = bc.st.AppendAudit(ctx, store.NewAuditEvent("system", bc.s.id, "certificate.requested", sc.ID, "ok: "+why))
			}
			return err
		}
		c := &store.Certificate{ID: sc.ID, Account: a.ID, Node: a.Node, Status: store.CertStatus{State: store.CertPending}}
		set(c)
		c.AddEvent(now, "requested", why)
		err = bc.st.CreateCertificate(ctx, c, store.NewAuditEvent("system", bc.s.id, "certificate.requested", sc.ID, "ok: "+why))
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		// The automatic one was created meanwhile: set it as asked.
	}
	return fmt.Errorf("certificate %s: %w", sc.ID, store.ErrConflict)
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
