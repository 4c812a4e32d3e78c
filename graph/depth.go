package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// MaxIntrospectionDepth bounds a __schema or __type subtree (that field
// counting as 1). graphql-js getIntrospectionQuery needs 15: nine ofType
// levels of TypeRef under __schema types fields args type.
const MaxIntrospectionDepth = 16

// depthLimit refuses operations nested deeper than max, before any
// resolver runs. Fragments count at the depth they are spread.
// Introspection subtrees do not count against max, since tools ask for
// deep type references; they have their own bound, introspectionMax.
type depthLimit struct{ max, introspectionMax int }

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = depthLimit{}

func (depthLimit) ExtensionName() string                   { return "DepthLimit" }
func (depthLimit) Validate(graphql.ExecutableSchema) error { return nil }

func (d depthLimit) MutateOperationContext(_ context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	if oc.Operation == nil {
		return nil
	}
	set := oc.Operation.SelectionSet
	schema := newDepthWalk(d.max, true)
	if schema.depth(set, 0) > d.max {
		return limitError(CodeDepthLimitExceeded, "operation is nested deeper than the limit of %d", d.max)
	}
	intro := newDepthWalk(d.introspectionMax, false)
	if intro.introspectionDepth(set) > d.introspectionMax {
		return limitError(CodeDepthLimitExceeded, "introspection is nested deeper than the limit of %d", d.introspectionMax)
	}
	return nil
}

// isIntrospection reports whether f is __schema or __type. __typename is
// not: clients add it everywhere and it reveals nothing.
func isIntrospection(f *ast.Field) bool {
	return f.Name == "__schema" || f.Name == "__type"
}

type fragmentAt struct {
	name  string
	depth int
}

// depthWalk measures selection depth. It stops once past max and
// remembers each fragment's result per depth, so that a hostile document
// costs no more than the limit allows, however often it spreads a
// fragment.
type depthWalk struct {
	max       int
	skipIntro bool
	memo      map[fragmentAt]int
}

func newDepthWalk(max int, skipIntrospection bool) *depthWalk {
	return &depthWalk{max: max, skipIntro: skipIntrospection, memo: map[fragmentAt]int{}}
}

// depth returns the depth of set, whose parent is at depth.
func (w *depthWalk) depth(set ast.SelectionSet, depth int) int {
	if depth > w.max {
		return depth
	}
	deepest := depth
	for _, sel := range set {
		d := depth
		switch s := sel.(type) {
		case *ast.Field:
			if w.skipIntro && isIntrospection(s) {
				continue
			}
			d = w.depth(s.SelectionSet, depth+1)
		case *ast.InlineFragment:
			d = w.depth(s.SelectionSet, depth)
		case *ast.FragmentSpread:
			d = w.spread(s, depth)
		}
		deepest = max(deepest, d)
	}
	return deepest
}

func (w *depthWalk) spread(s *ast.FragmentSpread, depth int) int {
	if s.Definition == nil {
		return depth
	}
	key := fragmentAt{s.Name, depth}
	if d, ok := w.memo[key]; ok {
		return d
	}
	d := w.depth(s.Definition.SelectionSet, depth)
	w.memo[key] = d
	return d
}

// introspectionDepth returns the depth of the deepest __schema or __type
// subtree of a root selection set. Only the query root has those fields,
// so they sit at its top level, directly or through fragments
// (collectRootFields, which countIntrospection walks too).
func (w *depthWalk) introspectionDepth(set ast.SelectionSet) int {
	deepest := 0
	collectRootFields(set, map[string]bool{}, func(f *ast.Field) {
		if isIntrospection(f) {
			deepest = max(deepest, w.depth(f.SelectionSet, 1))
		}
	})
	return deepest
}
