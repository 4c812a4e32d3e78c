package graph

import (
	"context"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/auth"
)

const keyQuery = `subscription S($after: String, $actor: Boolean!) { auditEventAdded(after: $after) { ...E } }
fragment E on AuditEventEdge { cursor node { action actor @include(if: $actor) { id } } }`

// TestRenderKey: the key tells apart whatever changes a rendering, and
// only that.
func TestRenderKey(t *testing.T) {
	admin := auth.Caller{UserID: "u1", Company: "a", Role: auth.RoleAdmin}
	vars := map[string]any{"after": "c1", "actor": true}
	base := opKey(t, admin, keyQuery, vars)
	tests := []struct {
		name   string
		caller auth.Caller
		query  string
		vars   map[string]any
		same   bool
	}{
		{"another admin of the company", auth.Caller{UserID: "u2", Company: "a", Role: auth.RoleAdmin}, keyQuery, vars, true},
		{"another cursor (a root argument)", admin, keyQuery, map[string]any{"after": "c9", "actor": true}, true},
		{"another role", auth.Caller{UserID: "u1", Company: "a", Role: auth.RoleService}, keyQuery, vars, false},
		{"another company", auth.Caller{UserID: "u1", Company: "b", Role: auth.RoleAdmin}, keyQuery, vars, false},
		{"a variable in a fragment", admin, keyQuery, map[string]any{"after": "c1", "actor": false}, false},
		{"another selection", admin, `subscription S($after: String) { auditEventAdded(after: $after) { cursor } }`,
			map[string]any{"after": "c1"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := opKey(t, tc.caller, tc.query, tc.vars) == base; got != tc.same {
				t.Errorf("same key %v, want %v", got, tc.same)
			}
		})
	}
}

func opKey(t *testing.T, c auth.Caller, query string, vars map[string]any) fanoutKey {
	t.Helper()
	doc, errs := gqlparser.LoadQuery(parsedSchema, query)
	if errs != nil {
		t.Fatalf("query: %v", errs)
	}
	oc := &graphql.OperationContext{RawQuery: query, Variables: vars, OperationName: "S", Doc: doc, Operation: doc.Operations[0]}
	k, err := renderKey(c, oc)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestFanoutShares: of three subscribers handed one event, the two with
// one key share a rendering, the third renders its own; a rendering with
// errors is never shared.
func TestFanoutShares(t *testing.T) {
	f := newFanout()
	edge := &model.AuditEventEdge{Cursor: "c"}
	renders := 0
	deliver := func(key fanoutKey, data string, errs gqlerror.List) string {
		t.Helper()
		ctx := context.WithValue(context.Background(), fanoutTapKey{}, &fanoutTap{key: key})
		in := make(chan *model.AuditEventEdge, 1)
		out := tapEdges(ctx, in)
		in <- edge
		resp := f.InterceptResponse(ctx, func(context.Context) *graphql.Response {
			if <-out != edge {
				t.Fatal("rendered another event")
			}
			renders++
			return &graphql.Response{Data: []byte(data), Errors: errs}
		})
		return string(resp.Data)
	}
	steps := []struct {
		key           byte
		data          string
		errs          gqlerror.List
		want          string
		renderedTotal int
	}{
		{1, `{"a":1}`, nil, `{"a":1}`, 1},
		{1, `{"a":2}`, nil, `{"a":1}`, 1}, // shared: not rendered again
		{2, `{"b":1}`, nil, `{"b":1}`, 2},
		{3, `{"c":1}`, gqlerror.List{{Message: "x"}}, `{"c":1}`, 3},
		{3, `{"c":2}`, nil, `{"c":2}`, 4}, // the failed one was not kept
	}
	for i, s := range steps {
		if got := deliver(fanoutKey{s.key}, s.data, s.errs); got != s.want || renders != s.renderedTotal {
			t.Errorf("step %d: got %s after %d renderings, want %s after %d", i, got, renders, s.want, s.renderedTotal)
		}
	}
}

// TestFanoutEnd: when the feed's channel closes, gqlgen sees its own
// channel close and ends the stream.
func TestFanoutEnd(t *testing.T) {
	f := newFanout()
	ctx := context.WithValue(context.Background(), fanoutTapKey{}, &fanoutTap{})
	in := make(chan *model.AuditEventEdge)
	out := tapEdges(ctx, in)
	close(in)
	resp := f.InterceptResponse(ctx, func(context.Context) *graphql.Response {
		if _, open := <-out; open {
			t.Error("gqlgen's channel still open")
		}
		return nil
	})
	if resp != nil {
		t.Errorf("response %+v at the end, want nil", resp)
	}
}
