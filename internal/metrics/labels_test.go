package metrics_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/twofactor/service/internal/metrics"
)

var schema = gqlparser.MustLoadSchema(&ast.Source{Input: `
type Query { me: User, users: [User], settings: Int, audit: Int }
type Mutation { createUser(id: ID!): User }
type User { id: ID! }
`})

func TestMethod(t *testing.T) {
	for in, want := range map[string]string{
		"GET": "GET", "HEAD": "HEAD", "POST": "POST", "OPTIONS": "OPTIONS", "get": "OTHER",
		"PROPFIND": "OTHER", strings.Repeat("X", 200<<10): "OTHER", "": "OTHER",
	} {
		if got := metrics.Method(in); got != want {
			t.Errorf("Method(%.20q) = %q, want %q", in, got, want)
		}
	}
}

func TestCode(t *testing.T) {
	for in, want := range map[string]string{
		"FORBIDDEN": "FORBIDDEN", "GRAPHQL_PARSE_FAILED": "GRAPHQL_PARSE_FAILED", "": "UNKNOWN",
		"forbidden": "OTHER", "BAD CODE": "OTHER", strings.Repeat("A", 41): "OTHER",
	} {
		if got := metrics.Code(in); got != want {
			t.Errorf("Code(%q) = %q, want %q", in, got, want)
		}
	}
}

// The name label is the top-level fields' schema names, whatever the
// client called the operation, its aliases or its fragments.
func TestOperation(t *testing.T) {
	cases := []struct {
		query, typ, name string
	}{
		{`query AnyNameAtAll { me { id } }`, "query", "me"},
		{`{ b: users { id } a: me { id } }`, "query", "me,users"},
		{`{ me { id } me2: me { id } }`, "query", "me"},
		{`{ __typename }`, "query", "__typename"},
		{`{ ...F } fragment F on Query { settings ... on Query { audit } }`, "query", "audit,settings"},
		{`{ me { id } users { id } settings }`, "query", "multiple"},
		{`mutation Whatever { createUser(id: "x") { id } }`, "mutation", "createUser"},
		{doubling(30), "query", "settings"},
	}
	for _, tc := range cases {
		doc, errs := gqlparser.LoadQuery(schema, tc.query)
		if len(errs) > 0 {
			t.Fatalf("%.60s: %v", tc.query, errs)
		}
		typ, name := metrics.Operation(doc.Operations[0])
		if typ != tc.typ || name != tc.name {
			t.Errorf("%.60s: (%s, %s), want (%s, %s)", tc.query, typ, name, tc.typ, tc.name)
		}
	}
	if typ, name := metrics.Operation(nil); typ != "invalid" || name != "invalid" {
		t.Errorf("nil operation: (%s, %s)", typ, name)
	}
}

// doubling is a document whose fragments double at each of n levels:
// expanding each fragment once keeps labelling it cheap.
func doubling(n int) string {
	var b strings.Builder
	b.WriteString("{ ...F0 }\n")
	for i := range n {
		fmt.Fprintf(&b, "fragment F%d on Query { ...F%d ...F%d }\n", i, i+1, i+1)
	}
	fmt.Fprintf(&b, "fragment F%d on Query { settings }\n", n)
	return b.String()
}
