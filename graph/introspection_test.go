package graph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// Admins and services may introspect; users get FORBIDDEN, whichever way
// the query reaches __schema or __type. __typename is for everyone.
func TestIntrospectionRoles(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	clients := map[string]*apptest.Client{
		"admin": s.Admin(t, co), "service": s.Service(t, co), "user": s.User(t, co, "u1"),
	}
	queries := []struct {
		name, query string
		introspects bool
	}{
		{"__schema", `{ __schema { queryType { name } } }`, true},
		{"__type", `{ __type(name: "User") { name } }`, true},
		{"through a fragment", `{ ...Q } fragment Q on Query { __schema { types { name } } }`, true},
		{"through an inline fragment", `{ ... on Query { __type(name: "User") { name } } }`, true},
		{"beside a query", `{ me { id } __schema { queryType { name } } }`, true},
		{"standard introspection query", standardIntrospection(t), true},
		{"__typename", `{ __typename me { __typename } }`, false},
	}
	for role, c := range clients {
		for _, q := range queries {
			t.Run(role+"/"+q.name, func(t *testing.T) {
				r := c.Do(t, q.query, nil)
				if role == "user" && q.introspects {
					wantCode(t, r, "FORBIDDEN")
					if len(r.Data) != 0 && string(r.Data) != "null" {
						t.Errorf("data = %s, want none", r.Data)
					}
					return
				}
				if r.Status != http.StatusOK || len(r.Errors) > 0 || len(r.Data) < 3 {
					t.Fatalf("status %d data %s errors %+v", r.Status, r.Data, r.Errors)
				}
			})
		}
	}
}

// No caller is told field, argument, type or enum value names it did not
// ask for, whatever its role. Without a token nothing is validated at all.
func TestNoSuggestions(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	misspelled := []string{
		`{ me { emial } }`,
		`{ twoFactorSetings { updatedAt } }`,
		`{ me }`,
		`{ users(frist: 1) { edges { cursor } } }`,
		`query($f: AuditLogFiltr) { auditLog(filter: $f) { edges { cursor } } }`,
		`mutation { updateGeneralSettings(input: {deliveryMethod: EMAIL_ONY}) { userErrors { code } } }`,
		`mutation { updateGeneralSettings(input: {contactPersn: null}) { userErrors { code } } }`,
	}
	clients := map[string]*apptest.Client{
		"user": s.User(t, co, "u1"), "admin": s.Admin(t, co), "none": {URL: s.URL + "/query"},
	}
	for role, c := range clients {
		for _, q := range misspelled {
			t.Run(role+"/"+q, func(t *testing.T) {
				body, err := json.Marshal(map[string]any{"query": q})
				if err != nil {
					t.Fatal(err)
				}
				h := map[string]string{"Content-Type": "application/json"}
				if c.Token != "" {
					h["Authorization"] = "Bearer " + c.Token
				}
				res := send(t, http.MethodPost, c.URL, h, bytes.NewReader(body))
				if strings.Contains(strings.ToLower(string(res.Body)), "did you mean") {
					t.Fatalf("suggestion given: %s", res.Body)
				}
				want, status := "GRAPHQL_VALIDATION_FAILED", http.StatusUnprocessableEntity
				if role == "none" {
					want, status = "UNAUTHENTICATED", http.StatusUnauthorized
				}
				r := res.gql(t)
				if r.Status != status || len(r.Errors) == 0 || r.Errors[0].Code() != want || r.Errors[0].Message == "" {
					t.Fatalf("status %d body %s, want %d %s", r.Status, res.Body, status, want)
				}
			})
		}
	}
}

// GET /schema.graphql serves schema.graphqls as it is to admins and
// services, in the GraphQL error shape to anyone else.
func TestSchemaSDL(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	want, err := os.ReadFile("../schema.graphqls")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, method, token string
		status              int
		code                string
	}{
		{"admin", http.MethodGet, s.Admin(t, co).Token, 200, ""},
		{"service", http.MethodGet, s.Service(t, co).Token, 200, ""},
		{"user", http.MethodGet, s.User(t, co, "u1").Token, 403, "FORBIDDEN"},
		{"no token", http.MethodGet, "", 401, "UNAUTHENTICATED"},
		{"bad token", http.MethodGet, "not-a-token", 401, "UNAUTHENTICATED"},
		{"POST", http.MethodPost, s.Admin(t, co).Token, 405, "BAD_REQUEST"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.token != "" {
				h["Authorization"] = "Bearer " + tc.token
			}
			res := send(t, tc.method, s.URL+"/schema.graphql", h, nil)
			if res.Status != tc.status {
				t.Fatalf("status %d, want %d: %.300s", res.Status, tc.status, res.Body)
			}
			if tc.code == "" {
				if ct := res.Header.Get("Content-Type"); ct != "application/graphql; charset=utf-8" {
					t.Errorf("Content-Type %q", ct)
				}
				if !bytes.Equal(res.Body, want) {
					t.Errorf("body differs from schema.graphqls (%d bytes, want %d)", len(res.Body), len(want))
				}
				return
			}
			if r := res.gql(t); len(r.Errors) != 1 || r.Errors[0].Code() != tc.code || r.Errors[0].Message == "" {
				t.Errorf("body %s, want one %s", res.Body, tc.code)
			}
			if bytes.Contains(res.Body, []byte("twoFactorSettings")) {
				t.Error("a refusal shows the schema")
			}
		})
	}
}

