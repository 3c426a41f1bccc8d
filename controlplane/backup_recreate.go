package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
)

// Disaster recovery: an account is set up on a new node from a backup's
// state through the store, as the API would write it, and the account,
// zone, database and mail controllers build it there. Every step is
// idempotent (a repeated step after a crash finds its work done).

// placeFromState puts r's account on r.Node: an account whose node is
// gone is moved (unplaced and pinned, so the account controller places
// and ensures it there through the normal lifecycle); a deleted account
// is created again from the state. Its zones, databases, database users
// and mailboxes are then written back, and the records of the installed
// certificates whose keys the backup holds (certKeys). It returns the
// account's id when it is a new one.
func (bc *backupController) placeFromState(ctx context.Context, r *store.Restore, a *store.Account, state *BackupState, certKeys []string) (newID string, heldCerts []string, err error) {
	node := r.Node
	nv, err := bc.st.GetNode(ctx, node)
	if err != nil {
		return "", nil, fmt.Errorf("node %s: %w", node, err)
	}
	if a != nil && !a.Deleted {
		if err := bc.moveAccount(ctx, r, a); err != nil {
			return "", nil, err
		}
	} else {
		if a, err = bc.recreateAccount(ctx, r, state); err != nil {
			return "", nil, err
		}
		newID = a.ID
	}
	if err := bc.rehomeZones(ctx, a, state, nv); err != nil {
		return "", nil, err
	}
	if err := bc.recreateDatabases(ctx, r, a, state, nv); err != nil {
		return "", nil, err
	}
	if err := bc.recreateMail(ctx, r, a, state, nv); err != nil {
		return "", nil, err
	}
	if heldCerts, err = bc.holdCustomCerts(ctx, r, a, node, state, certKeys); err != nil {
		return "", nil, err
	}
	return newID, heldCerts, nil
}

// moveAccount unplaces a whose node is gone and pins it to r.Node: the
// account controller places it there (allocation, primary zone) and
// ensures it from generation 1 of the node's view.
func (bc *backupController) moveAccount(ctx context.Context, r *store.Restore, a *store.Account) error {
	if a.Node != "" && a.Node != r.Node {
		ok, err := bc.nodeExists(ctx, a.Node)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("node %s still serves the account: an account is restored onto another node only when its own is gone", a.Node)
		}
	}
	_, err := bc.st.UpdateAccount(ctx, a.ID, func(a *store.Account) error {
		if a.Deleted {
			return fmt.Errorf("account %s is being deleted: %w", a.Username, store.ErrConflict)
		}
		if a.Node == r.Node || (a.Node == "" && a.PinnedNode == r.Node) {
			return store.ErrUnchanged // moved already
		}
		now := time.Now().UTC()
		a.Node, a.PinnedNode = "", r.Node
		a.AppliedGeneration, a.TaskID, a.Attempts = 0, "", 0
		a.Generation++
		a.SetStatus(store.AccountPending, "restoring from backup "+r.Backup+" onto node "+r.Node, now)
		return nil
	})
	if errors.Is(err, store.ErrUnchanged) {
		err = nil
	}
	if err == nil {
		_ = bc.st.AppendAudit(ctx, store.NewAuditEvent("system", bc.s.id, "account.restorePlace", a.Username, "ok: onto node "+r.Node+" (restore "+r.ID+")"))
	}
	return err
}

