package graph

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"golang.org/x/time/rate"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/model"
	"github.com/npanel/npanel/pki"
	"github.com/npanel/npanel/protos/agentpb"
	"github.com/npanel/npanel/validate"
)

const (
	// maxCertNames bounds the names of one certificate (Let's Encrypt
	// allows 100; a site needs a handful).
	maxCertNames = 50
	// maxCertificatePage bounds a certificates page.
	maxCertificatePage = 1000
	// MaxHSTSMaxAge is the longest Strict-Transport-Security max-age
	// setHSTS takes: two years, what the HSTS preload list asks for.
	MaxHSTSMaxAge = 2 * 365 * 24 * 3600
	// maxExpiringDays bounds the expiringWithinDays filter.
	maxExpiringDays = 3650
)

// maxCertPEMBytes bounds installCertificate's PEM input (the check is
// validate's).
const maxCertPEMBytes = validate.MaxCertPEMBytes

// Each order costs the ACME CA's rate limits (Let's Encrypt: 5 failed
// validations per hostname an hour, 300 new orders per account in 3
// hours), which every site of the cluster shares: a tenant looping on
// requestCertificate or renewCertificate would exhaust them for all. A
// user may order a few certificates at once and then one every
// certOrderEvery; a certificate may be ordered again once every
// certOrderEvery too.
const (
	certOrderEvery        = 20 * time.Second
	certOrderBurst        = 5
	certOrderBurstPerCert = 2
	// certOrderKeys bounds the limiter map; past it the map starts over,
	// which at worst grants a burst early.
	certOrderKeys = 10000
)

// The gates above are in memory and short-term; the CA's tightest limit is
// not: Let's Encrypt issues at most 5 certificates for an identical set of
// names a week, and a renewal is such a duplicate. So, per certificate and
// counted in its record (Certificate.OrderRequests, which survives a
// restart or another API server): a user may order it at most
// certOrdersPerWeek times in certOrderWindow, leaving the controller's
// own renewals room under the CA's 5, and may not renew one served for
// less than certMinRenewAge. Admins are exempt (their orders are counted).
const (
	certOrdersPerWeek = 3
	certOrderWindow   = 7 * 24 * time.Hour
	certMinRenewAge   = 24 * time.Hour
	// maxOrderRequests bounds Certificate.OrderRequests.
	maxOrderRequests = 20
)

// tlsHooks holds what tests replace: the roots installed chains verify
// to, and the order rate.
var tlsHooks = struct {
	sync.Mutex
	roots     func() (*x509.CertPool, error)
	every     time.Duration
	burst     int
	burstCert int
	perWeek   int
	// recheck is how often a certificateEvents subscription checks its
	// session and that its caller may still see the certificate.
	recheck time.Duration
}{roots: validate.CertificateRoots, every: certOrderEvery, burst: certOrderBurst, burstCert: certOrderBurstPerCert,
	perWeek: certOrdersPerWeek, recheck: SessionRecheck}

// countCertOrder records an order of certificate c by p at now, refusing
// it (RATE_LIMITED) for a caller other than an admin when c was ordered
// the weekly number of times already or, for a renewal, when the
// certificate it serves was issued less than certMinRenewAge ago. It runs
// inside the record's compare-and-swap, so concurrent orders are counted
// each.
func countCertOrder(p auth.Principal, c *store.Certificate, now time.Time, renew bool) error {
	tlsHooks.Lock()
	perWeek := tlsHooks.perWeek
	tlsHooks.Unlock()
	recent := slices.DeleteFunc(slices.Clone(c.OrderRequests), func(t time.Time) bool { return !t.After(now.Add(-certOrderWindow)) })
	if p.Role != store.RoleAdmin {
		if nb := c.Status.NotBefore; renew && !nb.IsZero() && now.Sub(nb) < certMinRenewAge {
			return errorf(CodeRateLimited, "certificate "+c.ID+" was issued at "+nb.UTC().Format(time.RFC3339)+
				", less than 24 hours ago; it can be renewed from "+nb.Add(certMinRenewAge).UTC().Format(time.RFC3339)+
				" (the CA issues only a few identical certificates a week, and renewals are automatic)")
		}
		if len(recent) >= perWeek {
			return errorf(CodeRateLimited, "certificate "+c.ID+" was ordered "+strconv.Itoa(len(recent))+" times in the last 7 days, the most a user may"+
				" (the CA issues only 5 identical certificates a week); the next order is possible from "+
				recent[len(recent)-max(perWeek, 1)].Add(certOrderWindow).UTC().Format(time.RFC3339))
		}
	}
	// An admin's orders are bounded by the short-term gates only; the
	// record keeps what the weekly count needs.
	c.OrderRequests = append(recent, now.UTC())
	if n := len(c.OrderRequests) - maxOrderRequests; n > 0 {
		c.OrderRequests = slices.Delete(c.OrderRequests, 0, n)
	}
	return nil
}

