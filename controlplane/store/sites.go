package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultDocroot is the primary site's document root, relative to the home.
const DefaultDocroot = "public_html"

// Site is one domain an account serves (an nginx server block on its node).
// The account's primary domain is always Sites[0].
type Site struct {
	Domain       string `json:"domain"`
	Docroot      string `json:"docroot"`
	PHPVersion   string `json:"phpVersion,omitempty"`
	RedirectTo   string `json:"redirectTo,omitempty"`
	RedirectCode int    `json:"redirectCode,omitempty"`
	// AliasOf makes the site a parked (alias) domain of another site of
	// the account: its name is served by that site's server block (same
	// document root, PHP and redirect); Docroot repeats the target's.
	AliasOf string `json:"aliasOf,omitempty"`
	// HTTPSRedirect answers plain HTTP with a redirect to HTTPS;
	// HSTSMaxAge > 0 sends Strict-Transport-Security over HTTPS.
	HTTPSRedirect bool `json:"httpsRedirect,omitempty"`
	HSTSMaxAge    int  `json:"hstsMaxAge,omitempty"`
	// NoAutoCertificate: the control plane does not order a certificate
	// for the site by itself (its certificate was deleted by a user).
	NoAutoCertificate bool `json:"noAutoCertificate,omitempty"`
	// Generation is the account generation that last changed this site: the
	// site is live on the node once the account's applied generation
	// reaches it.
	Generation int64 `json:"generation"`
}

// AllSites returns the account's sites, primary first. Records written
// before sites existed carry none; their primary site is implied.
func (a *Account) AllSites() []Site {
	if len(a.Sites) > 0 {
		return a.Sites
	}
	return []Site{{Domain: a.Domain, Docroot: DefaultDocroot, PHPVersion: a.PHPVersion, Generation: 1}}
}

// SiteIndex returns the index of domain in AllSites, or -1.
func (a *Account) SiteIndex(domain string) int {
	return slices.IndexFunc(a.AllSites(), func(s Site) bool { return s.Domain == domain })
}

// AliasesOf returns the domains of the account that are aliases of domain.
func (a *Account) AliasesOf(domain string) []string {
	var out []string
	for _, s := range a.AllSites() {
		if s.AliasOf == domain {
			out = append(out, s.Domain)
		}
	}
	return out
}

// SiteChange is what a ChangeSites callback did to an account's sites.
type SiteChange struct {
	// Added and Removed are domains whose cluster-wide name reservation the
	// transaction must take or release.
	Added   []string
	Removed []string
}

