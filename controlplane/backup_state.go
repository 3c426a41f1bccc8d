package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/npanel/npanel/controlplane/store"
)

// The account's desired state as a backup records it (BackupAccountAction.
// state_json): what the control plane holds, never a secret. The node adds
// the password hashes of mailboxes and database users beside it; a restore
// onto a fresh node recreates the account from it through the store, as
// the API would. Versioned: a restore reads every version it knows.
const backupStateVersion = 1

// BackupState is the versioned document.
type BackupState struct {
	Version      int                    `json:"version"`
	Account      BackupStateAccount     `json:"account"`
	Zones        []BackupStateZone      `json:"zones,omitempty"`
	Databases    []BackupStateDatabase  `json:"databases,omitempty"`
	DBUsers      []BackupStateDBUser    `json:"databaseUsers,omitempty"`
	MailDomains  []BackupStateMailDom   `json:"mailDomains,omitempty"`
	Mailboxes    []BackupStateMailbox   `json:"mailboxes,omitempty"`
	Certificates []BackupStateCertChain `json:"certificates,omitempty"`
}

// BackupStateAccount is the account and its sites with their settings.
type BackupStateAccount struct {
	ID         string       `json:"id"`
	Username   string       `json:"username"`
	Domain     string       `json:"domain"`
	Plan       string       `json:"plan"`
	Owner      string       `json:"owner"`
	PHPVersion string       `json:"phpVersion,omitempty"`
	DiskMB     int64        `json:"diskMB,omitempty"`
	Suspended  bool         `json:"suspended,omitempty"`
	Roles      []string     `json:"roles,omitempty"`
	Selector   string       `json:"selector,omitempty"`
	Sites      []store.Site `json:"sites"`
}

// BackupStateZone is one zone with every record.
type BackupStateZone struct {
	Name string `json:"name"`
	// Address is where the account was served when backed up: records
	// pointing at it follow the account to a new node.
	Address string             `json:"address,omitempty"`
	DNSSEC  bool               `json:"dnssec,omitempty"`
	Records []store.ZoneRecord `json:"records"`
	// RecordsInFile: the records are in the zone's file only (with their
	// ids), not here.
	RecordsInFile bool `json:"recordsInFile,omitempty"`
}

// BackupStateDatabase is one database.
type BackupStateDatabase struct {
	Name   string `json:"name"`
	Engine string `json:"engine"`
}

// BackupStateDBUser is one database user without its password.
type BackupStateDBUser struct {
	Name   string                `json:"name"`
	Engine string                `json:"engine"`
	Hosts  []string              `json:"hosts,omitempty"`
	Grants []store.DatabaseGrant `json:"grants,omitempty"`
}

// BackupStateMailDom is a mail domain: forwarders (aliases) and catch-all.
type BackupStateMailDom struct {
	Domain   string              `json:"domain"`
	Aliases  map[string][]string `json:"aliases,omitempty"`
	CatchAll string              `json:"catchAll,omitempty"`
	Spam     store.MailSpam      `json:"spam"`
	Webmail  bool                `json:"webmail,omitempty"`
}

// BackupStateMailbox is one mailbox without its password.
type BackupStateMailbox struct {
	Address       string                   `json:"address"`
	QuotaMB       int                      `json:"quotaMB"`
	Disabled      bool                     `json:"disabled,omitempty"`
	Autoresponder *store.MailAutoresponder `json:"autoresponder,omitempty"`
}

// BackupStateCertChain is a certificate's public chain (never its key).
type BackupStateCertChain struct {
	ID       string   `json:"id"`
	Domains  []string `json:"domains"`
	Custom   bool     `json:"custom,omitempty"`
	ChainPEM string   `json:"chainPem,omitempty"`
	Serial   string   `json:"serial,omitempty"`
	// Served: the node served ChainPEM when the backup was made (an
	// installed one's key is then in the backup); Mail: on the site's
	// mail hosts too.
	Served bool `json:"served,omitempty"`
	Mail   bool `json:"mail,omitempty"`
	// How an ordered certificate was asked for, so that a restore orders
	// the same again. Zero values are what backups made before these
	// fields meant: the site's automatic certificate over HTTP-01,
	// renewed automatically.
	Challenge   store.CertChallenge `json:"challenge,omitempty"`
	Requested   bool                `json:"requested,omitempty"`   // a user's request (names of their own), not the automatic one
	NoAutoRenew bool                `json:"noAutoRenew,omitempty"` // setAutoRenew off
}

