package graph

import (
	"context"
	"errors"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/twofactor/service/internal/auth"
)

// SDL is the schema as written in schema.graphqls, byte for byte: gqlgen
// embeds the file's text in generated.go.
func SDL() []byte {
	var b strings.Builder
	for _, s := range sources {
		if !s.BuiltIn {
			b.WriteString(s.Input)
		}
	}
	return []byte(b.String())
}

// introspectionGate lets only admin and service callers introspect: tools
// and consoles need the schema, an end user's client does not.
type introspectionGate struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = introspectionGate{}

func (introspectionGate) ExtensionName() string                   { return "IntrospectionGate" }
func (introspectionGate) Validate(graphql.ExecutableSchema) error { return nil }

func (introspectionGate) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	oc.DisableIntrospection = true
	if oc.Operation == nil || !usesIntrospection(oc.Operation.SelectionSet, map[string]bool{}) {
		return nil
	}
	c, err := auth.FromContext(ctx)
	if err != nil {
		return &gqlerror.Error{Message: "authentication required", Extensions: map[string]any{"code": CodeUnauthenticated}}
	}
	if c.Require(auth.RoleAdmin, auth.RoleService) != nil {
		return &gqlerror.Error{Message: "only admin and service tokens may introspect the schema",
			Extensions: map[string]any{"code": CodeForbidden}}
	}
	oc.DisableIntrospection = false
	return nil
}

// usesIntrospection reports whether a root selection set asks for
// __schema or __type, directly or through fragments.
func usesIntrospection(set ast.SelectionSet, seen map[string]bool) bool {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if isIntrospection(s) {
				return true
			}
		case *ast.InlineFragment:
			if usesIntrospection(s.SelectionSet, seen) {
				return true
			}
		case *ast.FragmentSpread:
			if s.Definition != nil && !seen[s.Name] {
				seen[s.Name] = true
				if usesIntrospection(s.Definition.SelectionSet, seen) {
					return true
				}
			}
		}
	}
	return false
}

// presentError gives every error a code and drops "Did you mean …"
// suggestions, which would describe the schema to callers who may not
// introspect it. (gqlgen's SetDisableSuggestion covers only two of the
// validation rules that suggest.)
func (r *Resolver) presentError(ctx context.Context, err error) *gqlerror.Error {
	if inv, ok := errors.AsType[*graphql.InvalidNullError](err); ok {
		// A resolver bug; the details are gqlgen's and ours, not the caller's.
		r.Logger.ErrorContext(ctx, "null for a non-null field", "path", inv.Path.String(), "err", err)
		return &gqlerror.Error{Message: "internal error", Path: graphql.GetPath(ctx),
			Extensions: map[string]any{"code": CodeInternal}}
	}
	e := graphql.DefaultErrorPresenter(ctx, err)
	if e == nil {
		return nil
	}
	// Changed in place: over a websocket gqlgen sends some errors as they
	// were, after presenting them. Each request's errors are its own.
	if e.Extensions == nil {
		e.Extensions = map[string]any{}
	}
	if i := strings.Index(e.Message, " Did you mean "); i >= 0 {
		e.Message = e.Message[:i]
	}
	if isUnknownOperation(e) {
		// gqlgen's message repeats operationName, which may be anything.
		e.Message = "operationName must name one of the query's operations"
	}
	if _, ok := e.Extensions["code"]; !ok {
		e.Extensions["code"] = uncodedErrorCode(e)
	}
	return e
}

// uncodedErrorCode names the errors gqlgen raises without a code: on a
// field, an argument it could not read (our resolvers code all of
// theirs); otherwise something wrong with the request itself.
func uncodedErrorCode(e *gqlerror.Error) string {
	if len(e.Path) > 0 {
		return CodeBadUserInput
	}
	return CodeBadRequest
}

func isUnknownOperation(e *gqlerror.Error) bool {
	return e.Extensions["code"] == errcode.ValidationFailed && len(e.Locations) == 0 &&
		strings.HasPrefix(e.Message, "operation ") && strings.HasSuffix(e.Message, " not found")
}
