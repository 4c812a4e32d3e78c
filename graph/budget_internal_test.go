package graph

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/complexity"
	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"

	"github.com/twofactor/service/graph/model"
)

// doublingDoc is {...F0} where each of n fragments spreads the next twice
// and the last holds leaf (a selection on root type on: Query or
// Mutation).
func doublingDoc(n int, on, leaf string) string {
	var b strings.Builder
	if on == "Mutation" {
		b.WriteString("mutation ")
	}
	b.WriteString("{...F0}")
	for i := range n {
		fmt.Fprintf(&b, " fragment F%d on %s{...F%d ...F%d}", i, on, i+1, i+1)
	}
	fmt.Fprintf(&b, " fragment F%d on %s{%s}", n, on, leaf)
	return b.String()
}

// loadQuery parses and validates q against the schema, as gqlgen does
// before the checks run.
func loadQuery(t *testing.T, q string) *ast.QueryDocument {
	t.Helper()
	doc, errs := gqlparser.LoadQuery(parsedSchema, q)
	if len(errs) > 0 {
		t.Fatalf("%.80s: %v", q, errs)
	}
	return doc
}

// schemaWithPageCost is the executable schema with the connection costs
// NewHandler sets.
func schemaWithPageCost() graphql.ExecutableSchema {
	cfg := Config{Resolvers: &Resolver{}}
	cfg.Complexity.Query.AuditLog = func(child int, first *int, _ *string, last *int, _ *string, _ *model.AuditLogFilter) int {
		return pageCost(child, first, last)
	}
	cfg.Complexity.Query.Users = func(child int, first *int, _ *string, _ *string, _ *model.UsersFilter) int {
		return pageCost(child, first, nil)
	}
	return NewExecutableSchema(cfg)
}

// The memoised complexity gives gqlgen's numbers for operations without
// introspection, fragments, aliases and variables included.
func TestComplexityMatchesGqlgen(t *testing.T) {
	t.Parallel()
	es := schemaWithPageCost()
	vars := map[string]any{"first": 40, "last": 7}
	queries := []string{
		`{ twoFactorSettings { general { deliveryMethod contactPerson { name email phone } } defaults { web manager } updatedAt } }`,
		`{ users(first: 50) { edges { cursor node { id email twoFactor { web manager } } } pageInfo { hasNextPage endCursor } } }`,
		`{ auditLog { edges { node { id actor { id displayName role } targetUser { id } } } } }`,
		`query($first: Int) { auditLog(first: $first) { edges { node { ...E } } } a: auditLog(last: 3) { edges { node { ...E } } } } fragment E on AuditEvent { id action actor { ...A } } fragment A on AuditActor { id displayName }`,
		`query($last: Int) { auditLog(last: $last) { edges { ... on AuditEventEdge { cursor node { id } } } } me { __typename id } }`,
		`mutation { createUser(input: {id: "x"}) { user { id twoFactor { web } } userErrors { field code message } } }`,
		doublingDoc(8, "Query", `me { id }`),
	}
	for _, q := range queries {
		doc := loadQuery(t, q)
		op := doc.Operations[0]
		want := complexity.Calculate(context.Background(), es, op, vars)
		if got := operationComplexity(context.Background(), es, op, vars); got != want {
			t.Errorf("%.80s: complexity %d, gqlgen's %d", q, got, want)
		}
	}
}

// Fragment doubling costs what it expands to, computed in time linear in
// the document (gqlgen's Calculate walked 2^n fragments), and __schema is
// not free.
func TestComplexityFragmentDoubling(t *testing.T) {
	t.Parallel()
	es := schemaWithPageCost()
	for _, tc := range []struct {
		leaf string
		want int
	}{
		{"__typename", 1 << 40},
		{"__schema{queryType{name}}", 3 << 40},
	} {
		op := loadQuery(t, doublingDoc(40, "Query", tc.leaf)).Operations[0]
		if got := operationComplexity(context.Background(), es, op, nil); got != tc.want {
			t.Errorf("%s: complexity %d, want %d", tc.leaf, got, tc.want)
		}
	}
	// Each level squares the one below: the sum saturates, never wraps.
	op := loadQuery(t, doublingDoc(70, "Query", "__typename")).Operations[0]
	if got := operationComplexity(context.Background(), es, op, nil); got <= 0 {
		t.Errorf("complexity %d after overflow", got)
	}
}

