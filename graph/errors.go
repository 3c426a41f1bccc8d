package graph

import (
	"context"
	"errors"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/npanel/npanel/controlplane/auth"
	"github.com/npanel/npanel/controlplane/store"
	"github.com/npanel/npanel/validate"
)

// Error codes in extensions.code. Scripts branch on these; never rename one.
const (
	CodeUnauthenticated = "UNAUTHENTICATED"
	CodeForbidden       = "FORBIDDEN"
	CodeInvalidInput    = "INVALID_INPUT"
	CodeNotFound        = "NOT_FOUND"
	CodeConflict        = "CONFLICT"
	CodeRateLimited     = "RATE_LIMITED"
	CodeUnavailable     = "UNAVAILABLE"
	CodeInternal        = "INTERNAL"
)

// codedError is an error with a code chosen where it was raised.
type codedError struct {
	code string
	msg  string
}

func (e *codedError) Error() string { return e.msg }

func errorf(code, msg string) error { return &codedError{code: code, msg: msg} }

// errIntrospectionRefused answers __schema and __type for a caller who may
// not introspect (see guardFields).
var errIntrospectionRefused = errorf(CodeUnauthenticated,
	"introspection requires signing in (the server's --public-introspection opens it)")

// ErrorPresenter gives every error a code. Errors the resolvers did not
// classify are logged with their detail and shown as INTERNAL with a generic
// message, so that internals (keys, addresses, etcd errors) never leak.
func (r *Resolver) ErrorPresenter(ctx context.Context, err error) *gqlerror.Error {
	gerr := graphql.DefaultErrorPresenter(ctx, err)
	if gerr.Extensions != nil && gerr.Extensions["code"] != nil {
		return gerr // parse and validation errors from gqlgen carry their code
	}
	// Classify the resolver's own error: the wrapper gqlgen adds prefixes
	// the message with the position and path, which belong in their own
	// fields.
	var wrapped *gqlerror.Error
	if errors.As(err, &wrapped) && wrapped.Err != nil {
		err = wrapped.Err
	}
	code, msg := classify(err)
	if code == CodeForbidden {
		// A NOT_FOUND is audited where it is raised, if at all: only there
		// is another tenant's object told from one that does not exist.
		r.refusedRead(ctx, "field", gerr.Path.String(), code)
	}
	if code == CodeInternal || code == CodeUnavailable {
		r.Log.Error("graphql request failed", "path", gerr.Path.String(), "err", err)
	}
	gerr.Message = msg
	gerr.Extensions = map[string]any{"code": code}
	return gerr
}

func classify(err error) (code, msg string) {
	var ce *codedError
	var ve *validate.Error
	switch {
	case errors.As(err, &ce):
		return ce.code, ce.msg
	case errors.As(err, &ve):
		return CodeInvalidInput, ve.Error()
	case errors.Is(err, store.ErrNotFound):
		return CodeNotFound, detail(err, store.ErrNotFound)
	case errors.Is(err, store.ErrQuotaExceeded):
		return codeQuotaExceeded, detail(err, store.ErrQuotaExceeded)
	case errors.Is(err, store.ErrConflict):
		return CodeConflict, detail(err, store.ErrConflict)
	case errors.Is(err, auth.ErrInvalidCredentials), errors.Is(err, auth.ErrInvalidToken):
		return CodeUnauthenticated, err.Error()
	case errors.Is(err, auth.ErrRateLimited):
		return CodeRateLimited, err.Error()
	case store.IsUnavailable(err):
		return CodeUnavailable, "the cluster store is unavailable; try again"
	}
	return CodeInternal, "internal error"
}

// detail drops the sentinel the store wraps its message around ("plan
// \"basic\" exists: conflict"), which the code already says.
func detail(err, sentinel error) string {
	msg := strings.TrimSuffix(err.Error(), ": "+sentinel.Error())
	if msg == "" {
		return err.Error()
	}
	return msg
}

// RecoverFunc turns a resolver panic into INTERNAL instead of killing the
// request handler's goroutine with an unhelpful message.
func (r *Resolver) RecoverFunc(ctx context.Context, p any) error {
	r.Log.Error("graphql resolver panic", "panic", p)
	return errorf(CodeInternal, "internal error")
}

func requireUser(ctx context.Context) (auth.Principal, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return p, errorf(CodeUnauthenticated, "authentication required: send Authorization: Bearer <token> (see the login mutation)")
	}
	return p, nil
}

func requireAdmin(ctx context.Context) (auth.Principal, error) {
	p, err := requireUser(ctx)
	if err != nil {
		return p, err
	}
	if p.Role != store.RoleAdmin {
		return p, errorf(CodeForbidden, "this operation requires the admin role")
	}
	return p, nil
}

// source is the caller's address for the audit log and the per-client
// limits: the client IP auth.SourceMiddleware found. It names a client, not
// a connection (see connID).
func source(ctx context.Context) string { return auth.Source(ctx) }
