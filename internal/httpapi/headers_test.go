package httpapi_test

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/twofactor/service/graph"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/httpapi"
	"github.com/twofactor/service/internal/metrics"
	"github.com/twofactor/service/web"
)

var safeID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// noRedirect shows a redirect instead of following it.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// Finding 11: every response, errors and redirects included, carries an
// X-Request-Id and the security headers; API answers are not cached; the
// pages keep their own CSP; HEAD works wherever GET does.
func TestErrorsAndHeaders(t *testing.T) {
	s := server(t, func(c *httpapi.Config) { c.JWKS = []byte(`{"keys":[]}`) })
	cases := []struct {
		method, path, token string
		status              int
		page                bool // a page or an asset, not JSON; its own CSP when 200
	}{
		{"GET", "/healthz", "", 200, false},
		{"HEAD", "/healthz", "", 200, false},
		{"HEAD", "/readyz", "", 200, false},
		{"GET", "/no/such/route", "", 404, false},
		{"POST", "/healthz", "", 405, false},
		{"DELETE", "/", "", 405, false},
		{"GET", "/admin", "", 301, true},
		{"GET", "/", "", 200, true},
		{"HEAD", "/", "", 200, true},
		{"HEAD", "/admin/", "", 200, true},
		{"GET", "/assets/vendor/dist/graphql-ws.min.js", "", 200, true},
		{"HEAD", "/assets/vendor/dist/graphql-ws.min.js", "", 200, true},
		{"GET", "/assets/nothing.js", "", 404, true},
		{"POST", "/query", "", 401, false},
		{"POST", "/query", "good", 200, false},
		{"GET", "/schema.graphql", "", 401, false},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path+" "+tc.token, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, s.URL+tc.path, strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			if tc.token != "" {
				req.Header.Set("Authorization", "Bearer "+tc.token)
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			checkEdgeHeaders(t, resp.Header, tc.page && tc.status == http.StatusOK, !tc.page)
			if tc.status == 405 && !strings.Contains(resp.Header.Get("Allow"), "GET") {
				t.Errorf("405 without Allow: %q", resp.Header.Get("Allow"))
			}
		})
	}
	resp, _ := do(t, http.MethodGet, s.URL+"/.well-known/jwks.json", nil, "")
	if cc := resp.Header.Get("Cache-Control"); !strings.HasPrefix(cc, "public") {
		t.Errorf("JWKS Cache-Control %q: the route's own must win", cc)
	}
}

// checkEdgeHeaders checks the headers every response carries; ownCSP is
// a page's or an asset's policy, api an API answer's JSON and no-store.
func checkEdgeHeaders(t *testing.T, h http.Header, ownCSP, api bool) {
	t.Helper()
	for k, want := range map[string]string{
		"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if id := h.Get("X-Request-Id"); !safeID.MatchString(id) {
		t.Errorf("X-Request-Id %q", id)
	}
	csp := h.Get("Content-Security-Policy")
	switch {
	case ownCSP && csp != web.ContentSecurityPolicy:
		t.Errorf("page CSP %q: the page's own policy must win", csp)
	case !ownCSP && csp != httpapi.DefaultContentSecurityPolicy:
		t.Errorf("CSP %q, want the default", csp)
	}
	if api && (h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store") {
		t.Errorf("Content-Type %q, Cache-Control %q: want JSON, no-store", h.Get("Content-Type"), h.Get("Cache-Control"))
	}
}

// The request id: a caller's short plain id is kept, anything else is
// replaced; the request's log line carries the same id.
func TestRequestID(t *testing.T) {
	logs := &apptest.Buffer{}
	s := server(t, func(c *httpapi.Config) { c.Logger = slog.New(slog.NewJSONHandler(logs, nil)) })
	cases := []struct {
		name, sent string
		kept       bool
	}{
		{"none", "", false},
		{"plain", "trace-abc.123_X", true},
		{"64 characters", strings.Repeat("a", 64), true},
		{"65 characters", strings.Repeat("a", 65), false},
		{"a space", "a b", false},
		{"a slash", "a/b", false},
		{"a quote", `a"b`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.sent != "" {
				h["X-Request-Id"] = tc.sent
			}
			resp, _ := do(t, http.MethodGet, s.URL+"/no/such/route", h, "")
			id := resp.Header.Get("X-Request-Id")
			if !safeID.MatchString(id) || (id == tc.sent) != tc.kept {
				t.Fatalf("sent %q, got %q (kept: want %v)", tc.sent, id, tc.kept)
			}
			if !loggedRequest(t, logs, id) {
				t.Errorf("no request log line with request_id %q:\n%s", id, logs.String())
			}
		})
	}
}

