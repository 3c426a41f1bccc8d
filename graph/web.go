package graph

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

// domainModel shows site i of an account with the state of its server block:
// PENDING until the node applied the generation that last changed the site.
func domainModel(sites []store.Site, i int, a *model.Account) *model.Domain {
	s := sites[i]
	d := &model.Domain{Name: s.Domain, Primary: i == 0, Docroot: s.Docroot, PhpVersion: strPtr(s.PHPVersion), AliasOf: strPtr(s.AliasOf),
		HTTPSRedirect: s.HTTPSRedirect, HstsMaxAge: s.HSTSMaxAge}
	if s.RedirectTo != "" {
		d.Redirect = &model.Redirect{To: s.RedirectTo, Code: s.RedirectCode}
	}
	switch {
	case a.Status == model.AccountStatusFailed:
		d.State, d.Reason = model.VhostStateFailed, a.Reason
	case a.AppliedGeneration < s.Generation, a.Suspended != (a.Status == model.AccountStatusSuspended):
		d.State, d.Reason = model.VhostStatePending, a.Reason
	case a.Suspended:
		d.State = model.VhostStateSuspended
	case s.RedirectTo != "":
		d.State = model.VhostStateRedirect
	default:
		d.State = model.VhostStateActive
	}
	return d
}

func domainModels(a *model.Account) []*model.Domain {
	out := make([]*model.Domain, len(a.Sites))
	for i := range a.Sites {
		out[i] = domainModel(a.Sites, i, a)
	}
	return out
}

// webAccount returns an account the caller may change the sites of: admins
// any, resellers their own, users their own account (cPanel lets an account
// owner add its domains).
func (r *Resolver) webAccount(ctx context.Context, id string) (auth.Principal, *store.Account, error) {
	p, err := requireUser(ctx)
	if err != nil {
		return p, nil, err
	}
	a, err := r.visibleAccount(ctx, p, id)
	if err != nil {
		if isNotFound(err) {
			return p, nil, errorf(CodeNotFound, "account "+quote(id)+" not found")
		}
		return p, nil, err
	}
	return p, a, nil
}

// canonicalDomain validates a domain argument and returns its canonical form.
func canonicalDomain(d string) (string, error) {
	return validate.Domain(d)
}

// newSiteDomain validates a domain a new site is created for. A www. name
// is refused: every site already answers for www.DOMAIN, so a separate
// www site would claim a name another account's site serves.
func newSiteDomain(d string) (string, error) {
	c, err := validate.Domain(d)
	if err != nil {
		return "", err
	}
	if base, ok := strings.CutPrefix(c, "www."); ok && strings.Contains(base, ".") {
		return "", &validate.Error{Field: "domain", Reason: c + " is served with " + base + " (every site answers for its www. name); use " + base}
	}
	return c, nil
}

// maxAliasesPerSite bounds the alias domains of one site: each adds two
// names (DOMAIN and www.DOMAIN) to the target's server block, whose names
// the agent caps at web.MaxAliases (32) beside the target's own.
const maxAliasesPerSite = 15

// aliasTarget validates the aliasOf argument.
func aliasTarget(d string) (string, error) {
	c, err := validate.Domain(d)
	if ve := (*validate.Error)(nil); errors.As(err, &ve) {
		return "", &validate.Error{Field: "aliasOf", Reason: ve.Reason}
	}
	return c, err
}

// notAlias refuses a per-site setting on an alias domain, which serves
// its target's site as it is.
func notAlias(s store.Site) error {
	if s.AliasOf == "" {
		return nil
	}
	return &validate.Error{Field: "domain", Reason: s.Domain + " is an alias of " + s.AliasOf + " and serves its site; change " + s.AliasOf}
}

// Reading a domain's log.
const (
	// maxLogLines is the most lines domainLogs returns (the agent's
	// bound too).
	maxLogLines = 1000
	// domainLogWait bounds the wait for the node; domainLogTTL is the
	// query task's lease, after which a node that never took it drops it.
	domainLogWait = 15 * time.Second
	domainLogTTL  = time.Minute
)

