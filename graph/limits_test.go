package graph_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/twofactor/service/graph"
	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/models"
)

// nestedType is an introspection query of the given depth: __type, then
// ofType depth-2 times, then name.
func nestedType(depth int) string {
	return `{ __type(name: "User") { ` + strings.Repeat("ofType { ", depth-2) + "name" + strings.Repeat(" }", depth-2) + " } }"
}

// nestedSchema is `{ auditLog { edges { node { actor { id } } } } }` cut
// or padded with __typename to the given depth (5 at most).
func nestedSchema(depth int) string {
	fields := []string{"auditLog", "edges", "node", "actor"}[:depth-1]
	return "{ " + strings.Join(fields, " { ") + " { __typename" + strings.Repeat(" }", depth)
}

// standardIntrospection is graphql-js getIntrospectionQuery() with every
// option on, as TestNodeIntrospection checks.
func standardIntrospection(t *testing.T) string {
	t.Helper()
	q, err := os.ReadFile(filepath.Join("testdata", "introspection.graphql"))
	if err != nil {
		t.Fatal(err)
	}
	return string(q)
}

// depthCase is a query and the limit it breaks ("" for none).
type depthCase struct {
	name, query, over string
}

func TestDepthLimit(t *testing.T) {
	t.Parallel()
	co := testenv.Company(t)
	// The schema is only 5 deep, so schema depth is checked under a limit of 4.
	low := apptest.Start(t, func(o *app.Options) { o.Limits = graph.Limits{MaxComplexity: 5000, MaxDepth: 4} })
	runDepthCases(t, low.Admin(t, co), "4", []depthCase{
		{"schema at the limit", nestedSchema(4), ""},
		{"schema one over", nestedSchema(5), "4"},
		{"through a fragment", `{ auditLog { ...E } } fragment E on AuditEventConnection { edges { node { actor { id } } } }`, "4"},
		{"through an inline fragment", `{ auditLog { edges { ... on AuditEventEdge { node { actor { id } } } } } }`, "4"},
		{"introspection does not count", nestedType(16), ""},
		{"introspection beside a query", `{ me { id } __schema { types { fields { type { ofType { name } } } } } }`, ""},
	})

	// Introspection has its own limit, for any limit of the schema's.
	admin := apptest.Start(t).Admin(t, co)
	// The deepest fragment: 5 levels of ofType, spread 11 levels down.
	fragment := `fragment Deep on __Type { ofType { ofType { ofType { ofType { ofType { name } } } } } }`
	viaFragment := nestedTypeAround(10, "...Deep") + " " + fragment
	inline := nestedTypeAround(10, `... on __Type { ofType { ofType { ofType { ofType { ofType { name } } } } } }`)
	runDepthCases(t, admin, "16", []depthCase{
		{"standard introspection query", standardIntrospection(t), ""},
		{"introspection at the limit", nestedType(16), ""},
		{"introspection one over", nestedType(17), "16"},
		{"introspection far over", nestedType(30), "16"},
		{"nested far over, refused before validation", nestedType(200), "32"},
		{"introspection through a fragment", viaFragment, "16"},
		{"introspection through an inline fragment", inline, "16"},
		{"introspection through a fragment on Query", `{ ...Q } fragment Q on Query { ` + strings.TrimPrefix(nestedType(17), "{ "), "16"},
		{"__typename", `{ __typename }`, ""},
	})
}

// nestedTypeAround is __type with n levels of ofType around inner.
func nestedTypeAround(n int, inner string) string {
	return `{ __type(name: "User") { ` + strings.Repeat("ofType { ", n) + inner + strings.Repeat(" }", n) + " } }"
}

