package controlplane

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph"
	"github.com/npanel/npanel/graph/console"
)

// maxRequestBody bounds a GraphQL request; queries are small, and a bound
// keeps a client from making the server buffer arbitrary amounts.
const maxRequestBody = 1 << 20

// CodeRequestTooLarge answers a body over maxRequestBody (HTTP 413).
const CodeRequestTooLarge = "REQUEST_TOO_LARGE"

func (s *Server) httpHandler() http.Handler {
	refusals := store.NewRefusalAudit(s.store, func(kind string) { s.metrics.auditSuppressed.WithLabelValues(kind).Inc() })
	s.auth.OnRefused = func(r *http.Request, reason string) {
		refusals.Record(r.Context(), store.RefusedToken,
			store.NewAuditEvent("anonymous", auth.Source(r.Context()), "badToken", r.Method+" "+r.URL.Path, reason))
	}
	resolver := &graph.Resolver{Store: s.store, Auth: s.auth, Cluster: s,
		Zones: &zoneWriter{store: s.store, views: &s.dnsViews, ctl: &s.zoneCtl}, Log: s.log.With("component", "graphql"),
		AllowTestUsernames: s.cfg.AllowTestUsernames, PublicIntrospection: s.cfg.PublicIntrospection,
		MaxWebsocketsPerIP: s.cfg.MaxWebsocketsPerIP, Refusals: refusals, KEK: s.kek}
	api := s.auth.Middleware(graph.Handler(resolver))

	mux := http.NewServeMux()
	mux.Handle("/graphql", limitBody(api, maxRequestBody))
	mux.Handle("GET "+SnapshotPath, s.auth.Middleware(s.snapshotHandler(refusals)))
	// The console's scripts and styles; its page is GET /graphql.
	mux.Handle("GET "+console.AssetPrefix, console.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			http.Error(w, "etcd unreachable", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", s.metricsAuth(promhttp.HandlerFor(
		prometheus.Gatherers{s.metrics.reg, prometheus.DefaultGatherer},
		promhttp.HandlerOpts{ErrorLog: nil})))
	mux.Handle("GET "+PrometheusSDPath, s.requireScrape(store.ScrapeDiscovery, http.HandlerFunc(s.prometheusSD)))
	mux.Handle("POST "+AlertsPath, s.requireScrapeToken(store.ScrapeAlerts, http.HandlerFunc(s.receiveAlerts)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/graphql", http.StatusFound)
	})
	return auth.SourceMiddleware(s.cfg.TrustedProxies, mux)
}

// limitBody answers a body over max with HTTP 413 and REQUEST_TOO_LARGE.
// http.MaxBytesHandler alone would let gqlgen turn the read error into a
// GraphQL error of its own; the body is read here instead (it is at most
// max bytes) and handed on whole.
func limitBody(next http.Handler, max int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			tooLarge(w, max)
			return
		}
		if r.Body == nil || r.Body == http.NoBody || r.Method == http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		var buf bytes.Buffer
		_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max))
		if err != nil {
			if errors.As(err, new(*http.MaxBytesError)) {
				tooLarge(w, max)
				return
			}
			graph.WriteError(w, http.StatusBadRequest, graph.CodeInvalidInput, "could not read the request body")
			return
		}
		r.Body = io.NopCloser(&buf)
		next.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter, max int64) {
	w.Header().Set("Connection", "close")
	graph.WriteError(w, http.StatusRequestEntityTooLarge, CodeRequestTooLarge,
		"request body larger than "+byteSize(max))
}

func byteSize(n int64) string {
	if n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// metricsAuth admits a scrape that presents the metrics token
// (Config.MetricsToken), a scrape token or an admin's login or API token as
// a bearer: the metrics name nodes, tenants' counts and the server's
// internals.
func (s *Server) metricsAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		tok = strings.TrimSpace(tok)
		if !ok || tok == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="npanel metrics"`)
			http.Error(w, "metrics require a bearer token: the metrics token or an admin's token", http.StatusUnauthorized)
			return
		}
		if s.cfg.MetricsToken != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.MetricsToken)) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		if strings.HasPrefix(tok, store.ScrapeTokenPrefix) {
			err := s.scrape.check(tok, store.ScrapeMetrics)
			if err == nil {
				next.ServeHTTP(w, r)
				return
			}
			s.auth.OnRefused(r, err.Error())
			refuseScrape(w, err)
			return
		}
		p, err := s.auth.Verify(r.Context(), tok)
		switch {
		case err == nil && p.Role == store.RoleAdmin:
			next.ServeHTTP(w, r)
		case err == nil:
			http.Error(w, "metrics are for admins", http.StatusForbidden)
		case errors.Is(err, auth.ErrInvalidToken):
			s.auth.OnRefused(r, "invalid token")
			http.Error(w, "invalid or expired token", http.StatusUnauthorized)
		default:
			http.Error(w, "authentication backend unavailable", http.StatusServiceUnavailable)
		}
	})
}

// debugHandler serves the runtime profiles on the separate debug listener.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