// certRoots returns the roots an installed certificate's chain must
// verify to: validate.CertificateRoots (the system's), unless a test of
// this package replaced them.
func certRoots() (*x509.CertPool, error) {
	tlsHooks.Lock()
	f := tlsHooks.roots
	tlsHooks.Unlock()
	return f()
}

// certOrderGate rate-limits certificate orders per user and per
// certificate.
type certOrderGate struct {
	mu    sync.Mutex
	users map[string]*rate.Limiter
	certs map[string]*rate.Limiter
}

func (g *certOrderGate) allow(user, cert string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.users == nil || len(g.users)+len(g.certs) > certOrderKeys {
		g.users, g.certs = map[string]*rate.Limiter{}, map[string]*rate.Limiter{}
	}
	tlsHooks.Lock()
	every, burst, burstCert := tlsHooks.every, tlsHooks.burst, tlsHooks.burstCert
	tlsHooks.Unlock()
	u := g.users[user]
	if u == nil {
		u = rate.NewLimiter(rate.Every(every), burst)
		g.users[user] = u
	}
	c := g.certs[cert]
	if c == nil {
		c = rate.NewLimiter(rate.Every(every), burstCert)
		g.certs[cert] = c
	}
	// Reservations, so that an order one gate refuses costs the other
	// nothing: a user retrying at the user gate would use up the
	// certificate's own burst.
	now := time.Now()
	rc := c.ReserveN(now, 1)
	if !rc.OK() || rc.DelayFrom(now) > 0 {
		rc.CancelAt(now)
		return errorf(CodeRateLimited, "certificate "+cert+" was ordered moments ago; try again in "+every.String())
	}
	ru := u.ReserveN(now, 1)
	if !ru.OK() || ru.DelayFrom(now) > 0 {
		ru.CancelAt(now)
		rc.CancelAt(now)
		return errorf(CodeRateLimited, "too many certificate orders; at most one every "+every.String()+" after a burst of "+strconv.Itoa(burst))
	}
	return nil
}

// certOrderGates holds each Resolver's gate (the Resolver struct is
// regenerated around, so the gate lives beside it, as mail's do).
var certOrderGates sync.Map // *Resolver -> *certOrderGate

func (r *Resolver) allowCertOrder(user, cert string) error {
	g, _ := certOrderGates.LoadOrStore(r, &certOrderGate{})
	return g.(*certOrderGate).allow(user, cert)
}

// certSubscriptions counts each user's live certificateEvents
// subscriptions: each holds an etcd watch of its own.
var certSubscriptions = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

func holdCertSubscription(user string) (release func(), err error) {
	certSubscriptions.Lock()
	defer certSubscriptions.Unlock()
	if certSubscriptions.n[user] >= MaxSubscriptionsPerUser {
		return nil, errorf(codeQuotaExceeded, "too many live certificate subscriptions: at most "+strconv.Itoa(MaxSubscriptionsPerUser)+" per user; close some first")
	}
	certSubscriptions.n[user]++
	return func() {
		certSubscriptions.Lock()
		defer certSubscriptions.Unlock()
		if certSubscriptions.n[user]--; certSubscriptions.n[user] <= 0 {
			delete(certSubscriptions.n, user)
		}
	}, nil
}

