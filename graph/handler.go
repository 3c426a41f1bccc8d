package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/clientip"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/graph/console"
)

// maxComplexity bounds how much work one query may ask for, so a single
// request cannot walk the whole store.
const maxComplexity = 5000

// queryCacheSize is how many parsed query documents are kept.
const queryCacheSize = 1000

// parserTokenLimit bounds the tokens of one document: the CLI's largest
// query has a few hundred; a megabyte of aliases is refused while parsing,
// before validation could produce an error per alias.
const parserTokenLimit = 15_000

// MaxErrors is how many errors one response carries; the rest are counted
// in a last one. MaxErrorMessage bounds one message (an error may quote
// the request).
const (
	MaxErrors       = 20
	MaxErrorMessage = 1024
)

// WebsocketInitTimeout is how long a websocket may stay open without a
// signed-in connection_init.
const WebsocketInitTimeout = 5 * time.Second

// DefaultMaxWebsocketsPerIP caps the websockets open from one client
// (clientip.Key: an IPv6 client by its /64).
const DefaultMaxWebsocketsPerIP = 64

// Codes of refusals made before a resolver runs.
const (
	CodeTooManyErrors    = "TOO_MANY_ERRORS"
	CodeMethodNotAllowed = "METHOD_NOT_ALLOWED"
)

// tenantNodeFields are the Node fields other roles than admin may read: a
// tenant needs its node's name and the address its DNS points at; the
// rest (OS, kernel, capacity, services and their ports) is the cluster's
// inventory, which would help an attacker pick targets.
var tenantNodeFields = map[string]bool{"name": true, "address": true, "__typename": true}

// Handler serves POST /graphql, websockets, and the GraphiQL console's page
// to browsers that GET /graphql (its assets are served under
// console.AssetPrefix). Authentication happens in front of it
// (auth.SourceMiddleware, then auth.Middleware).
func Handler(r *Resolver) http.Handler {
	srv := handler.New(NewExecutableSchema(Config{Resolvers: r}))
	srv.AddTransport(transport.Websocket{
		KeepAlivePingInterval: 15 * time.Second,
		// A socket that does not sign in within a few seconds is closed:
		// idle unauthenticated sockets cost a goroutine and a descriptor.
		InitTimeout: WebsocketInitTimeout,
		// Browsers cannot set headers on a websocket, so the token may also
		// come in the connection_init payload ({"Authorization": "Bearer ..."}).
		InitFunc: func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
			if _, ok := auth.FromContext(ctx); ok {
				return ctx, nil, nil
			}
			tok := strings.TrimSpace(strings.TrimPrefix(p.Authorization(), "Bearer "))
			if tok == "" {
				r.refuse(ctx, store.RefusedWebsocket, "websocket", "connection_init", CodeUnauthenticated)
				return ctx, nil, errors.New(`authentication required: send {"Authorization": "Bearer <token>"} in connection_init`)
			}
			pr, err := r.Auth.Verify(ctx, tok)
			if err != nil {
				if errors.Is(err, auth.ErrInvalidToken) {
					r.refuse(ctx, store.RefusedToken, "websocket", "connection_init", CodeUnauthenticated)
					return ctx, nil, err
				}
				return ctx, nil, errors.New("authentication backend unavailable")
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
	srv.SetParserTokenLimit(parserTokenLimit)
	srv.Use(signedInIntrospection{public: r.PublicIntrospection})
	srv.Use(&exactEnums{})
	srv.Use(extension.FixedComplexityLimit(maxComplexity))
	srv.SetErrorPresenter(r.ErrorPresenter)
	srv.SetRecoverFunc(r.RecoverFunc)
	srv.AroundOperations(func(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
		// A websocket signs in once; a session revoked since (logout,
		// revokeSessions, a new password) starts nothing more on it.
		if p, ok := auth.FromContext(ctx); ok && !r.Auth.SessionValid(ctx, p) {
			return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{{
				Message:    auth.ErrInvalidToken.Error(),
				Extensions: map[string]any{"code": CodeUnauthenticated},
			}}})
		}
		return next(withLoaders(ctx))
	})
	srv.AroundFields(guardFields)
	srv.AroundResponses(capErrors)

	consolePage := console.Handler()
	maxSockets := r.MaxWebsocketsPerIP
	if maxSockets == 0 {
		maxSockets = DefaultMaxWebsocketsPerIP
	}
	sockets := clientip.NewLimiter(maxSockets)
	var conns atomic.Uint64
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && strings.Contains(req.Header.Get("Accept"), "text/html") {
			consolePage.ServeHTTP(w, req)
			return
		}
		if isWebsocket(req) {
			key := clientip.KeyOf(auth.Source(req.Context()))
			if !sockets.Acquire(key) {
				r.refuse(req.Context(), store.RefusedWebsocket, "websocket", "upgrade", CodeRateLimited)
				WriteError(w, http.StatusTooManyRequests, CodeRateLimited,
					fmt.Sprintf("too many websockets from this address (at most %d)", sockets.Max()))
				return
			}
			defer sockets.Release(key)
			// One request is one socket: gqlgen runs the socket's operations
			// in contexts derived from this one.
			ctx := withConn(req.Context(), strconv.FormatUint(conns.Add(1), 10))
			srv.ServeHTTP(w, req.WithContext(ctx)) // returns when the socket closes
			return
		}
		if req.Method == http.MethodGet && !getIsQuery(req) {
			// A mutation by GET is what a cross-site link or image would send.
			r.refuse(req.Context(), store.RefusedGET, "getMutation", "GET /graphql", CodeMethodNotAllowed)
			w.Header().Set("Allow", "POST")
			WriteError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, "GET serves queries only; send mutations and subscriptions by POST or websocket")
			return
		}
		srv.ServeHTTP(w, req)
	})
}