func runDepthCases(t *testing.T, c *apptest.Client, limit string, cases []depthCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := c.Do(t, tc.query, nil)
			if tc.over == "" {
				if r.Status != http.StatusOK || len(r.Errors) > 0 {
					t.Fatalf("status %d errors %+v", r.Status, r.Errors)
				}
				return
			}
			if len(r.Errors) != 1 || r.Errors[0].Code() != "DEPTH_LIMIT_EXCEEDED" || !strings.Contains(r.Errors[0].Message, tc.over) {
				t.Fatalf("status %d errors %+v, want one DEPTH_LIMIT_EXCEEDED naming %s", r.Status, r.Errors, tc.over)
			}
			if len(r.Data) != 0 && string(r.Data) != "null" {
				t.Errorf("data = %s, want none", r.Data)
			}
		})
	}
}

func TestComplexityLimit(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	heavyAudit := `auditLog(first: 100) { edges { cursor node { ` + eventFields + ` } } ` + pageInfoFields + ` }`
	heavyUsers := `users(first: 100) { edges { cursor node { ` + userFields + ` } } ` + pageInfoFields + ` }`
	aliases := func(n int, field string) string {
		var b strings.Builder
		b.WriteString("{ ")
		for i := range n {
			fmt.Fprintf(&b, "a%d: %s ", i, field)
		}
		b.WriteString("}")
		return b.String()
	}

	cases := []struct {
		name, query string
		ok          bool
	}{
		{"one heavy audit page", "{ " + heavyAudit + " }", true},
		{"one heavy users page", "{ " + heavyUsers + " }", true},
		{"default audit pages", aliases(10, `auditLog { edges { node { id } } }`), true},
		{"standard introspection query", standardIntrospection(t), true},
		{"heavy audit pages by alias", aliases(3, heavyAudit), false},
		{"many heavy audit pages by alias", aliases(40, heavyAudit), false},
		{"heavy users pages by alias", aliases(4, heavyUsers), false},
		{"huge first", `{ auditLog(first: 1000000) { edges { node { id } } } }`, false},
		{"huge last", `{ auditLog(last: 1000000) { edges { node { id } } } }`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := admin.Do(t, tc.query, nil)
			if tc.ok {
				if r.Status != http.StatusOK || len(r.Errors) > 0 {
					t.Fatalf("status %d errors %+v", r.Status, r.Errors)
				}
				return
			}
			if len(r.Errors) != 1 || r.Errors[0].Code() != "COMPLEXITY_LIMIT_EXCEEDED" || !strings.Contains(r.Errors[0].Message, "5000") {
				t.Fatalf("status %d errors %+v, want one COMPLEXITY_LIMIT_EXCEEDED naming the limit", r.Status, r.Errors)
			}
			if len(r.Data) != 0 && string(r.Data) != "null" {
				t.Errorf("data = %s, want none", r.Data)
			}
		})
	}

	// A refused operation runs nothing, mutations included.
	low := apptest.Start(t, func(o *app.Options) { o.Limits = graph.Limits{MaxComplexity: 40, MaxDepth: 12} })
	lowAdmin := low.Admin(t, co)
	var b strings.Builder
	b.WriteString("mutation { ")
	for i := range 5 {
		fmt.Fprintf(&b, `c%d: createUser(input: {id: "c%d"}) { user { `+userFields+` } userErrors { field code message } } `, i, i)
	}
	b.WriteString("}")
	r := lowAdmin.Do(t, b.String(), nil)
	if len(r.Errors) != 1 || r.Errors[0].Code() != "COMPLEXITY_LIMIT_EXCEEDED" {
		t.Fatalf("5 createUser under a limit of 40: %+v", r.Errors)
	}
	// Introspection fields cost like any other (gqlgen's count made a
	// __schema subtree free, so 2,000 of them passed).
	if r := lowAdmin.Do(t, standardIntrospection(t), nil); len(r.Errors) != 1 || r.Errors[0].Code() != "COMPLEXITY_LIMIT_EXCEEDED" {
		t.Errorf("standard introspection query under a limit of 40: %+v", r.Errors)
	}
	for _, m := range []any{&models.User{}, &models.AuditEvent{}} {
		var n int64
		if err := low.Backends.DB.Model(m).Where("company_id = ?", co).Count(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("a refused operation wrote %d %T rows", n, m)
		}
	}
}