// ChangeSites applies fn to the account's sites and commits the result in
// one transaction with the domain reservations it needs: an added domain
// must be free cluster-wide at that moment, and neither inside nor above a
// domain another account holds (like at account creation); a removed one is
// released. Every added domain gets its own DNS zone, created with the
// records every account zone starts with (the zone controller fills them
// in, as for the primary domain's), and a removed domain's zone is marked
// for removal from its DNS servers (siteZoneOps). The account's generation
// is bumped so the controller converges the node. fn returning an error writes nothing; fn returning a change with
// nothing in it and leaving the sites alone writes nothing either.
func (s *Store) ChangeSites(ctx context.Context, id string, fn func(a *Account) (SiteChange, error), audit AuditEvent) (*Account, error) {
	for {
		a, rev, err := s.GetAccount(ctx, id)
		if err != nil {
			return nil, err
		}
		if a.Deleted {
			return nil, fmt.Errorf("account %s is being deleted: %w", a.Username, ErrConflict)
		}
		before := mustJSON(a.AllSites())
		a.Sites = slices.Clone(a.AllSites())
		ch, err := fn(a)
		if err != nil {
			return nil, err
		}
		if mustJSON(a.Sites) == before {
			return a, nil
		}
		now := time.Now().UTC()
		a.Generation++
		a.Attempts = 0
		a.UpdatedAt = now
		for i := range a.Sites {
			if a.Sites[i].Generation == 0 {
				a.Sites[i].Generation = a.Generation
			}
		}
		tcmps, tops, err := s.claimNames(ctx, id, ch.Added)
		if err != nil {
			return nil, err
		}
		zcmps, zops, err := s.siteZoneOps(ctx, a, ch, now)
		if err != nil {
			return nil, err
		}
		if err := s.mailDomainsFree(ctx, id, ch.Added); err != nil {
			return nil, err
		}
		mcmps, mops, err := s.removedMailOps(ctx, a, ch.Removed, now)
		if err != nil {
			return nil, err
		}
		cmps := append([]clientv3.Cmp{unchanged(accountKey(id), rev)}, tcmps...)
		cmps = append(cmps, mcmps...)
		ops := append(tops, mops...)
		var elseOps []clientv3.Op
		for _, d := range ch.Added {
			cmps = append(cmps, absent(domainNameKey(d)))
			ops = append(ops, clientv3.OpPut(domainNameKey(d), id))
			elseOps = append(elseOps, clientv3.OpGet(domainNameKey(d), clientv3.WithCountOnly()))
		}
		for _, d := range ch.Removed {
			ops = append(ops, clientv3.OpDelete(domainNameKey(d)), releaseName(d))
		}
		// The zones' compares come last: a refusal of the domain keys above
		// is told apart by the Else responses, in their order.
		cmps, ops = append(cmps, zcmps...), append(ops, zops...)
		ops = append(ops, clientv3.OpPut(accountKey(id), mustJSON(a)), auditPut(audit))
		resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Else(elseOps...).Commit()
		if err != nil {
			return nil, fmt.Errorf("change sites of %s: %w", a.Username, err)
		}
		if resp.Succeeded {
			return a, nil
		}
		for i, d := range ch.Added {
			if resp.Responses[i].GetResponseRange().Count > 0 {
				return nil, fmt.Errorf("domain %q is hosted already: %w", d, ErrConflict)
			}
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// MarkSiteChanged stamps the site at index i as changed by the generation
// ChangeSites is about to write; callbacks call it for every site they edit.
func MarkSiteChanged(a *Account, i int) { a.Sites[i].Generation = 0 }

// AccountIDByDomain resolves any domain an account serves to the account id.
func (s *Store) AccountIDByDomain(ctx context.Context, domain string) (string, error) {
	resp, err := s.cli.Get(ctx, domainNameKey(domain))
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", fmt.Errorf("domain %q: %w", domain, ErrNotFound)
	}
	return string(resp.Kvs[0].Value), nil
}

// siteZoneOps are the compares and writes that give each added domain its
// zone and mark each removed domain's zone deleted, for ChangeSites'
// transaction.
//
// An added domain whose zone is still being removed from its DNS servers
// (the domain was removed a moment ago, from this or another account) is
// refused with ErrConflict: reviving the record while its deleteZone task
// is under way would have the controller delete the new zone when that
// task reports back. The name tree already refused a domain whose zone
// another holder has.
func (s *Store) siteZoneOps(ctx context.Context, a *Account, ch SiteChange, now time.Time) ([]clientv3.Cmp, []clientv3.Op, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	address := ""
	if len(ch.Added) > 0 && a.Node != "" {
		n, err := s.GetNode(ctx, a.Node)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, nil, err
		}
		if n != nil {
			address = n.Address
		}
	}
	for _, d := range ch.Added {
		z, _, err := s.GetZone(ctx, d)
		switch {
		case err == nil && z.Deleted:
			return nil, nil, fmt.Errorf("the DNS zone of %s is still being removed from its servers; add it again in a moment: %w", d, ErrNotYet)
		case err == nil:
			return nil, nil, fmt.Errorf("a DNS zone %s exists already: %w", d, ErrConflict)
		case !errors.Is(err, ErrNotFound):
			return nil, nil, err
		}
		// Node "" (an account not placed yet): the zone controller takes
		// the account's node and address once it has one.
		cmp, op := zoneOps(&Zone{Name: d, Account: a.ID, Owner: a.Owner, Node: a.Node, Address: address,
			Defaults: true, Generation: 1, Status: ZonePending, CreatedAt: now, UpdatedAt: now})
		cmps, ops = append(cmps, cmp), append(ops, op)
	}
	for _, d := range ch.Removed {
		z, rev, err := s.GetZone(ctx, d)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if z.Account != a.ID || z.Deleted {
			continue
		}
		z = z.clone()
		z.Deleted = true
		z.Generation++
		z.UpdatedAt = now
		cmps = append(cmps, unchanged(zoneKey(d), rev))
		ops = append(ops, clientv3.OpPut(zoneKey(d), mustJSON(z)))
	}
	return cmps, ops, nil
}