func isWebsocket(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// getIsQuery reports whether a GET request's document holds queries only.
// A document that does not parse is left to gqlgen, which explains why.
func getIsQuery(r *http.Request) bool {
	q := r.URL.Query().Get("query")
	if q == "" {
		return true
	}
	doc, err := parser.ParseQueryWithTokenLimit(&ast.Source{Input: q}, parserTokenLimit)
	if err != nil {
		return true
	}
	for _, op := range doc.Operations {
		if op.Operation != ast.Query {
			return false
		}
	}
	return true
}

// WriteError answers with one GraphQL error and its code; handlers in front
// of the API (an oversized body) use it too.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []any{map[string]any{
		"message": msg, "extensions": map[string]string{"code": code},
	}}})
}

type connKey struct{}

// withConn returns ctx carrying the websocket's id, unique in the process.
func withConn(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, connKey{}, id)
}

// connID names the websocket an operation runs on, for the per-connection
// subscription cap; "" outside one. auth.Source cannot serve: it names the
// client, whose sockets all share an IP.
func connID(ctx context.Context) string {
	id, _ := ctx.Value(connKey{}).(string)
	return id
}

// signedInIntrospection allows the schema to be introspected by signed-in callers
// only, unless public: an anonymous scanner learns nothing of the API.
// gqlgen refuses introspection unless an extension allows it; guardFields
// answers the refused fields with our own error first.
type signedInIntrospection struct{ public bool }

func (signedInIntrospection) ExtensionName() string                   { return "Introspection" }
func (signedInIntrospection) Validate(graphql.ExecutableSchema) error { return nil }
func (i signedInIntrospection) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if _, ok := auth.FromContext(ctx); ok || i.public {
		oc.DisableIntrospection = false
	}
	return nil
}

// guardFields refuses Node fields other than tenantNodeFields to every
// role but admin, on every path that reaches a Node (account.node, and any
// added later), and introspection where signedInIntrospection did not
// allow it.
func guardFields(ctx context.Context, next graphql.Resolver) (any, error) {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return next(ctx)
	}
	switch {
	case fc.Object == "Node" && !tenantNodeFields[fc.Field.Name]:
		if p, ok := auth.FromContext(ctx); !ok || p.Role != store.RoleAdmin {
			return nil, errorf(CodeForbidden, "a node's "+fc.Field.Name+" is visible to admins only")
		}
	case fc.Field.Name == "__schema" || fc.Field.Name == "__type":
		if graphql.GetOperationContext(ctx).DisableIntrospection {
			return nil, errIntrospectionRefused
		}
	}
	return next(ctx)
}

// capErrors keeps a response's error list and messages small whatever the
// request: a large invalid document must not be answered with ten times
// its size in errors.
func capErrors(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if resp == nil {
		return resp
	}
	if n := len(resp.Errors); n > MaxErrors {
		resp.Errors = append(resp.Errors[:MaxErrors:MaxErrors], &gqlerror.Error{
			Message:    fmt.Sprintf("%d more errors not shown", n-MaxErrors),
			Extensions: map[string]any{"code": CodeTooManyErrors},
		})
	}
	for _, e := range resp.Errors {
		if len(e.Message) > MaxErrorMessage {
			e.Message = strings.ToValidUTF8(e.Message[:MaxErrorMessage], "") + "…"
		}
	}
	return resp
}
