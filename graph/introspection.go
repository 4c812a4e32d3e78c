package graph

import (
	"context"
	"errors"
	"fmt"
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
	if oc.Operation == nil {
		return nil
	}
	n := countIntrospection(oc.Operation.SelectionSet)
	if n.schema == 0 && n.types == 0 {
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
	if n.schema > MaxSchemaFields || n.types > MaxTypeFields {
		return &gqlerror.Error{
			Message: fmt.Sprintf("an operation may hold at most %d __schema and %d __type fields, counting aliases and fragments",
				MaxSchemaFields, MaxTypeFields),
			Extensions: map[string]any{"code": CodeIntrospectionLimitExceeded},
		}
	}
	oc.DisableIntrospection = false
	return nil
}

// Introspection answers with the whole schema whatever the query's size,
// so it has its own budget per operation: one __schema, which
// getIntrospectionQuery() uses, and a few __type. Without it 2,000
// aliased __schema made a 95 MB response.
const (
	MaxSchemaFields = 1
	MaxTypeFields   = 10
	// CodeIntrospectionLimitExceeded refuses an operation over them.
	CodeIntrospectionLimitExceeded = "INTROSPECTION_LIMIT_EXCEEDED"
)

type introspectionCount struct{ schema, types int }

// countIntrospection counts the __schema and __type fields of a root
// selection set as they run: fields with one response name, whether
// written twice or reached through several fragments, merge into one,
// and each alias is another. It reads each fragment once.
func countIntrospection(set ast.SelectionSet) introspectionCount {
	names := map[string]map[string]bool{"__schema": {}, "__type": {}}
	collectRootFields(set, map[string]bool{}, func(f *ast.Field) {
		if byName, ok := names[f.Name]; ok {
			alias := f.Alias
			if alias == "" {
				alias = f.Name
			}
			byName[alias] = true
		}
	})
	return introspectionCount{schema: len(names["__schema"]), types: len(names["__type"])}
}

// collectRootFields calls found for each field of set, through inline
// fragments and fragments (each fragment once: spreading it again adds
// no field).
func collectRootFields(set ast.SelectionSet, seen map[string]bool, found func(*ast.Field)) {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			found(s)
		case *ast.InlineFragment:
			collectRootFields(s.SelectionSet, seen, found)
		case *ast.FragmentSpread:
			if s.Definition != nil && !seen[s.Name] {
				seen[s.Name] = true
				collectRootFields(s.Definition.SelectionSet, seen, found)
			}
		}
	}
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