// body posts raw bytes to /query as admin of a fresh company.
func postBody(t *testing.T, s *apptest.Server, contentType string, body io.Reader) httpResult {
	t.Helper()
	return send(t, http.MethodPost, s.URL+"/query", map[string]string{
		"Content-Type":  contentType,
		"Authorization": "Bearer " + s.Admin(t, testenv.Company(t)).Token,
		"Expect":        "100-continue",
	}, body)
}

// refusedByReset posts body and reports whether the server cut the
// connection while the client was still sending; otherwise it checks
// nothing (the caller posts again and checks the answer).
func refusedByReset(t *testing.T, s *apptest.Server, body io.Reader) bool {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+"/query", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.Admin(t, testenv.Company(t)).Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if msg := err.Error(); strings.Contains(msg, "connection reset") || strings.Contains(msg, "broken pipe") {
			return true
		}
		t.Fatalf("chunked megabyte: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked megabyte: status %d, want 413", resp.StatusCode)
	}
	return true
}

// onlyReader hides the length of a reader, so the client sends the body
// chunked and the server cannot refuse it by Content-Length.
type onlyReader struct{ io.Reader }

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	const limit = 64 << 10
	sized := func(n int) []byte {
		b := []byte(`{"query":"{ me { id } }"}`)
		return append(b, bytes.Repeat([]byte(" "), n-len(b))...) // JSON allows trailing spaces
	}

	cases := []struct {
		name    string
		body    io.Reader
		tooLong bool
	}{
		{"at the limit", bytes.NewReader(sized(limit)), false},
		{"one byte over", bytes.NewReader(sized(limit + 1)), true},
		{"a megabyte", bytes.NewReader(sized(1 << 20)), true},
		{"chunked at the limit", onlyReader{bytes.NewReader(sized(limit))}, false},
		{"chunked one byte over", onlyReader{bytes.NewReader(sized(limit + 1))}, true},
		{"chunked megabyte", onlyReader{bytes.NewReader(sized(1 << 20))}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "chunked megabyte" {
				// The server stops reading at the limit and closes, so the
				// client may see the reset before the 413: both refuse.
				if refusedByReset(t, s, tc.body) {
					return
				}
				tc.body = onlyReader{bytes.NewReader(sized(1 << 20))}
			}
			h := postBody(t, s, "application/json", tc.body)
			r := h.gql(t)
			if !tc.tooLong {
				if r.Status != http.StatusOK || len(r.Errors) > 0 || string(r.Data) != `{"me":null}` {
					t.Fatalf("status %d body %.200s", h.Status, h.Body)
				}
				return
			}
			if r.Status != http.StatusRequestEntityTooLarge || len(r.Errors) != 1 || r.Errors[0].Code() != "REQUEST_TOO_LARGE" || r.Errors[0].Message == "" {
				t.Fatalf("status %d body %.200s, want 413 REQUEST_TOO_LARGE", h.Status, h.Body)
			}
		})
	}

	// A large body is refused before authentication.
	h := send(t, http.MethodPost, s.URL+"/query", map[string]string{"Content-Type": "application/json", "Expect": "100-continue"},
		bytes.NewReader(sized(limit+1)))
	if h.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("unauthenticated large body: status %d", h.Status)
	}
}

