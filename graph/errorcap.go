package graph

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// MaxErrors is the most errors one response holds. Validation reports
// every repetition of a mistake, so without a cap 3,000 repeated
// directives in 54 KB came back as 512 KB of errors.
const MaxErrors = 20

// CodeTooManyErrors marks the error that stands for those left out.
const CodeTooManyErrors = "TOO_MANY_ERRORS"

// errorCap keeps the first MaxErrors-1 errors of a response and replaces
// the rest with one that says how many were left out.
type errorCap struct{ max int }

var _ interface {
	graphql.HandlerExtension
	graphql.ResponseInterceptor
} = errorCap{}

func (errorCap) ExtensionName() string                   { return "ErrorCap" }
func (errorCap) Validate(graphql.ExecutableSchema) error { return nil }

func (c errorCap) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if resp != nil {
		resp.Errors = capErrors(resp.Errors, c.max)
	}
	return resp
}

func capErrors(list gqlerror.List, limit int) gqlerror.List {
	if len(list) <= limit || limit < 1 {
		return list
	}
	out := make(gqlerror.List, 0, limit)
	out = append(out, list[:limit-1]...)
	return append(out, &gqlerror.Error{
		Message:    fmt.Sprintf("%d more errors not shown; fix the ones above and try again", len(list)-len(out)),
		Extensions: map[string]any{"code": CodeTooManyErrors},
	})
}
