package graph

import (
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
)

// requestGate's decoding fails exactly where gqlgen's does, hostile
// variables included, though it does not build them.
func TestGateDecodesLikeGqlgen(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		`{"query":"{ me { id } }"}`,
		`{"query":"{ me { id } }","variables":null}`,
		`{"query":"{ me { id } }","variables":{}}`,
		`{"query":"{ me { id } }","variables": {"a":{"b":[1,2,{"c":null}]},"n":1e999}}`,
		`{"query":"{ me { id } }","variables":[]}`,
		`{"query":"{ me { id } }","variables":[{"a":1}]}`,
		`{"query":"{ me { id } }","variables":"{}"}`,
		`{"query":"{ me { id } }","variables":1}`,
		`{"query":"{ me { id } }","variables":true}`,
		`{"query":"{ me { id } }","variables":{"a":}}`,
		`{"query":"{ me { id } }","variables":{"a":1}`,
		`{"query":"{ me { id } }","variables":{},"Variables":[1]}`,
		`{"query":"{ me { id } }","VARIABLES":"x"}`,
		`{"query":"{ me { id } }","variables":{"a":"\ud800"}}`,
		`{"query":"{ me { id } }","variables":{"a":1},"variables":null}`,
		`{"query":5,"variables":{}}`,
		`{"operationName":["x"],"query":"{ me { id } }"}`,
		`{"extensions":[],"query":"{ me { id } }"}`,
		`{"query":"{ me { id } }"} trailing`,
		`[{"query":"{ me { id } }"}]`,
		`null`,
	} {
		var want graphql.RawParams
		wantErr := decodeJSON(strings.NewReader(body), &want) != nil
		var got gateParams
		if gotErr := decodeJSON(strings.NewReader(body), &got) != nil; gotErr != wantErr {
			t.Errorf("%s: gate error %v, gqlgen error %v", body, gotErr, wantErr)
		}
		if !wantErr && (got.Query != want.Query || len(got.Extensions) != len(want.Extensions)) {
			t.Errorf("%s: gate read %+v, gqlgen %+v", body, got, want)
		}
	}
}
