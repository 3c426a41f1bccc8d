package graph

import (
	"net/http"
	"strings"

	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/99designs/gqlgen/graphql/playground"
)

// maxComplexity bounds how much work one query may ask for, so a single
// request cannot walk the whole store.
const maxComplexity = 5000

// Handler serves POST /graphql, and the GraphiQL console to browsers that GET
// /graphql. Authentication happens in front of it (auth.Middleware).
func Handler(r *Resolver) http.Handler {
	srv := handler.New(NewExecutableSchema(Config{Resolvers: r}))
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.POST{})
	srv.AddTransport(transport.GET{})
	srv.Use(extension.Introspection{})
	srv.Use(extension.FixedComplexityLimit(maxComplexity))
	srv.SetErrorPresenter(r.ErrorPresenter)
	srv.SetRecoverFunc(r.RecoverFunc)
	console := playground.Handler("nPanel", "/graphql")
	return WithSource(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.Header.Get("Accept"), "text/html") {
			console.ServeHTTP(w, req)
			return
		}
		srv.ServeHTTP(w, req)
	}))
}