// revocationCodes maps the API's reasons to RFC 5280 CRLReason codes.
var revocationCodes = map[model.RevocationReason]int{
	model.RevocationReasonUnspecified:          0,
	model.RevocationReasonKeyCompromise:        1,
	model.RevocationReasonAffiliationChanged:   3,
	model.RevocationReasonSuperseded:           4,
	model.RevocationReasonCessationOfOperation: 5,
}

func certModel(c *store.Certificate) *model.Certificate {
	st := c.Status
	state := model.CertificateStatus(st.State)
	if !state.IsValid() {
		state = model.CertificateStatusPending
	}
	ch := model.ChallengeType(c.Challenge)
	if !ch.IsValid() {
		ch = model.ChallengeTypeHTTP01
	}
	m := &model.Certificate{
		ID: c.ID, Domains: nonNil(c.Domains), Status: state, Issuer: strPtr(st.Issuer), Serial: strPtr(st.Serial),
		NotBefore: timePtr(st.NotBefore), NotAfter: timePtr(st.NotAfter), AutoRenew: c.AutoRenew,
		LastError: strPtr(st.LastError), Events: certEventModels(st.Events), Account: c.Account, Node: strPtr(c.Node),
		Challenge: ch, Custom: c.Custom, Auto: c.Auto, Deleting: c.Deleting, ChainPem: strPtr(st.ChainPEM),
		IssuedDomains: nonNil(st.IssuedDomains), RenewAt: timePtr(st.RenewAt), Failures: st.Failures,
		Generation: c.Generation, ObservedGeneration: st.ObservedGeneration, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}
	return m
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func certEventModels(evs []store.CertEvent) []*model.CertificateEvent {
	out := make([]*model.CertificateEvent, len(evs))
	for i, e := range evs {
		out[i] = certEventModel(e)
	}
	return out
}

func certEventModel(e store.CertEvent) *model.CertificateEvent {
	return &model.CertificateEvent{At: e.At, Kind: e.Kind, Message: strPtr(e.Message)}
}

// certOf finds a certificate and its account for a caller who may see the
// account; for any other caller it is NOT_FOUND, as one that does not
// exist (the refusal recorded under action).
func (r *Resolver) certOf(ctx context.Context, action, id string) (auth.Principal, *store.Account, *store.Certificate, error) {
	p, err := requireUser(ctx)
	if err != nil {
		return p, nil, nil, err
	}
	d, err := canonicalDomain(id)
	if err != nil {
		return p, nil, nil, err
	}
	notFound := errorf(CodeNotFound, "certificate "+quote(d)+" not found")
	c, err := r.Store.GetCertificate(ctx, d)
	if isNotFound(err) {
		return p, nil, nil, notFound
	}
	if err != nil {
		return p, nil, nil, err
	}
	a, _, err := r.Store.GetAccount(ctx, c.Account)
	if isNotFound(err) {
		return p, nil, nil, notFound
	}
	if err != nil {
		return p, nil, nil, err
	}
	if !canSee(p, a) {
		r.refusedRead(ctx, action, d, CodeNotFound)
		return p, nil, nil, notFound
	}
	return p, a, c, nil
}

// accountLive refuses a certificate change for an account being deleted.
func accountLive(a *store.Account) error {
	if a.Deleted {
		return fmt.Errorf("account %s is being deleted: %w", a.Username, store.ErrConflict)
	}
	return nil
}

// certAudit is the audit event of a certificate mutation.
func certAudit(ctx context.Context, p auth.Principal, a *store.Account, action, id string, detail map[string]string) store.AuditEvent {
	ev := store.NewAuditEvent(p.Name, source(ctx), action, a.Username+"/"+id, "ok")
	ev.Detail = map[string]string{"id": a.ID, "certificate": id}
	for k, v := range detail {
		ev.Detail[k] = v
	}
	return ev
}

// changeCert applies fn to certificate id of account a under
// compare-and-swap, refusing a certificate that is being deleted or that
// belongs to another account by now.
func (r *Resolver) changeCert(ctx context.Context, a *store.Account, id string, audit store.AuditEvent, fn func(c *store.Certificate) error) (*store.Certificate, error) {
	return r.Store.UpdateCertificate(ctx, id, func(c *store.Certificate) ([]*store.CertTask, error) {
		if c.Account != a.ID {
			return nil, fmt.Errorf("certificate %s belongs to another account now: %w", id, store.ErrConflict)
		}
		if c.Deleting {
			return nil, fmt.Errorf("certificate %s is being deleted: %w", id, store.ErrConflict)
		}
		return nil, fn(c)
	}, audit)
}

// putCert creates certificate id for site of account a with fn applied
// to a new record, or applies fn to the site's existing one (bumping its
// generation): the certificate of a site is one record whichever way it
// was made. A certificate created meanwhile (the controller's automatic
// one) is updated instead.
func (r *Resolver) putCert(ctx context.Context, a *store.Account, id string, audit store.AuditEvent, fn func(c *store.Certificate) error) (*store.Certificate, error) {
	for {
		if _, err := r.Store.GetCertificate(ctx, id); err == nil {
			return r.changeCert(ctx, a, id, audit, func(c *store.Certificate) error {
				if err := fn(c); err != nil {
					return err
				}
				c.Generation++
				return nil
			})
		} else if !isNotFound(err) {
			return nil, err
		}
		c := &store.Certificate{ID: id, Account: a.ID, Node: a.Node, Generation: 1}
		c.Status.State = store.CertPending
		if err := fn(c); err != nil {
			return nil, err
		}
		err := r.Store.CreateCertificate(ctx, c, audit)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return c, err
	}
}

// setNoAutoCertificate sets or clears the site's NoAutoCertificate,
// which stops the controller ordering a certificate for it by itself.
// A site the account no longer has is left alone.
func (r *Resolver) setNoAutoCertificate(ctx context.Context, p auth.Principal, a *store.Account, action, domain string, on bool) error {
	ev := store.NewAuditEvent(p.Name, source(ctx), action, a.Username, "ok")
	ev.Detail = map[string]string{"id": a.ID, "domain": domain, "noAutoCertificate": strconv.FormatBool(on)}
	_, err := r.Store.ChangeSites(ctx, a.ID, func(a *store.Account) (store.SiteChange, error) {
		if i := a.SiteIndex(domain); i >= 0 {
			a.Sites[i].NoAutoCertificate = on
		}
		return store.SiteChange{}, nil
	}, ev)
	return err
}

// certNames validates the names of a certificate for site of account a:
// the site first, then sans, each the site or a name within one of the
// account's domains that no other account serves, and each in one of the
// account's zones (DNS01 writes the challenge record there; HTTP01 waits
// for the name to resolve to the node on our nameservers). A wildcard
// (*.NAME) needs DNS01.
func (r *Resolver) certNames(ctx context.Context, a *store.Account, site string, sans []string, challenge store.CertChallenge) ([]string, error) {
	names := []string{site}
	for _, s := range sans {
		n, err := certName(s)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) > maxCertNames {
		return nil, &validate.Error{Field: "sans", Reason: fmt.Sprintf("%d names: at most %d", len(names), maxCertNames)}
	}
	domains := make([]string, 0, len(a.AllSites()))
	for _, s := range a.AllSites() {
		domains = append(domains, s.Domain)
	}
	for _, n := range names {
		base, wildcard := strings.CutPrefix(n, "*.")
		if !withinAny(base, domains) {
			return nil, &validate.Error{Field: "sans", Reason: n + " is not within the domains of account " + a.Username + " (" + strings.Join(domains, ", ") + ")"}
		}
		// A subdomain may be another account's site (an add-on domain),
		// or a name within one: its certificate is that account's to order.
		if owner, err := r.nearestSiteOwner(ctx, base); err != nil {
			return nil, err
		} else if owner != a.ID {
			return nil, &validate.Error{Field: "sans", Reason: n + " is served by another account"}
		}
		if wildcard && challenge != store.ChallengeDNS01 {
			return nil, &validate.Error{Field: "challenge", Reason: "the wildcard " + n + " needs the DNS01 challenge"}
		}
		z, err := r.zoneOfDomain(ctx, base)
		if err != nil {
			return nil, err
		}
		ours := z != nil && z.Account == a.ID && !z.Deleted
		switch {
		case challenge == store.ChallengeDNS01 && !ours:
			return nil, &validate.Error{Field: "challenge", Reason: "DNS01 needs a DNS zone of account " + a.Username + " served here holding " + base + "; none does"}
		case !ours:
			// The controller orders an HTTP-01 certificate once every
			// name resolves to the node on our nameservers; a name in
			// nobody's zone here never does, and the order would wait
			// for ever.
			field := "sans"
			if n == site {
				field = "domain"
			}
			return nil, &validate.Error{Field: field, Reason: n + " is not served by our nameservers; HTTP-01 certificates are ordered only for names in the account's zones"}
		}
	}
	return names, nil
}

// nearestSiteOwner returns the account whose site is name or the nearest
// parent of name that is a site ("" when none is).
func (r *Resolver) nearestSiteOwner(ctx context.Context, name string) (string, error) {
	for ; strings.Contains(name, "."); _, name, _ = strings.Cut(name, ".") {
		owner, err := r.Store.AccountIDByDomain(ctx, name)
		if err == nil {
			return owner, nil
		}
		if !isNotFound(err) {
			return "", err
		}
	}
	return "", nil
}

// certName validates one name of a certificate: a domain, or *.domain.
func certName(s string) (string, error) {
	base, wildcard := strings.CutPrefix(strings.TrimSpace(s), "*.")
	d, err := validate.Domain(base)
	if err != nil {
		var ve *validate.Error
		if errors.As(err, &ve) {
			return "", &validate.Error{Field: "sans", Reason: ve.Reason}
		}
		return "", err
	}
	if strings.Contains(d, "*") {
		return "", &validate.Error{Field: "sans", Reason: "a wildcard is only allowed as the first label (*.DOMAIN)"}
	}
	if wildcard {
		return "*." + d, nil
	}
	return d, nil
}

// withinAny reports whether name is one of domains or a subdomain of one.
func withinAny(name string, domains []string) bool {
	for _, d := range domains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return true
		}
	}
	return false
}

