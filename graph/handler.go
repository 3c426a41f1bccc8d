package graph

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/99designs/gqlgen/graphql/playground"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/npanel/npanel/controlplane/auth"
)

// maxComplexity bounds how much work one query may ask for, so a single
// request cannot walk the whole store.
const maxComplexity = 5000

// queryCacheSize is how many parsed query documents are kept.
const queryCacheSize = 1000

// Handler serves POST /graphql, and the GraphiQL console to browsers that GET
// /graphql. Authentication happens in front of it (auth.Middleware).
func Handler(r *Resolver) http.Handler {
	srv := handler.New(NewExecutableSchema(Config{Resolvers: r}))
	srv.AddTransport(transport.Websocket{
		KeepAlivePingInterval: 15 * time.Second,
		// Browsers cannot set headers on a websocket, so the token may also
		// come in the connection_init payload ({"Authorization": "Bearer ..."}).
		InitFunc: func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
			if _, ok := auth.FromContext(ctx); ok {
				return ctx, nil, nil
			}
			tok := strings.TrimSpace(strings.TrimPrefix(p.Authorization(), "Bearer "))
			if tok == "" {
				return ctx, nil, nil // resolvers refuse what needs a user
			}
			pr, err := r.Auth.Verify(ctx, tok)
			if err != nil {
				return ctx, nil, err
			}
			return auth.WithPrincipal(ctx, pr), nil, nil
		},
	})
	srv.AddTransport(transport.Options{})
	srv.AddTransport(transport.POST{})
	srv.AddTransport(transport.GET{})
	// Clients send the same few documents over and over (the CLI, scripts,
	// the console): parsing and validating each once saves a few percent
	// of the server's CPU under load.
	srv.SetQueryCache(lru.New[*ast.QueryDocument](queryCacheSize))
	srv.Use(extension.Introspection{})
	srv.Use(extension.FixedComplexityLimit(maxComplexity))
	srv.SetErrorPresenter(r.ErrorPresenter)
	srv.SetRecoverFunc(r.RecoverFunc)
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		return next(withLoaders(ctx))
	})
	console := playground.Handler("nPanel", "/graphql")
	return WithSource(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.Header.Get("Accept"), "text/html") {
			console.ServeHTTP(w, req)
			return
		}
		srv.ServeHTTP(w, req)
	}))
}