// The one-challenge rule and the introspection budget count through
// fragments as they would run, reading each fragment once.
func TestCountsThroughDoubledFragments(t *testing.T) {
	t.Parallel()
	set := loadQuery(t, doublingDoc(40, "Mutation", `verifyChallenge(input: {challengeId: "c", code: "1"}) { status }`)).
		Operations[0].SelectionSet
	if got := countChallengeFields(set, map[string]int{}); got != 1<<40 {
		t.Errorf("challenge fields %d, want 2^40", got)
	}
	// Introspection fields with one response name merge into one as they
	// run, however often they are spread; aliases do not.
	leaf := `__schema{queryType{name}} a: __type(name: "User") { name } b: __type(name: "User") { name }`
	set = loadQuery(t, doublingDoc(40, "Query", leaf)).Operations[0].SelectionSet
	if got := countIntrospection(set); got != (introspectionCount{schema: 1, types: 2}) {
		t.Errorf("introspection %+v, want 1 __schema and 2 __type", got)
	}
}

// parseDoc parses q without validating it, as documentBudget sees it.
func parseDoc(t *testing.T, q string) *ast.QueryDocument {
	t.Helper()
	doc, err := parser.ParseQuery(&ast.Source{Input: q})
	if err != nil {
		t.Fatalf("%.80s: %v", q, err)
	}
	return doc
}

// What the budget counts on documents gqlgen has not validated yet.
func TestSelectionCounts(t *testing.T) {
	t.Parallel()
	intro, err := os.ReadFile("testdata/introspection.graphql")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, query string
		want        selections
		obj         objects
	}{
		{"standard introspection query", string(intro), selections{total: 487, deepest: 10}, objects{widest: 9}},
		{"doubling saturates", doublingDoc(60, "Query", "__typename"), selections{total: 1001, deepest: 1}, objects{}},
		{"spread twice counts twice", `{...F ...F} fragment F on Query{a b}`, selections{total: 2 + 4 + 2, deepest: 1}, objects{widest: 2}},
		{"same name", `{a a a {b} a {b}}`, selections{total: 6, deepest: 2}, objects{widest: 4, pairs: 6 + 1}},
		{"fragments pairwise", `{...A ...B ...C} fragment A on Q{x} fragment B on Q{y} fragment C on Q{z}`,
			selections{total: 6 + 3, deepest: 1}, objects{widest: 3, pairs: 3}},
		{"through inline fragments", `{... on Query { ... on Query { a } a }}`, selections{total: 4, deepest: 3}, objects{widest: 2, pairs: 1}},
		{"unknown fragment", `{...Nope a}`, selections{total: 2, deepest: 1}, objects{widest: 1}},
		{"cycle", `{...A} fragment A on Q{...B x} fragment B on Q{...A}`, selections{total: 4 + 3 + 1, deepest: 1, cycle: "A"}, objects{}},
		{"duplicate fragment names", `{...A} fragment A on Q{x} fragment A on Q{y z}`, selections{total: 2 + 1 + 2, deepest: 1}, objects{widest: 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			doc := parseDoc(t, tc.query)
			frags := fragmentIndex(doc)
			got := countSelections(doc, frags, MaxSelections)
			if got != tc.want {
				t.Errorf("selections %+v, want %+v", got, tc.want)
			}
			if got.cycle != "" || got.total > MaxSelections {
				return // mergeObjects runs only on documents within the limit, without cycles
			}
			if obj := mergeObjects(doc, frags, MaxSelections); obj != tc.obj {
				t.Errorf("objects %+v, want %+v", obj, tc.obj)
			}
		})
	}
}

// At most MaxErrors errors, the last saying how many were left out.
func TestCapErrors(t *testing.T) {
	t.Parallel()
	list := func(n int) gqlerror.List {
		out := make(gqlerror.List, n)
		for i := range out {
			out[i] = &gqlerror.Error{Message: fmt.Sprint(i)}
		}
		return out
	}
	if got := capErrors(list(MaxErrors), MaxErrors); len(got) != MaxErrors || got[MaxErrors-1].Message != fmt.Sprint(MaxErrors-1) {
		t.Errorf("%d errors: changed to %v", MaxErrors, got)
	}
	got := capErrors(list(3000), MaxErrors)
	last := got[len(got)-1]
	if len(got) != MaxErrors || got[0].Message != "0" || last.Extensions["code"] != CodeTooManyErrors ||
		!strings.HasPrefix(last.Message, fmt.Sprint(3000-MaxErrors+1)+" more errors") {
		t.Errorf("3000 errors: %d kept, last %+v", len(got), last)
	}
}
