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

// verifier accepts the token "good" as one admin.
type verifier struct{}

func (verifier) Verify(token string) (auth.Caller, error) {
	if token != "good" {
		return auth.Caller{}, auth.ErrUnauthenticated
	}
	return auth.Caller{UserID: "u", Company: "c", Role: auth.RoleAdmin}, nil
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
