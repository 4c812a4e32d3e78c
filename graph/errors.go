package graph

import (
	"context"
	"errors"

	"github.com/99designs/gqlgen/graphql"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/feed"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/internal/validation"
)

// Error codes in extensions.code.
const (
	CodeUnauthenticated = "UNAUTHENTICATED"
	CodeForbidden       = "FORBIDDEN"
	CodeNotFound        = "NOT_FOUND"
	CodeAlreadyExists   = "ALREADY_EXISTS"
	CodeConflict        = "CONFLICT"
	CodeBadCursor       = "BAD_CURSOR"
	CodeBadUserInput    = "BAD_USER_INPUT"
	CodeInternal        = "INTERNAL"
	CodeUnavailable     = "UNAVAILABLE"
	CodeTokenExpired    = "TOKEN_EXPIRED"
)

// toGQL turns a domain error into a GraphQL error with extensions.code.
// Anything unexpected is logged and reported without detail.
func (r *Resolver) toGQL(ctx context.Context, err error) error {
	e := &gqlerror.Error{Path: graphql.GetPath(ctx), Extensions: map[string]any{}}
	var verr validation.Errors
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		e.Message, e.Extensions["code"] = "authentication required", CodeUnauthenticated
	case errors.Is(err, auth.ErrForbidden):
		e.Message, e.Extensions["code"] = "your role may not do this", CodeForbidden
	case errors.Is(err, users.ErrNotFound), errors.Is(err, challenge.ErrNotFound):
		e.Message, e.Extensions["code"] = "not found", CodeNotFound
	case errors.Is(err, challenge.ErrUnavailable), errors.Is(err, users.ErrStateUnavailable):
		// Fail closed: no challenge state means no answer, never approval.
		r.Logger.ErrorContext(ctx, "challenge store unavailable", "err", err)
		e.Message, e.Extensions["code"] = "two-factor is temporarily unavailable; try again shortly", CodeUnavailable
	case errors.Is(err, cursor.ErrBad):
		e.Message, e.Extensions["code"] = "malformed cursor", CodeBadCursor
	case errors.As(err, &verr):
		e.Message, e.Extensions["code"] = verr.Error(), CodeBadUserInput
		e.Extensions["userErrors"] = userErrors(verr, "")
	case errors.Is(err, feed.ErrExpired), errors.Is(err, feed.ErrShutdown), errors.Is(err, feed.ErrTooSlow):
		// A subscription refused for a reason its stream could also end
		// with: the same code, so clients handle both alike.
		se := r.streamError(ctx, err)
		e.Message, e.Extensions["code"] = se.Message, se.Extensions["code"]
	default:
		id := middleware.GetReqID(ctx)
		r.Logger.ErrorContext(ctx, "resolver failed", "path", graphql.GetPath(ctx).String(), "err", err, "request_id", id)
		e.Message, e.Extensions["code"] = "internal error", CodeInternal
		if id != "" {
			e.Extensions["requestId"] = id
		}
	}
	return e
}

// withRequestID gives every INTERNAL error in errs the request's id (the
// X-Request-Id header and the request's log line), so what a client
// reports can be found in the log. It also reaches errors made outside
// toGQL: a resolver's panic, a null for a non-null field.
func withRequestID(ctx context.Context, errs gqlerror.List) {
	id := middleware.GetReqID(ctx)
	if id == "" {
		return
	}
	for _, e := range errs {
		if e != nil && e.Extensions["code"] == CodeInternal {
			e.Extensions["requestId"] = id
		}
	}
}

// streamError is how a live stream that ended early reports why.
func (r *Resolver) streamError(ctx context.Context, err error) *gqlerror.Error {
	code := "INTERNAL"
	switch {
	case errors.Is(err, feed.ErrTooSlow):
		code = "SUBSCRIBER_TOO_SLOW"
	case errors.Is(err, feed.ErrExpired):
		code = CodeTokenExpired
	case errors.Is(err, feed.ErrShutdown):
		code = "SHUTTING_DOWN"
	default:
		r.Logger.ErrorContext(ctx, "audit stream failed", "err", err)
		return &gqlerror.Error{Message: "internal error; resubscribe with after set to the last cursor received",
			Extensions: map[string]any{"code": code}}
	}
	return &gqlerror.Error{Message: err.Error(), Extensions: map[string]any{"code": code}}
}

// mutationErrors splits a mutation's error into user errors, which go in
// the payload, and everything else, which fails the field. field names the
// input holding an id that was not found or already exists.
func (r *Resolver) mutationErrors(ctx context.Context, err error, idField string) ([]model.UserError, error) {
	var verr validation.Errors
	switch {
	case err == nil:
		return []model.UserError{}, nil
	case errors.As(err, &verr):
		return userErrors(verr, "input"), nil
	case errors.Is(err, users.ErrNotFound), errors.Is(err, challenge.ErrNotFound):
		return []model.UserError{{Field: []string{"input", idField}, Code: CodeNotFound, Message: "not found"}}, nil
	case errors.Is(err, users.ErrAlreadyExists):
		return []model.UserError{{Field: []string{"input", idField}, Code: CodeAlreadyExists, Message: "a user with this id already exists"}}, nil
	case errors.Is(err, settings.ErrConflict):
		return []model.UserError{{Field: []string{"input", "expectedUpdatedAt"}, Code: CodeConflict,
			Message: "the settings changed since expectedUpdatedAt; nothing was written"}}, nil
	}
	return nil, r.toGQL(ctx, err)
}

func userErrors(v validation.Errors, prefix string) []model.UserError {
	out := make([]model.UserError, len(v))
	for i, fe := range v {
		field := fe.Field
		if prefix != "" {
			field = append([]string{prefix}, fe.Field...)
		}
		out[i] = model.UserError{Field: field, Code: fe.Code, Message: fe.Message}
	}
	return out
}