// domainLogArgs validates domainLogs' arguments: the canonical domain, the
// number of lines (default 100, 1..maxLogLines) and the agent's log kind.
func domainLogArgs(domain string, kind model.LogKind, lines *int) (string, int, agentpb.DomainLogKind, error) {
	d, err := canonicalDomain(domain)
	if err != nil {
		return "", 0, 0, err
	}
	n := 100
	if lines != nil {
		n = *lines
	}
	if n < 1 || n > maxLogLines {
		return "", 0, 0, &validate.Error{Field: "lines", Reason: fmt.Sprintf("%d: give 1 to %d", n, maxLogLines)}
	}
	switch kind {
	case model.LogKindAccess:
		return d, n, agentpb.DomainLogKind_DOMAIN_LOG_KIND_ACCESS, nil
	case model.LogKindError:
		return d, n, agentpb.DomainLogKind_DOMAIN_LOG_KIND_ERROR, nil
	}
	return "", 0, 0, &validate.Error{Field: "kind", Reason: "want ACCESS or ERROR"}
}

// siteOf finds the account serving domain and the site, for a caller who
// may see the account; any other caller is told, as for a domain nobody
// serves, NOT_FOUND (and the refusal is recorded under action).
func (r *Resolver) siteOf(ctx context.Context, p auth.Principal, action, d string) (*store.Account, store.Site, error) {
	notFound := errorf(CodeNotFound, "no account serves "+quote(d))
	id, err := r.Store.AccountIDByDomain(ctx, d)
	if isNotFound(err) {
		return nil, store.Site{}, notFound
	}
	if err != nil {
		return nil, store.Site{}, err
	}
	a, _, err := r.Store.GetAccount(ctx, id)
	if isNotFound(err) {
		return nil, store.Site{}, notFound
	}
	if err != nil {
		return nil, store.Site{}, err
	}
	if !canSee(p, a) {
		r.refusedRead(ctx, action, d, CodeNotFound)
		return nil, store.Site{}, notFound
	}
	i := a.SiteIndex(d)
	if i < 0 {
		return nil, store.Site{}, notFound
	}
	return a, a.AllSites()[i], nil
}

// changeSites runs a site change for the caller and returns the account as
// written, for the resolver to pick the domain to show.
func (r *Resolver) changeSites(ctx context.Context, action, id, domain string, fn func(a *store.Account) (store.SiteChange, error)) (*store.Account, error) {
	p, a, err := r.webAccount(ctx, id)
	if err != nil {
		return nil, err
	}
	ev := store.NewAuditEvent(p.Name, source(ctx), action, a.Username, "ok")
	ev.Detail = map[string]string{"id": a.ID, "domain": domain}
	return r.Store.ChangeSites(ctx, a.ID, fn, ev)
}

// checkPHP refuses a PHP version the account's plan does not allow, or that
// the account's node does not run (as far as the node has reported).
func (r *Resolver) checkPHP(ctx context.Context, a *store.Account, version string) error {
	if err := validate.PHPVersion(version); err != nil {
		return &validate.Error{Field: "version", Reason: err.(*validate.Error).Reason}
	}
	plan, err := r.Store.GetPlan(ctx, a.Plan)
	if err != nil {
		return err
	}
	if !slices.Contains(plan.PHPVersions, version) {
		return &validate.Error{Field: "version", Reason: "plan " + quote(plan.Name) + " allows PHP " + listOrNone(plan.PHPVersions)}
	}
	if a.Node == "" {
		return nil
	}
	installed, err := r.nodePHP(ctx, a.Node)
	if err != nil {
		return err
	}
	if len(installed) > 0 && !slices.Contains(installed, version) {
		return &validate.Error{Field: "version", Reason: "node " + a.Node + " runs PHP " + listOrNone(installed)}
	}
	return nil
}

// nodePHP lists the PHP versions whose PHP-FPM a node's agent reported.
func (r *Resolver) nodePHP(ctx context.Context, node string) ([]string, error) {
	rep, err := r.Store.GetServices(ctx, node)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range rep.Services {
		if v, ok := strings.CutPrefix(s.Name, "php-fpm"); ok && v != "" {
			out = append(out, v)
		}
	}
	return out, nil
}

func listOrNone(vs []string) string {
	if len(vs) == 0 {
		return "none"
	}
	return strings.Join(vs, ", ")
}

func serviceModel(s store.ServiceStatus) *model.Service {
	st := model.ServiceStateStopped
	switch s.State {
	case "running":
		st = model.ServiceStateRunning
	case "failed":
		st = model.ServiceStateFailed
	}
	listen := s.Listen
	if listen == nil {
		listen = []string{}
	}
	return &model.Service{Name: s.Name, State: st, Version: strPtr(s.Version), Listen: listen,
		Since: timePtr(s.Since), Error: strPtr(s.Error), Restarts: s.Restarts}
}