// decodeBackupState parses a state document of a version this server
// knows.
func decodeBackupState(b []byte) (*BackupState, error) {
	var st BackupState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("backup state: %w", err)
	}
	if st.Version < 1 || st.Version > backupStateVersion {
		return nil, fmt.Errorf("backup state: version %d is not known to this server", st.Version)
	}
	return &st, nil
}

// accountState reads account a's desired state from the store.
func accountState(ctx context.Context, st *store.Store, a *store.Account) (*BackupState, error) {
	out := &BackupState{Version: backupStateVersion, Account: BackupStateAccount{
		ID: a.ID, Username: a.Username, Domain: a.Domain, Plan: a.Plan, Owner: a.Owner,
		PHPVersion: a.PHPVersion, DiskMB: a.DiskMB, Suspended: a.Suspended, Roles: slices.Clone(a.Roles), Selector: a.Selector,
		Sites: slices.Clone(a.AllSites()),
	}}
	for _, s := range out.Account.Sites {
		z, _, err := st.GetZone(ctx, s.Domain)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if z.Account != a.ID || z.Deleted {
			continue
		}
		out.Zones = append(out.Zones, BackupStateZone{Name: z.Name, Address: z.Address, DNSSEC: z.DNSSEC, Records: slices.Clone(z.Records)})
	}
	dbs, err := st.GetDatabases(ctx, a.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if dbs != nil {
		for _, d := range dbs.Databases {
			if !d.Deleted {
				out.Databases = append(out.Databases, BackupStateDatabase{Name: d.Name, Engine: d.Engine})
			}
		}
		for _, u := range dbs.Users {
			if !u.Deleted {
				out.DBUsers = append(out.DBUsers, BackupStateDBUser{Name: u.Name, Engine: u.Engine, Hosts: slices.Clone(u.Hosts), Grants: slices.Clone(u.Grants)})
			}
		}
	}
	mail, err := st.GetMail(ctx, a.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	if mail != nil {
		for _, d := range mail.Domains {
			if !d.Deleted {
				out.MailDomains = append(out.MailDomains, BackupStateMailDom{Domain: d.Domain, Aliases: d.Aliases, CatchAll: d.CatchAll, Spam: d.Spam, Webmail: d.Webmail})
			}
		}
		for _, m := range mail.Mailboxes {
			if !m.Deleted {
				out.Mailboxes = append(out.Mailboxes, BackupStateMailbox{Address: m.Address, QuotaMB: m.QuotaMB, Disabled: m.Disabled, Autoresponder: m.Autoresponder})
			}
		}
	}
	for _, s := range out.Account.Sites {
		c, err := st.GetCertificate(ctx, s.Domain)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if c.Account != a.ID || c.Deleting {
			continue
		}
		chain := c.Status.ChainPEM
		if c.Custom && chain == "" {
			chain = c.CustomChainPEM
		}
		out.Certificates = append(out.Certificates, BackupStateCertChain{ID: c.ID, Domains: slices.Clone(c.Domains), Custom: c.Custom, ChainPEM: chain,
			Serial: c.Status.Serial, Challenge: c.Challenge, Requested: !c.Auto && !c.Custom, NoAutoRenew: !c.AutoRenew && !c.Custom,
			Served: c.Status.ChainPEM != "" && c.Node == a.Node, Mail: c.Mail})
	}
	out.sort()
	return out, nil
}

// sort orders every list, so that one state always encodes the same.
func (s *BackupState) sort() {
	sort.Slice(s.Zones, func(i, j int) bool { return s.Zones[i].Name < s.Zones[j].Name })
	sort.Slice(s.Databases, func(i, j int) bool { return s.Databases[i].Name < s.Databases[j].Name })
	sort.Slice(s.DBUsers, func(i, j int) bool { return s.DBUsers[i].Name < s.DBUsers[j].Name })
	sort.Slice(s.MailDomains, func(i, j int) bool { return s.MailDomains[i].Domain < s.MailDomains[j].Domain })
	sort.Slice(s.Mailboxes, func(i, j int) bool { return s.Mailboxes[i].Address < s.Mailboxes[j].Address })
	sort.Slice(s.Certificates, func(i, j int) bool { return s.Certificates[i].ID < s.Certificates[j].ID })
}