func TestMalformedRequests(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	cases := []struct {
		name, contentType, body string
	}{
		{"not JSON", "application/json", "this is not json"},
		{"truncated JSON", "application/json", `{"query":"{ me { id } }"`},
		{"empty body", "application/json", ""},
		{"JSON array", "application/json", `[1,2,3]`},
		{"query not a string", "application/json", `{"query": 5}`},
		{"variables not an object", "application/json", `{"query":"{ me { id } }","variables":"x"}`},
		{"binary", "application/json", "\x00\xff\xfe\x01"},
		{"text/plain", "text/plain", `{"query":"{ me { id } }"}`},
		{"no content type", "", `{"query":"{ me { id } }"}`},
		{"empty query", "application/json", `{"query":""}`},
		{"GraphQL syntax error", "application/json", `{"query":"{ me { id "}`},
		{"unknown field", "application/json", `{"query":"{ nope }"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := postBody(t, s, tc.contentType, strings.NewReader(tc.body))
			if h.Status < 400 || h.Status >= 500 {
				t.Errorf("status %d, want a 4xx; body %.300s", h.Status, h.Body)
			}
			r := h.gql(t)
			if len(r.Errors) == 0 || r.Errors[0].Message == "" {
				t.Errorf("no error message: %s", h.Body)
			}
			if len(r.Data) != 0 && string(r.Data) != "null" {
				t.Errorf("data = %s", r.Data)
			}
		})
	}
	// The server is still up and answering.
	if h := postBody(t, s, "application/json", strings.NewReader(`{"query":"{ me { id } }"}`)); h.Status != http.StatusOK {
		t.Errorf("after malformed requests: %d %s", h.Status, h.Body)
	}
	// Mutations are not allowed over GET.
	admin := s.Admin(t, testenv.Company(t))
	h := send(t, http.MethodGet, s.URL+`/query?query=mutation{createUser(input:{id:"g"}){user{id}}}`,
		map[string]string{"Authorization": "Bearer " + admin.Token}, nil)
	if r := h.gql(t); len(r.Errors) == 0 {
		t.Errorf("mutation over GET: %d %s", h.Status, h.Body)
	}
	if got := listUsers(t, admin, nil); len(got.Edges) != 0 {
		t.Errorf("mutation over GET created %v", got.ids())
	}
}

func TestOperationalEndpoints(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)

	for _, path := range []string{"/healthz", "/readyz"} {
		h := send(t, http.MethodGet, s.URL+path, nil, nil)
		var body struct{ Status string }
		if h.Status != http.StatusOK || json.Unmarshal(h.Body, &body) != nil || body.Status != "ok" {
			t.Errorf("GET %s = %d %s", path, h.Status, h.Body)
		}
	}
	if h := send(t, http.MethodGet, s.URL+"/", nil, nil); h.Status != http.StatusOK || !strings.Contains(string(h.Body), "/query") {
		t.Errorf("playground: %d", h.Status)
	}

	// One success, one FORBIDDEN, one NOT_FOUND, one 401.
	getSettings(t, s.Admin(t, co))
	wantCode(t, s.Service(t, co).Do(t, qSettings, nil), "FORBIDDEN")
	wantCode(t, s.Admin(t, co).Do(t, qUser, map[string]any{"id": "nobody"}), "NOT_FOUND")
	postQuery(t, s, "")

	// /metrics is not on the public port: main serves it on METRICS_ADDR.
	ms := httptest.NewServer(s.Metrics.Handler())
	defer ms.Close()
	h := send(t, http.MethodGet, ms.URL+"/metrics", nil, nil)
	if h.Status != http.StatusOK {
		t.Fatalf("GET /metrics = %d", h.Status)
	}
	text := string(h.Body)
	for _, re := range []string{
		`(?m)^twofactor_http_requests_total\{method="POST",route="/query",status="200"\} [1-9]`,
		`(?m)^twofactor_http_requests_total\{method="POST",route="/query",status="401"\} 1$`,
		`(?m)^twofactor_http_requests_total\{method="GET",route="/healthz",status="200"\} 1$`,
		`(?m)^twofactor_graphql_errors_total\{code="FORBIDDEN"\} 1$`,
		`(?m)^twofactor_graphql_errors_total\{code="NOT_FOUND"\} 1$`,
		`(?m)^twofactor_http_request_duration_seconds_count\{route="/query"\} [1-9]`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("/metrics has no line matching %s", re)
		}
	}
	if strings.Contains(text, s.Admin(t, co).Token[:20]) {
		t.Error("/metrics shows a token")
	}
}
