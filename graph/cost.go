package graph

import (
	"context"
	"fmt"
	"math"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// CodeComplexityLimitExceeded refuses an operation over MaxComplexity.
const CodeComplexityLimitExceeded = "COMPLEXITY_LIMIT_EXCEEDED"

// complexityLimit refuses, before anything runs, an operation whose
// complexity is over max. It computes what gqlgen's complexity.Calculate
// does (1 per field plus its children, or the schema's custom cost, such
// as pageCost for connections), with two differences:
//   - each fragment's cost is computed once: Calculate walks a fragment
//     again at every spread, so 24 levels of fragments that each spread
//     the next twice took seconds, and 34 kept a core busy for minutes;
//   - introspection fields cost like any other field: Calculate counts a
//     __schema subtree as free, so 2,000 aliased __schema passed.
type complexityLimit struct {
	max int
	es  graphql.ExecutableSchema
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = &complexityLimit{}

func (*complexityLimit) ExtensionName() string { return "ComplexityLimit" }

func (c *complexityLimit) Validate(es graphql.ExecutableSchema) error {
	c.es = es
	return nil
}

func (c *complexityLimit) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	n := operationComplexity(ctx, c.es, oc.Operation, oc.Variables)
	if n > c.max {
		return &gqlerror.Error{
			Message:    fmt.Sprintf("operation has complexity %d, which exceeds the limit of %d", n, c.max),
			Extensions: map[string]any{"code": CodeComplexityLimitExceeded},
		}
	}
	return nil
}

// operationComplexity is the complexity of a validated operation.
func operationComplexity(ctx context.Context, es graphql.ExecutableSchema, op *ast.OperationDefinition, vars map[string]any) int {
	w := complexityWalk{ctx: ctx, es: es, schema: es.Schema(), vars: vars, frags: map[string]int{}}
	return w.set(op.SelectionSet)
}

type complexityWalk struct {
	ctx    context.Context
	es     graphql.ExecutableSchema
	schema *ast.Schema
	vars   map[string]any
	frags  map[string]int // each fragment's cost, once computed
}

func (w *complexityWalk) set(set ast.SelectionSet) int {
	n := 0
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			n = saturatingAdd(n, w.field(s))
		case *ast.InlineFragment:
			n = saturatingAdd(n, w.set(s.SelectionSet))
		case *ast.FragmentSpread:
			n = saturatingAdd(n, w.fragment(s))
		}
	}
	return n
}

func (w *complexityWalk) fragment(s *ast.FragmentSpread) int {
	if s.Definition == nil {
		return 0
	}
	if n, ok := w.frags[s.Name]; ok {
		return n
	}
	w.frags[s.Name] = 0 // validation refuses cycles; this only ends one
	n := w.set(s.Definition.SelectionSet)
	w.frags[s.Name] = n
	return n
}

func (w *complexityWalk) field(f *ast.Field) int {
	if f.Definition == nil || f.ObjectDefinition == nil {
		return 1
	}
	typ := w.schema.Types[f.Definition.Type.Name()]
	if typ == nil {
		return 1
	}
	child := 0
	switch typ.Kind {
	case ast.Object, ast.Interface, ast.Union:
		child = w.set(f.SelectionSet)
	}
	args := f.ArgumentMap(w.vars)
	if f.ObjectDefinition.Kind != ast.Interface {
		return w.fieldCost(f.ObjectDefinition, f.Name, child, args)
	}
	// An interface's field costs what its costliest implementation does.
	worst := 0
	for _, t := range w.schema.GetPossibleTypes(f.ObjectDefinition) {
		worst = max(worst, w.fieldCost(t, f.Name, child, args))
	}
	return worst
}

func (w *complexityWalk) fieldCost(def *ast.Definition, field string, child int, args map[string]any) int {
	if n, ok := w.es.Complexity(w.ctx, def.Name, field, child, args); ok && n >= 1 {
		return n
	}
	return saturatingAdd(1, child)
}

// saturatingAdd adds costs, ignoring negative ones (a custom cost's bug)
// and stopping at the largest int, so no document overflows the sum.
func saturatingAdd(a, b int) int {
	a, b = max(a, 0), max(b, 0)
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}