// introspectLine is what introspect.mjs prints.
type introspectLine struct {
	QueryFields       []string `json:"queryFields"`
	SchemaDescription *string  `json:"schemaDescription"`
	SameAsSDL         bool     `json:"sameAsSDL"`
	FirstDifference   any      `json:"firstDifference"`
	Query             string   `json:"query"`
	Error             string   `json:"error"`
}

// graphql-js, as GraphQL tools use it, introspects with an admin or a
// service token, and the client schema it builds is the SDL's.
func TestNodeIntrospection(t *testing.T) {
	t.Parallel()
	dir := apptest.NodeClient(t)
	s := apptest.Start(t)
	co := testenv.Company(t)
	for role, c := range map[string]*apptest.Client{"admin": s.Admin(t, co), "service": s.Service(t, co)} {
		t.Run(role, func(t *testing.T) {
			got := runIntrospect(t, dir, s.URL, c.Token)
			if got.Error != "" || !got.SameAsSDL {
				t.Fatalf("introspect.mjs: error %q, same as SDL %v (first difference %v)", got.Error, got.SameAsSDL, got.FirstDifference)
			}
			if !slices.Contains(got.QueryFields, "twoFactorSettings") {
				t.Errorf("Query fields %v lack twoFactorSettings", got.QueryFields)
			}
			if got.SchemaDescription == nil || !strings.Contains(*got.SchemaDescription, "Two-factor") {
				t.Errorf("schema description %v", got.SchemaDescription)
			}
			if got.Query != standardIntrospection(t) {
				t.Error("graph/testdata/introspection.graphql is not graphql-js's getIntrospectionQuery(); regenerate it")
			}
		})
	}
	// The same script as a user fails: no introspection.
	if got := runIntrospect(t, dir, s.URL, s.User(t, co, "u1").Token); !strings.Contains(got.Error, "FORBIDDEN") {
		t.Errorf("as a user: %+v", got)
	}
}

func runIntrospect(t *testing.T, dir, url, token string) introspectLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "introspect.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "URL="+url, "TOKEN="+token)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var line introspectLine
	if jerr := json.Unmarshal(out, &line); jerr != nil {
		t.Fatalf("introspect.mjs: %v (%v); stdout %q; stderr %s", jerr, err, out, stderr.String())
	}
	if (err != nil) != (line.Error != "") {
		t.Fatalf("introspect.mjs exited with %v but printed %+v; stderr %s", err, line, stderr.String())
	}
	return line
}

// Introspection answers with the whole schema however small the query, so
// an operation may hold one __schema and a few __type, counted through
// aliases and fragments (issue 7: "introspection stays bounded by its own
// shape"; the review's 2,000 aliased __schema made 95 MB).
func TestIntrospectionBudget(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	types := func(n int) string { return numbered(n, "{", ` t%d: __type(name: "User") { name }`, "}") }
	cases := []struct {
		name, query string
		ok          bool
	}{
		{"standard introspection query", standardIntrospection(t), true},
		{"__schema and 10 __type", strings.Replace(types(10), "{", "{ __schema { queryType { name } }", 1), true},
		{"two aliased __schema", `{ a: __schema { queryType { name } } b: __schema { queryType { name } } }`, false},
		{"__schema twice by one name, merged", `{ __schema { queryType { name } } __schema { types { name } } }`, true},
		{"aliased __schema through two fragments", `{ ...A ...B } fragment A on Query { a: __schema { queryType { name } } } fragment B on Query { b: __schema { queryType { name } } }`, false},
		{"one __schema through doubled fragments", doubling(3, schemaLeaf), true},
		{"two aliased __schema in doubled fragments", doubling(3, "a: "+schemaLeaf+" b: "+schemaLeaf), false},
		{"11 __type", types(11), false},
	}
	for role, c := range map[string]*apptest.Client{"admin": s.Admin(t, co), "service": s.Service(t, co)} {
		for _, tc := range cases {
			t.Run(role+"/"+tc.name, func(t *testing.T) {
				r := c.Do(t, tc.query, nil)
				if tc.ok {
					if len(r.Errors) > 0 || len(r.Data) < 3 {
						t.Fatalf("errors %+v data %.100s", r.Errors, r.Data)
					}
					return
				}
				wantCode(t, r, "INTROSPECTION_LIMIT_EXCEEDED")
				if msg := r.Errors[0].Message; !strings.Contains(msg, "1 __schema") || !strings.Contains(msg, "10 __type") {
					t.Errorf("message %q does not name the limits", msg)
				}
			})
		}
	}
}