// recreateAccount creates a deleted account again from the state, pinned
// to r.Node, with its primary site; its other sites are added the way
// addSite adds them (names reserved, zones created).
func (bc *backupController) recreateAccount(ctx context.Context, r *store.Restore, state *BackupState) (*store.Account, error) {
	sa := state.Account
	// The restore's owner, not the backup's: the account may have changed
	// hands (changeAccountOwner moves its backups' records along).
	owner := r.Owner
	if owner == "" {
		owner = sa.Owner
	}
	if id, err := bc.st.AccountIDByUsername(ctx, sa.Username); err == nil {
		a, err := bc.accountOf(ctx, id)
		if err != nil {
			return nil, err
		}
		if a != nil && a.PinnedNode == r.Node && a.Domain == sa.Domain && a.Owner == owner {
			return a, bc.addSites(ctx, a, sa.Sites) // created by an earlier try of this step
		}
		return nil, fmt.Errorf("username %s is taken: %w", sa.Username, store.ErrConflict)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	plan, planRev, err := bc.st.GetPlanRev(ctx, sa.Plan)
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", sa.Plan, err)
	}
	lim := store.Limits{}
	if _, err := bc.st.GetReseller(ctx, owner); err == nil {
		// A reseller's account counts against its limits, which
		// CreateAccount reads itself once it meters.
		lim = store.Limits{MaxAccounts: 1}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	now := time.Now().UTC()
	// What the plan asks now, and what the account had (a backup holding
	// mailboxes needs a mail node even if its plan lost them since).
	roles := plan.RolesWith(sa.Roles)
	a := &store.Account{
		ID: store.NewAccountID(now), Username: sa.Username, Domain: sa.Domain, Plan: plan.Name, Owner: owner,
		DiskMB: plan.DiskMB, Roles: roles, PHPVersion: sa.PHPVersion, PlanGeneration: plan.Generation,
		Selector: sa.Selector, PinnedNode: r.Node, Suspended: sa.Suspended, Generation: 1, CreatedAt: now,
	}
	primary := store.Site{Domain: sa.Domain, Docroot: store.DefaultDocroot, PHPVersion: sa.PHPVersion}
	if i := slices.IndexFunc(sa.Sites, func(s store.Site) bool { return s.Domain == sa.Domain }); i >= 0 {
		primary = sa.Sites[i]
	}
	primary.Generation = 1
	a.Sites = []store.Site{primary}
	a.SetStatus(store.AccountPending, "restoring from backup "+r.Backup, now)
	ev := store.NewAuditEvent("system", bc.s.id, "createAccount", a.Username, "ok: restored from backup "+r.Backup+" (restore "+r.ID+")")
	ev.Detail = map[string]string{"id": a.ID, "domain": a.Domain, "owner": a.Owner, "plan": a.Plan, "node": r.Node}
	if err := bc.st.CreateAccount(ctx, a, planRev, lim, ev); err != nil {
		return nil, err
	}
	return a, bc.addSites(ctx, a, sa.Sites)
}

// addSites adds the sites of the state a lacks.
func (bc *backupController) addSites(ctx context.Context, a *store.Account, sites []store.Site) error {
	ev := store.NewAuditEvent("system", bc.s.id, "addSite", a.Username, "ok: restored from backup")
	_, err := bc.st.ChangeSites(ctx, a.ID, func(a *store.Account) (store.SiteChange, error) {
		var ch store.SiteChange
		for _, s := range sites {
			if a.SiteIndex(s.Domain) >= 0 {
				continue
			}
			a.Sites = append(a.Sites, s)
			ch.Added = append(ch.Added, s.Domain)
		}
		return ch, nil
	}, ev)
	return err
}

// rehomeZones points the account's zones whose primary node is gone at
// the new node; the zone controller serves them there. (The primary
// domain's zone is made again by the account's placement.)
func (bc *backupController) rehomeZones(ctx context.Context, a *store.Account, state *BackupState, nv *store.NodeView) error {
	zones := &zoneWriter{store: bc.st, views: &bc.s.dnsViews, ctl: &bc.s.zoneCtl}
	for _, zs := range state.Zones {
		z, _, err := bc.st.GetZone(ctx, zs.Name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if z.Account != a.ID || z.Node == nv.Name {
			continue
		}
		if ok, err := bc.nodeExists(ctx, z.Node); err != nil || ok {
			continue
		}
		ev := store.NewAuditEvent("system", bc.s.id, "zone.rehome", z.Name, "ok: onto node "+nv.Name)
		_, err = zones.ChangeZone(ctx, z.Name, ev, func(z *store.Zone) error {
			z.Node, z.Address = nv.Name, nv.Address
			z.AppliedGeneration, z.TaskID, z.Attempts = 0, "", 0
			z.Status, z.Reason = store.ZonePending, "restoring onto node "+nv.Name
			z.Generation++
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
	}
	return nil
}

// randomSecret is a password nobody knows: the node's restore puts the
// original hash back.
func randomSecret() []byte {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return []byte(base64.RawURLEncoding.EncodeToString(b[:]))
}

// recreateDatabases writes the state's databases and users back, on the
// new node, users with a random password sealed to it.
func (bc *backupController) recreateDatabases(ctx context.Context, r *store.Restore, a *store.Account, state *BackupState, nv *store.NodeView) error {
	if len(state.Databases)+len(state.DBUsers) == 0 {
		return nil
	}
	ev := store.NewAuditEvent("system", bc.s.id, "database.restore", a.Username, "ok: from backup "+r.Backup)
	return bc.st.ChangeDatabases(ctx, a.ID, "controller", func(set *store.DatabaseSet) (*store.DatabaseChange, error) {
		now := time.Now().UTC()
		ch := &store.DatabaseChange{}
		for _, d := range state.Databases {
			cur := set.Databases[d.Name]
			if cur != nil && cur.Node == nv.Name && !cur.Deleted {
				continue
			}
			nd := &store.Database{Account: a.ID, Name: d.Name, Owner: a.Username, Engine: d.Engine, Node: nv.Name,
				Generation: 1, CreatedAt: now, UpdatedAt: now}
			if cur != nil {
				nd.Generation, nd.CreatedAt = cur.Generation+1, cur.CreatedAt
			}
			ch.Databases = append(ch.Databases, nd)
		}
		for _, u := range state.DBUsers {
			cur := set.Users[u.Name]
			if cur != nil && cur.Node == nv.Name && !cur.Deleted {
				continue
			}
			pw := randomSecret()
			sealed, err := pki.SealDER(nv.State.PublicKey, pw, agentpb.DatabasePasswordSealContext(u.Name))
			clear(pw)
			if err != nil {
				return nil, fmt.Errorf("seal a password for %s: %w", u.Name, errSealed)
			}
			nu := &store.DatabaseUser{Account: a.ID, Name: u.Name, Owner: a.Username, Engine: u.Engine, Node: nv.Name,
				Hosts: u.Hosts, Grants: u.Grants, Generation: 1, SealedPassword: sealed, PasswordGeneration: 1, CreatedAt: now, UpdatedAt: now}
			if cur != nil {
				nu.Generation, nu.PasswordGeneration, nu.CreatedAt = cur.Generation+1, cur.PasswordGeneration+1, cur.CreatedAt
			}
			ch.Users = append(ch.Users, nu)
		}
		return ch, nil
	}, ev)
}

// recreateMail writes the state's mail domains and mailboxes back, on the
// new node, mailboxes with a random password sealed to it.
func (bc *backupController) recreateMail(ctx context.Context, r *store.Restore, a *store.Account, state *BackupState, nv *store.NodeView) error {
	if len(state.MailDomains)+len(state.Mailboxes) == 0 {
		return nil
	}
	ev := store.NewAuditEvent("system", bc.s.id, "mail.restore", a.Username, "ok: from backup "+r.Backup)
	return bc.st.ChangeMail(ctx, a.ID, func(set *store.MailSet) (*store.MailChange, error) {
		now := time.Now().UTC()
		ch := &store.MailChange{}
		// Only domains the account still serves: one it gave up since
		// the backup may be another tenant's now.
		served := func(domain string) bool {
			return set.Account != nil && slices.ContainsFunc(set.Account.Sites, func(s store.Site) bool { return s.Domain == domain })
		}
		for _, d := range state.MailDomains {
			if !served(d.Domain) {
				continue
			}
			cur := set.Domains[d.Domain]
			if cur != nil && !cur.Deleted {
				continue
			}
			nd := &store.MailDomain{Domain: d.Domain, Aliases: d.Aliases, CatchAll: d.CatchAll, Spam: d.Spam, Webmail: d.Webmail,
				Generation: 1, CreatedAt: now, UpdatedAt: now}
			if cur != nil {
				nd.Generation = cur.Generation + 1
			}
			ch.Domains = append(ch.Domains, nd)
		}
		for _, m := range state.Mailboxes {
			if !served(mailDomainOf(m.Address)) {
				continue
			}
			cur := set.Mailboxes[m.Address]
			if cur != nil && cur.Node == nv.Name && !cur.Deleted {
				continue
			}
			pw := randomSecret()
			sealed, err := pki.SealDER(nv.State.PublicKey, pw, agentpb.MailPasswordSealContext(m.Address))
			clear(pw)
			if err != nil {
				return nil, fmt.Errorf("seal a password for %s: %w", m.Address, errSealed)
			}
			nm := &store.Mailbox{Address: m.Address, Domain: mailDomainOf(m.Address), QuotaMB: m.QuotaMB, Disabled: m.Disabled,
				Node: nv.Name, SealedPassword: sealed, PasswordGeneration: 1, Autoresponder: m.Autoresponder,
				Generation: 1, CreatedAt: now, UpdatedAt: now}
			if cur != nil {
				nm.Generation, nm.PasswordGeneration, nm.CreatedAt = cur.Generation+1, cur.PasswordGeneration+1, cur.CreatedAt
			}
			ch.Mailboxes = append(ch.Mailboxes, nm)
		}
		return ch, nil
	}, ev)
}

func mailDomainOf(address string) string {
	for i := len(address) - 1; i >= 0; i-- {
		if address[i] == '@' {
			return address[i+1:]
		}
	}
	return ""
}

// recreatedSettled reports whether the node has answered for every
// database, database user and mailbox of the account: applied (with the
// newest password) or failed. The node's ALL restore must come after
// them, or a late ensure would replace the password hashes it puts back
// with the random passwords set here. A failed object (a service the node
// lacks) settles too: the restore reports it, it does not wait for ever.
func (bc *backupController) recreatedSettled(ctx context.Context, accountID string) (bool, error) {
	dbs, err := bc.st.GetDatabases(ctx, accountID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if dbs != nil {
		for _, d := range dbs.Databases {
			if st, _ := d.State(); st == store.DatabasePending {
				return false, nil
			}
		}
		for _, u := range dbs.Users {
			st, _ := u.State()
			if st == store.DatabasePending || (st == store.DatabaseActive && u.Status.PasswordGeneration < u.PasswordGeneration) {
				return false, nil
			}
		}
	}
	mail, err := bc.st.GetMail(ctx, accountID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if mail != nil {
		for _, m := range mail.Mailboxes {
			st, _ := m.State()
			if st == store.MailPending || ((st == store.MailActive || st == store.MailDisabled) && m.Status.PasswordGeneration < m.PasswordGeneration) {
				return false, nil
			}
		}
	}
	return true, nil
}

// kickRecreated writes the account's databases, users, mail domains and
// mailboxes again as they are, once the account is placed on its new
// node: their controllers send nothing for an account without a node, and
// the specs written at the place step landed while it had none.
func (bc *backupController) kickRecreated(ctx context.Context, accountID string) error {
	err := bc.st.ChangeDatabases(ctx, accountID, "controller", func(set *store.DatabaseSet) (*store.DatabaseChange, error) {
		ch := &store.DatabaseChange{}
		for _, d := range set.Databases {
			if !d.Deleted {
				ch.Databases = append(ch.Databases, d)
			}
		}
		for _, u := range set.Users {
			if !u.Deleted {
				ch.Users = append(ch.Users, u)
			}
		}
		return ch, nil
	}, store.AuditEvent{})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	err = bc.st.ChangeMail(ctx, accountID, func(set *store.MailSet) (*store.MailChange, error) {
		ch := &store.MailChange{}
		for _, d := range set.Domains {
			if !d.Deleted {
				ch.Domains = append(ch.Domains, d)
			}
		}
		for _, m := range set.Mailboxes {
			if !m.Deleted {
				ch.Mailboxes = append(ch.Mailboxes, m)
			}
		}
		return ch, nil
	}, store.AuditEvent{})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}
