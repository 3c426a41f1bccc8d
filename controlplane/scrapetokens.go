package controlplane

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/pki"
)

// scrapeSet is one version of the scrape tokens. changed is closed when a
// newer version replaces it, which wakes every agent stream waiting to push
// the set (a broadcast without a list of subscribers).
type scrapeSet struct {
	// tokens are every token's digest and scopes, for this replica's own
	// endpoints.
	tokens []scrapeEntry
	// digests are those of the tokens with the metrics scope, in order:
	// what the agents get, since /metrics is all an agent serves. An agent
	// never learns of a token that cannot scrape it.
	digests [][32]byte
	changed chan struct{}
}

type scrapeEntry struct {
	digest [32]byte
	scopes []string
}

// scrapeTokens is this replica's view of the scrape tokens, followed from
// etcd: scrapes are checked against it without a read per request.
type scrapeTokens struct {
	cur   atomic.Pointer[scrapeSet]
	byID  map[string]scrapeEntry // owned by follow
	gauge func(float64)
}

func newScrapeTokens(gauge func(float64)) *scrapeTokens {
	v := &scrapeTokens{byID: map[string]scrapeEntry{}, gauge: gauge}
	v.cur.Store(&scrapeSet{changed: make(chan struct{})})
	return v
}

// current is the newest set.
func (v *scrapeTokens) current() *scrapeSet { return v.cur.Load() }

func (v *scrapeTokens) publish() {
	set := &scrapeSet{changed: make(chan struct{})}
	for _, e := range v.byID {
		set.tokens = append(set.tokens, e)
		if slices.Contains(e.scopes, store.ScrapeMetrics) {
			set.digests = append(set.digests, e.digest)
		}
	}
	// In order, so that the same set is always sent the same way.
	slices.SortFunc(set.digests, func(a, b [32]byte) int { return bytes.Compare(a[:], b[:]) })
	old := v.cur.Swap(set)
	close(old.changed)
	if v.gauge != nil {
		v.gauge(float64(len(set.tokens)))
	}
}

// errInvalidScrapeToken: the bearer is not a current scrape token.
var errInvalidScrapeToken = errors.New("invalid scrape token")

// scopeError refuses a current scrape token that lacks the endpoint's
// scope (HTTP 403, where an unknown token is 401).
type scopeError struct{ scope string }

func (e *scopeError) Error() string {
	return "this scrape token lacks the " + strings.ToUpper(e.scope) + " scope"
}

// check admits tok when it is a scrape token that opens scope. Every
// digest is compared in constant time, so the answer's timing says
// nothing about the set.
func (v *scrapeTokens) check(tok, scope string) error {
	if !strings.HasPrefix(tok, store.ScrapeTokenPrefix) {
		return errInvalidScrapeToken
	}
	sum := store.ScrapeTokenDigest(tok)
	var match *scrapeEntry
	set := v.current()
	for i := range set.tokens {
		if subtle.ConstantTimeCompare(sum[:], set.tokens[i].digest[:]) == 1 {
			match = &set.tokens[i]
		}
	}
	switch {
	case match == nil:
		return errInvalidScrapeToken
	case !slices.Contains(match.scopes, scope):
		return &scopeError{scope}
	}
	return nil
}

// load reads every token; follow keeps the view current from rev.
func (v *scrapeTokens) load(ctx context.Context, st *store.Store) (int64, error) {
	evs, rev, err := st.List(ctx, store.KindScrapeTokens)
	if err != nil {
		return 0, err
	}
	clear(v.byID)
	for _, ev := range evs {
		v.apply(ev)
	}
	v.publish()
	return rev, nil
}

func (v *scrapeTokens) apply(ev store.Event) {
	if ev.Deleted {
		delete(v.byID, ev.Name)
		return
	}
	t, err := store.DecodeScrapeToken(ev.Value)
	if err != nil || len(t.SHA256) != 32 {
		delete(v.byID, ev.Name)
		return
	}
	v.byID[ev.Name] = scrapeEntry{digest: [32]byte(t.SHA256), scopes: t.ScopeList()}
}

// follow watches the tokens from rev until ctx ends, listing afresh after
// a lost watch.
func (v *scrapeTokens) follow(ctx context.Context, st *store.Store, rev int64) {
	for ctx.Err() == nil {
		for b := range st.Watch(ctx, store.KindScrapeTokens, rev) {
			if b.Err != nil {
				break
			}
			for _, ev := range b.Events {
				v.apply(ev)
			}
			if len(b.Events) > 0 {
				v.publish()
			}
			rev = b.Rev
		}
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			r, err := v.load(ctx, st)
			if err == nil {
				rev = r
				break
			}
		}
	}
}

// bearer returns the request's bearer token, "" without one. A scrape
// token alone is taken too: Prometheus up to 2.4x sends http_sd_configs'
// credentials without the "Bearer" type unless the type is configured.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if strings.HasPrefix(h, store.ScrapeTokenPrefix) {
		return strings.TrimSpace(h)
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(tok)
}

// errNoScrapeAuth: the request carries neither a scrape token nor a node's
// certificate.
var errNoScrapeAuth = errors.New("a scrape token (Authorization: Bearer nps_...) or a node certificate of this cluster is required")

// scrapeAuth admits a request with a scrape token that opens scope, or
// over TLS with the certificate of a current node of the cluster.
func (s *Server) scrapeAuth(r *http.Request, scope string) error {
	if tok := bearer(r); tok != "" {
		return s.scrape.check(tok, scope)
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return errNoScrapeAuth
	}
	leaf := r.TLS.PeerCertificates[0]
	pool := x509.NewCertPool()
	pool.AddCert(s.ca.Root())
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return errors.New("client certificate not issued by this cluster")
	}
	name, err := pki.NodeName(leaf)
	if err != nil {
		return errors.New("client certificate is not a node's")
	}
	st, _, err := s.store.GetNodeState(r.Context(), name)
	if err != nil || !st.AcceptsSerial(serialHex(leaf)) {
		return errors.New("client certificate of a removed or replaced node")
	}
	return nil
}

// requireScrape wraps a handler for Prometheus: a scrape token that opens
// scope or a node's certificate.
func (s *Server) requireScrape(scope string, next http.Handler) http.Handler {
	return s.requireAuth(func(r *http.Request) error { return s.scrapeAuth(r, scope) }, next)
}

// requireScrapeToken wraps a handler that writes (Alertmanager's
// webhook): a scrape token that opens scope, never a node's certificate,
// so that a node cannot write to the audit log.
func (s *Server) requireScrapeToken(scope string, next http.Handler) http.Handler {
	return s.requireAuth(func(r *http.Request) error {
		tok := bearer(r)
		if tok == "" {
			return errNoScrapeToken
		}
		return s.scrape.check(tok, scope)
	}, next)
}

var errNoScrapeToken = errors.New("a scrape token is required (Authorization: Bearer nps_...)")

// requireAuth refuses what check refuses; the refusal is audited
// (rate-limited) unless no credential was given at all.
func (s *Server) requireAuth(check func(*http.Request) error, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := check(r); err != nil {
			if !errors.Is(err, errNoScrapeAuth) && !errors.Is(err, errNoScrapeToken) {
				s.auth.OnRefused(r, err.Error())
			}
			refuseScrape(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuseScrape answers a refused scrape: 403 for a token without the
// scope, else 401 with the challenge.
func refuseScrape(w http.ResponseWriter, err error) {
	var scope *scopeError
	if errors.As(err, &scope) {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="npanel scrape"`)
	http.Error(w, err.Error(), http.StatusUnauthorized)
}