func challengeOf(c *model.ChallengeType) (store.CertChallenge, error) {
	if c == nil {
		return store.ChallengeHTTP01, nil
	}
	switch *c {
	case model.ChallengeTypeHTTP01:
		return store.ChallengeHTTP01, nil
	case model.ChallengeTypeDNS01:
		return store.ChallengeDNS01, nil
	}
	return "", &validate.Error{Field: "challenge", Reason: "want HTTP01 or DNS01"}
}

// sealCertificateKey seals an installed certificate's PKCS#8 key to the
// account's node: it is stored and sent only sealed.
func (r *Resolver) sealCertificateKey(ctx context.Context, a *store.Account, id string, pkcs8 []byte) ([]byte, error) {
	if a.Node == "" {
		return nil, fmt.Errorf("account %s is not placed on a node yet, so its key cannot be sealed to one: %w", a.Username, store.ErrNotYet)
	}
	st, _, err := r.Store.GetNodeState(ctx, a.Node)
	if err != nil && !isNotFound(err) {
		return nil, err
	}
	if st == nil || len(st.PublicKey) == 0 {
		return nil, fmt.Errorf("node %s has not connected yet, so a key cannot be sealed to it; try again when it is READY: %w", a.Node, store.ErrNotYet)
	}
	return pki.SealDER(st.PublicKey, pkcs8, agentpb.CertificateKeySealContext(id))
}