// loggedRequest reports whether a "request" log line names id.
func loggedRequest(t *testing.T, logs *apptest.Buffer, id string) bool {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var line struct {
			Msg       string
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "request" && line.RequestID == id {
			return true
		}
	}
	return false
}

// Finding 11: a 401 names a reason from a closed set, never the JWT
// library's words (which quoted "claims.role of type auth.Role").
func TestUnauthenticatedMessages(t *testing.T) {
	secret := []byte("headers-test-secret-headers-test-secret-0123")
	tokens, err := auth.NewTokens(secret)
	if err != nil {
		t.Fatal(err)
	}
	s := server(t, func(c *httpapi.Config) { c.Tokens = tokens })
	sign := func(key []byte, claims jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := jwt.MapClaims{"sub": "u", "company": "c", "role": "admin", "exp": time.Now().Add(time.Hour).Unix()}
	withClaim := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range good {
			c[kk] = vv
		}
		c[k] = v
		return c
	}
	cases := []struct {
		name, header, want string
	}{
		{"no token", "", "send Authorization: Bearer <token>"},
		{"expired", "Bearer " + sign(secret, withClaim("exp", time.Now().Add(-time.Hour).Unix())), "token expired"},
		{"other key", "Bearer " + sign([]byte("another-secret-another-secret-0123456789"), good), "bad signature"},
		{"not a JWT", "Bearer abc", "malformed token"},
		{"role of the wrong type", "Bearer " + sign(secret, withClaim("role", 5)), ""},
		{"unknown role", "Bearer " + sign(secret, withClaim("role", "root")), ""},
	}
	closed := []string{"token expired", "bad signature", "malformed token", "invalid token"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"Content-Type": "application/json"}
			if tc.header != "" {
				h["Authorization"] = tc.header
			}
			resp, body := do(t, http.MethodPost, s.URL+"/query", h, `{"query":"{ __typename }"}`)
			var out struct {
				Errors []struct {
					Message    string
					Extensions struct{ Code string }
				}
			}
			if err := json.Unmarshal([]byte(body), &out); err != nil || resp.StatusCode != 401 ||
				len(out.Errors) != 1 || out.Errors[0].Extensions.Code != "UNAUTHENTICATED" {
				t.Fatalf("status %d, body %s", resp.StatusCode, body)
			}
			msg := out.Errors[0].Message
			if tc.want != "" && msg != tc.want {
				t.Errorf("message %q, want %q", msg, tc.want)
			}
			if tc.want == "" && !slices.Contains(closed, msg) {
				t.Errorf("message %q is not one of %q", msg, closed)
			}
		})
	}
}

// Finding 11: an INTERNAL error carries the request id, the one in the
// X-Request-Id header: from GraphQL (a resolver whose services are missing
// panics, which gqlgen turns into INTERNAL) and from a panic outside it.
func TestInternalErrorRequestID(t *testing.T) {
	gql := graph.NewHandler(&graph.Resolver{Logger: slog.New(slog.DiscardHandler)}, graph.DefaultLimits,
		metrics.New(), graph.WebsocketOptions{})
	s := server(t, func(c *httpapi.Config) { c.GraphQL = gql })
	wantInternalID(t, s.URL, `{"query":"{ twoFactorSettings { updatedAt } }"}`)
	wantInternalID(t, server(t, nil).URL, "panic") // echo panics
}

func wantInternalID(t *testing.T, base, body string) {
	t.Helper()
	resp, raw := do(t, http.MethodPost, base+"/query", map[string]string{
		"Content-Type": "application/json", "Authorization": "Bearer good", "X-Request-Id": "req-internal-1",
	}, body)
	var out struct {
		Errors []struct {
			Extensions struct {
				Code      string
				RequestID string `json:"requestId"`
			}
		}
	}
	if err := json.Unmarshal([]byte(raw), &out); err != nil || len(out.Errors) == 0 {
		t.Fatalf("status %d, body %s", resp.StatusCode, raw)
	}
	e := out.Errors[0].Extensions
	if e.Code != "INTERNAL" || e.RequestID != "req-internal-1" || resp.Header.Get("X-Request-Id") != e.RequestID {
		t.Errorf("extensions %+v, X-Request-Id %q: want INTERNAL with the request id", e, resp.Header.Get("X-Request-Id"))
	}
}
