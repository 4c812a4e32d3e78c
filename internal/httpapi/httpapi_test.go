package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/httpapi"
	"github.com/twofactor/service/internal/metrics"
)

// verifier accepts the token "good" as one admin, and "service" and
// "user" as callers of those roles.
type verifier struct{}

func (verifier) Verify(token string) (auth.Caller, error) {
	switch token {
	case "good":
		return auth.Caller{UserID: "u", Company: "c", Role: auth.RoleAdmin}, nil
	case "service", "user":
		return auth.Caller{UserID: token, Company: "c", Role: auth.Role(token)}, nil
	}
	return auth.Caller{}, auth.ErrUnauthenticated
}

// echo answers with the caller and the body length, or panics on "panic".
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if string(body) == "panic" {
		panic("boom")
	}
	c, err := auth.FromContext(r.Context())
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"caller": c.UserID, "authErr": err != nil, "len": len(body)})
})

func server(t *testing.T, tweak func(*httpapi.Config)) *httptest.Server {
	t.Helper()
	cfg := httpapi.Config{
		GraphQL: echo, Tokens: verifier{}, Metrics: metrics.New(),
		Logger: slog.New(slog.DiscardHandler),
		Ready:  func(context.Context) error { return nil },
	}
	if tweak != nil {
		tweak(&cfg)
	}
	s := httptest.NewServer(httpapi.New(cfg))
	t.Cleanup(s.Close)
	return s
}

func do(t *testing.T, method, url string, header map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

func TestCORS(t *testing.T) {
	preflight := func(s *httptest.Server, origin string) string {
		resp, _ := do(t, http.MethodOptions, s.URL+"/query", map[string]string{
			"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type",
		}, "")
		return resp.Header.Get("Access-Control-Allow-Origin")
	}
	actual := func(s *httptest.Server, origin string) string {
		resp, _ := do(t, http.MethodPost, s.URL+"/query", map[string]string{"Origin": origin, "Authorization": "Bearer good"}, "{}")
		return resp.Header.Get("Access-Control-Allow-Origin")
	}

	// No ALLOWED_ORIGINS: no browser origin may call the API.
	none := server(t, nil)
	for _, o := range []string{"https://evil.example", "http://localhost:3000"} {
		if got := preflight(none, o); got != "" {
			t.Errorf("no origins configured: preflight from %s allowed (%q)", o, got)
		}
		if got := actual(none, o); got != "" {
			t.Errorf("no origins configured: request from %s allowed (%q)", o, got)
		}
	}

	some := server(t, func(c *httpapi.Config) { c.AllowedOrigins = []string{"https://app.example"} })
	if got := preflight(some, "https://app.example"); got != "https://app.example" {
		t.Errorf("allowed origin: preflight header %q", got)
	}
	if got := actual(some, "https://app.example"); got != "https://app.example" {
		t.Errorf("allowed origin: request header %q", got)
	}
	if got := preflight(some, "https://evil.example"); got != "" {
		t.Errorf("other origin: preflight header %q", got)
	}
}

func TestAuthenticateAndLimits(t *testing.T) {
	s := server(t, func(c *httpapi.Config) { c.MaxBodyBytes = 100 })
	cases := []struct {
		name, auth, body string
		status           int
		code             string
	}{
		{"good", "Bearer good", "{}", 200, ""},
		{"no token", "", "{}", 401, "UNAUTHENTICATED"},
		{"bad token", "Bearer bad", "{}", 401, "UNAUTHENTICATED"},
		{"at the limit", "Bearer good", strings.Repeat("x", 100), 200, ""},
		{"over the limit", "Bearer good", strings.Repeat("x", 101), 413, "REQUEST_TOO_LARGE"},
		{"panic", "Bearer good", "panic", 500, "INTERNAL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"Content-Type": "application/json"}
			if tc.auth != "" {
				h["Authorization"] = tc.auth
			}
			resp, body := do(t, http.MethodPost, s.URL+"/query", h, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			var out struct {
				Caller string
				Errors []struct {
					Message    string
					Extensions struct{ Code string }
				}
			}
			if err := json.Unmarshal([]byte(body), &out); err != nil {
				t.Fatalf("not JSON: %s", body)
			}
			if tc.code == "" {
				if out.Caller != "u" {
					t.Errorf("caller %q", out.Caller)
				}
				return
			}
			if len(out.Errors) != 1 || out.Errors[0].Extensions.Code != tc.code || out.Errors[0].Message == "" {
				t.Errorf("errors %+v, want %s", out.Errors, tc.code)
			}
			if strings.Contains(body, "boom") {
				t.Error("the panic value reached the client")
			}
		})
	}
}

func TestReadiness(t *testing.T) {
	var fail error
	s := server(t, func(c *httpapi.Config) {
		c.Ready = func(context.Context) error { return fail }
	})
	if resp, body := do(t, http.MethodGet, s.URL+"/readyz", nil, ""); resp.StatusCode != 200 || !strings.Contains(body, `"ok"`) {
		t.Errorf("ready: %d %s", resp.StatusCode, body)
	}
	fail = errors.New("database: connection refused")
	if resp, body := do(t, http.MethodGet, s.URL+"/readyz", nil, ""); resp.StatusCode != 503 || !strings.Contains(body, "unavailable") {
		t.Errorf("not ready: %d %s", resp.StatusCode, body)
	}
	// Liveness does not depend on the backends.
	if resp, _ := do(t, http.MethodGet, s.URL+"/healthz", nil, ""); resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

// Preflights allow the default request headers and ALLOWED_HEADERS, on
// /query and /schema.graphql alike, and no others. (Browsers list the
// headers sorted and in lower case, as rs/cors expects.)
func TestCORSHeaders(t *testing.T) {
	s := server(t, func(c *httpapi.Config) {
		c.AllowedOrigins = []string{"https://app.example"}
		c.AllowedHeaders = []string{"X-Request-Id"}
	})
	plain := server(t, func(c *httpapi.Config) { c.AllowedOrigins = []string{"https://app.example"} })
	cases := []struct {
		name    string
		srv     *httptest.Server
		path    string
		headers string
		allowed bool
	}{
		{"defaults", plain, "/query", "authorization,content-type", true},
		{"trace context", plain, "/query", "traceparent", true},
		{"apollo client", plain, "/query", "apollographql-client-name,apollographql-client-version", true},
		{"unknown header", plain, "/query", "x-request-id", false},
		{"configured header", s, "/query", "authorization,x-request-id", true},
		{"configured header keeps the defaults", s, "/query", "traceparent", true},
		{"still not any header", s, "/query", "x-other", false},
		{"schema", plain, "/schema.graphql", "authorization,traceparent", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := do(t, http.MethodOptions, tc.srv.URL+tc.path, map[string]string{
				"Origin": "https://app.example", "Access-Control-Request-Method": "GET",
				"Access-Control-Request-Headers": tc.headers,
			}, "")
			got := resp.Header.Get("Access-Control-Allow-Origin") == "https://app.example"
			if got != tc.allowed {
				t.Errorf("preflight for %s allowed = %v, want %v (headers %v)", tc.headers, got, tc.allowed, resp.Header)
			}
		})
	}
}

// /schema.graphql serves Config.Schema to admins and services only.
func TestSchemaRoute(t *testing.T) {
	sdl := "type Query { x: Int }\n"
	s := server(t, func(c *httpapi.Config) { c.Schema = []byte(sdl) })
	cases := []struct {
		name, method, token string
		status              int
		code                string
	}{
		{"admin", http.MethodGet, "good", 200, ""},
		{"service", http.MethodGet, "service", 200, ""},
		{"user", http.MethodGet, "user", 403, "FORBIDDEN"},
		{"no token", http.MethodGet, "", 401, "UNAUTHENTICATED"},
		{"bad token", http.MethodGet, "bad", 401, "UNAUTHENTICATED"},
		{"POST", http.MethodPost, "good", 405, "BAD_REQUEST"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.token != "" {
				h["Authorization"] = "Bearer " + tc.token
			}
			resp, body := do(t, tc.method, s.URL+"/schema.graphql", h, "")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.code == "" {
				if body != sdl || resp.Header.Get("Content-Type") != "application/graphql; charset=utf-8" {
					t.Errorf("body %q, Content-Type %q", body, resp.Header.Get("Content-Type"))
				}
				return
			}
			var out struct {
				Errors []struct {
					Message    string
					Extensions struct{ Code string }
				}
			}
			if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Errors) != 1 ||
				out.Errors[0].Extensions.Code != tc.code || out.Errors[0].Message == "" {
				t.Errorf("body %s, want one %s", body, tc.code)
			}
			if strings.Contains(body, "Query") {
				t.Error("a refusal shows the schema")
			}
		})
	}
}