// putInstalledCert writes the record of a certificate installed on site d
// of account a (installCertificate, and a cPanel import's certificates):
// the chain checked, its key sealed to a's node, served as the site's own
// certificate, not renewed: the user installs its successor. An imported
// one differs in three ways, as nobody may be there to look after it:
// ACME takes over its renewal (AutoRenew on: at its renewal time the
// certificate controller makes it the site's automatic certificate and
// orders it); it is served for mail.DOMAIN only if it covers that name
// (the node refuses a mail certificate that does not); and a record
// holding this chain already is left as it is, so that an import step
// repeated after a crash installs nothing twice.
func (r *Resolver) putInstalledCert(ctx context.Context, p auth.Principal, a *store.Account, d string, inst *validate.CertificateChain, sealed []byte, untrusted, imported bool) (*store.Certificate, error) {
	names := slices.Clone(inst.Leaf.DNSNames)
	if !slices.Contains(names, d) {
		names = append([]string{d}, names...)
	}
	ev := certAudit(ctx, p, a, "installCertificate", d, map[string]string{"serial": inst.Leaf.SerialNumber.Text(16),
		"issuer": inst.Leaf.Issuer.String(), "trusted": strconv.FormatBool(inst.Trusted)})
	return r.putCert(ctx, a, d, ev, func(c *store.Certificate) error {
		if imported && c.Custom && c.CustomChainPEM == inst.ChainPEM && c.Node == a.Node && !c.Revoke && c.AutoRenew {
			return store.ErrUnchanged
		}
		c.Domains, c.Node = names, a.Node
		c.Auto, c.AutoRenew = false, imported
		c.Custom, c.CustomChainPEM, c.SealedKey, c.AllowUntrusted = true, inst.ChainPEM, sealed, untrusted
		c.Revoke, c.RevokeReason = false, 0
		if imported && c.Mail && inst.Leaf.VerifyHostname("mail."+d) != nil {
			c.Mail = false
		}
		if c.Challenge == "" {
			c.Challenge = store.ChallengeHTTP01
		}
		c.AddEvent(time.Now(), "install-requested", "by "+p.Name+": serial "+inst.Leaf.SerialNumber.Text(16)+" issued by "+inst.Leaf.Issuer.String())
		return nil
	})
}

