package controlplane

import (
	"context"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/npanel/npanel/graph"
)

// maxRequestBody bounds a GraphQL request; queries are small, and a bound
// keeps a client from making the server buffer arbitrary amounts.
const maxRequestBody = 1 << 20

func (s *Server) httpHandler() http.Handler {
	resolver := &graph.Resolver{Store: s.store, Auth: s.auth, Cluster: s, Log: s.log.With("component", "graphql"),
		AllowTestUsernames: s.cfg.AllowTestUsernames}
	api := s.auth.Middleware(graph.Handler(resolver))

	mux := http.NewServeMux()
	mux.Handle("/graphql", http.MaxBytesHandler(api, maxRequestBody))
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
	mux.Handle("GET /metrics", promhttp.HandlerFor(
		prometheus.Gatherers{s.metrics.reg, prometheus.DefaultGatherer},
		promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/graphql", http.StatusFound)
	})
	return mux
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