// ALLOWED_HEADERS as an operator may write it: any case matches, and
// "*" (rs/cors's wildcard) allows any header, never credentials.
func TestAllowedHeadersValues(t *testing.T) {
	cases := []struct {
		name       string
		configured []string
		headers    string
		allowed    bool
	}{
		{"upper case", []string{"X-REQUEST-ID"}, "x-request-id", true},
		{"other header", []string{"X-REQUEST-ID"}, "x-request-idx", false},
		{"wildcard", []string{"*"}, "x-anything,cookie", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := server(t, func(c *httpapi.Config) {
				c.AllowedOrigins = []string{"https://app.example"}
				c.AllowedHeaders = tc.configured
			})
			resp, _ := do(t, http.MethodOptions, s.URL+"/query", map[string]string{
				"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
				"Access-Control-Request-Headers": tc.headers,
			}, "")
			if got := resp.Header.Get("Access-Control-Allow-Origin") == "https://app.example"; got != tc.allowed {
				t.Errorf("preflight for %s allowed = %v, want %v", tc.headers, got, tc.allowed)
			}
			if c := resp.Header.Get("Access-Control-Allow-Credentials"); c != "" {
				t.Errorf("Access-Control-Allow-Credentials %q", c)
			}
		})
	}
}

// The schema is per role: no cache keeps it.
func TestSchemaNotCached(t *testing.T) {
	s := server(t, func(c *httpapi.Config) { c.Schema = []byte("type Query { x: Int }\n") })
	resp, body := do(t, http.MethodGet, s.URL+"/schema.graphql", map[string]string{"Authorization": "Bearer good"}, "")
	if resp.StatusCode != 200 || body == "" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("status %d, Cache-Control %q, body %q", resp.StatusCode, resp.Header.Get("Cache-Control"), body)
	}
}