// CheckInstalledCertificate validates a certificate bought elsewhere with
// its key (validate.CheckInstalledCertificate: the check is shared with the
// node, which validates the certificates of cPanel archives).
func CheckInstalledCertificate(domain, certPEM, keyPEM, chainPEM string, allowUntrusted bool, roots *x509.CertPool, now time.Time) (*validate.InstalledCertificate, error) {
	return validate.CheckInstalledCertificate(domain, certPEM, keyPEM, chainPEM, allowUntrusted, roots, now)
}

// followCertificate streams certificate id's events: those recorded so
// far, then each new one as the record is written. Events are told apart
// by time and kind (a record keeps its newest maxCertEvents), so none is
// sent twice. It ends when the record is deleted, or the watch is lost
// (the client subscribes again), or, checked at each change and every
// SessionRecheck, when the session ended or the caller may no longer see
// the certificate's account.
func (r *Resolver) followCertificate(ctx context.Context, p auth.Principal, c *store.Certificate, rev int64) (<-chan *model.CertificateEvent, error) {
	release, err := holdCertSubscription(p.Name)
	if err != nil {
		return nil, err
	}
	ch := make(chan *model.CertificateEvent, 16)
	go func() {
		defer close(ch)
		defer release()
		var last store.CertEvent
		send := func(evs []store.CertEvent) bool {
			for _, e := range evs {
				last = e
				select {
				case ch <- certEventModel(e):
				case <-ctx.Done():
					return false
				}
			}
			return true
		}
		if !send(c.Status.Events) {
			return
		}
		// account is the certificate's account as last seen: an account
		// handed to another reseller, or a site moved to another
		// account, ends the stream for a caller who may no longer see
		// it, as certOf would refuse it now.
		account := c.Account
		stillVisible := func() bool {
			a, _, err := r.Store.GetAccount(ctx, account)
			if err != nil && !isNotFound(err) {
				if ctx.Err() == nil {
					r.Log.Error("recheck certificate subscription", "certificate", c.ID, "account", account, "err", err)
				}
				return true // a transient read error is not a refusal; the next recheck decides
			}
			if err == nil && canSee(p, a) {
				return true
			}
			r.refusedRead(ctx, "certificateEvents", c.ID, CodeNotFound)
			transport.AddSubscriptionError(ctx, &gqlerror.Error{
				Message:    "certificate " + quote(c.ID) + " not found: its account is no longer one you may see",
				Extensions: map[string]any{"code": CodeNotFound},
			})
			return false
		}
		tlsHooks.Lock()
		every := tlsHooks.recheck
		tlsHooks.Unlock()
		watch := r.Store.WatchCertificate(ctx, c.ID, rev)
		r.followRecord(ctx, p, "certificate", watch, every, stillVisible, func(ev store.Event) bool {
			if ev.Deleted {
				send([]store.CertEvent{{At: time.Now().UTC(), Kind: "deleted"}})
				return false
			}
			cur, err := store.DecodeCertificate(ev)
			if err != nil {
				r.Log.Error("decode certificate", "certificate", c.ID, "err", err)
				return false
			}
			if cur.Account != account {
				if account = cur.Account; !stillVisible() {
					return false
				}
			}
			return send(newCertEvents(cur.Status.Events, last))
		})
	}()
	return ch, nil
}

// newCertEvents returns the events after last (the newest one sent): those
// following it in evs, or, when it has dropped out of the bounded list,
// those later than it.
func newCertEvents(evs []store.CertEvent, last store.CertEvent) []store.CertEvent {
	if last.At.IsZero() {
		return evs
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i] == last {
			return evs[i+1:]
		}
	}
	var out []store.CertEvent
	for _, e := range evs {
		if e.At.After(last.At) {
			out = append(out, e)
		}
	}
	return out
}

// renewable refuses renewCertificate for a certificate that is not
// ordered here or is on its way out.
func renewable(c *store.Certificate) error {
	switch {
	case c.Custom:
		return &validate.Error{Field: "id", Reason: "an installed certificate is renewed by installing its successor (installCertificate), or replaced by an ordered one (requestCertificate)"}
	case c.Deleting:
		return fmt.Errorf("certificate %s is being deleted: %w", c.ID, store.ErrConflict)
	case c.Revoke:
		return fmt.Errorf("certificate %s is revoked; requestCertificate orders a new one: %w", c.ID, store.ErrConflict)
	}
	return nil
}

// changeSite applies fn to the site of domain d for the caller (the
// account's owner, its reseller, admins) and returns the domain as
// written; the site's server block is rendered again when fn changed it.
func (r *Resolver) changeSite(ctx context.Context, action, d string, fn func(s *store.Site)) (*model.Domain, error) {
	notFound := errorf(CodeNotFound, "no account serves "+quote(d))
	id, err := r.Store.AccountIDByDomain(ctx, d)
	if isNotFound(err) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	a, err := r.changeSites(ctx, action, id, d, func(a *store.Account) (store.SiteChange, error) {
		i := a.SiteIndex(d)
		if i < 0 {
			return store.SiteChange{}, notFound
		}
		if err := notAlias(a.Sites[i]); err != nil {
			return store.SiteChange{}, err
		}
		before := a.Sites[i]
		fn(&a.Sites[i])
		if a.Sites[i] != before {
			store.MarkSiteChanged(a, i)
		}
		return store.SiteChange{}, nil
	})
	if err != nil {
		return nil, err
	}
	m := accountModel(a)
	return domainModel(m.Sites, a.SiteIndex(d), m), nil
}

// visibleSites returns the sites (their domains, which are the ids of
// their certificates) of the accounts a user or reseller may see, each
// with its account's id: a user's one account, a reseller's own. Alias
// domains have no certificate of their own and are left out.
func (r *Resolver) visibleSites(ctx context.Context, p auth.Principal) (map[string]string, error) {
	var accts []*store.Account
	switch p.Role {
	case store.RoleUser:
		a, _, err := r.Store.GetAccount(ctx, p.Account)
		if err != nil && !isNotFound(err) {
			return nil, err
		}
		if err == nil && canSee(p, a) {
			accts = append(accts, a)
		}
	case store.RoleReseller:
		for cursor := ""; ; {
			page, more, err := r.Cluster.ListAccounts(ctx, store.AccountFilter{Owner: p.Name}, cursor, 500)
			if err != nil {
				return nil, err
			}
			accts = append(accts, page...)
			if !more || len(page) == 0 {
				break
			}
			cursor = page[len(page)-1].ID
		}
	}
	sites := map[string]string{}
	for _, a := range accts {
		if !canSee(p, a) {
			continue
		}
		for _, s := range a.AllSites() {
			if s.AliasOf == "" {
				sites[s.Domain] = a.ID
			}
		}
	}
	return sites, nil
}

// certFilter returns the test of the certificates filter for the caller:
// only certificates of accounts it may see pass, whatever it asks for.
// visible holds accounts already known to be visible to the caller (nil:
// none); any other account is read to decide.
func (r *Resolver) certFilter(ctx context.Context, p auth.Principal, f *model.CertificateFilter, visible map[string]bool) (func(*store.Certificate) (bool, error), error) {
	if f == nil {
		f = &model.CertificateFilter{}
	}
	var account, domain string
	var err error
	if f.Account != nil && *f.Account != "" {
		if account, err = r.resolveAccountRef(ctx, *f.Account); err != nil {
			if !isNotFound(err) {
				return nil, err
			}
			account = "\x00none" // matches nothing: an unknown account has no certificates
		}
	}
	if f.Domain != nil && *f.Domain != "" {
		if domain, err = canonicalDomain(*f.Domain); err != nil {
			return nil, err
		}
	}
	if f.Status != nil && !f.Status.IsValid() {
		return nil, &validate.Error{Field: "status", Reason: "unknown status"}
	}
	var expiring time.Time
	if f.ExpiringWithinDays != nil {
		n := *f.ExpiringWithinDays
		if n < 0 || n > maxExpiringDays {
			return nil, &validate.Error{Field: "expiringWithinDays", Reason: fmt.Sprintf("%d: give 0 to %d", n, maxExpiringDays)}
		}
		expiring = time.Now().Add(time.Duration(n) * 24 * time.Hour)
	}
	if visible == nil {
		visible = map[string]bool{}
	}
	return func(c *store.Certificate) (bool, error) {
		if account != "" && c.Account != account {
			return false, nil
		}
		if domain != "" && c.ID != domain && !slices.Contains(c.Domains, domain) {
			return false, nil
		}
		if f.Status != nil {
			st := model.CertificateStatus(c.Status.State)
			if !st.IsValid() {
				st = model.CertificateStatusPending
			}
			if st != *f.Status {
				return false, nil
			}
		}
		if !expiring.IsZero() && (c.Status.NotAfter.IsZero() || c.Status.NotAfter.After(expiring)) {
			return false, nil
		}
		ok, seen := visible[c.Account]
		if !seen {
			if p.Role == store.RoleAdmin {
				ok = true
			} else {
				a, _, err := r.Store.GetAccount(ctx, c.Account)
				if err != nil && !isNotFound(err) {
					return false, err
				}
				ok = err == nil && canSee(p, a)
			}
			visible[c.Account] = ok
		}
		return ok, nil
	}, nil
}
