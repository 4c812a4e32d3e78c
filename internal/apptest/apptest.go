// Package apptest runs the whole service in-process for tests: real
// backends from testenv, the real HTTP handler on an httptest server, and
// a small GraphQL client that signs its own tokens.
package apptest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/otp"
	"github.com/twofactor/service/internal/outbox"
	"github.com/twofactor/service/internal/testenv"
)

// Secret signs test tokens.
var Secret = []byte("apptest-secret-apptest-secret-0123456789")

// CodeKey is the code HMAC key in tests.
var CodeKey = []byte("apptest-code-key-apptest-code-key-0123456789")

// Server is a running service.
type Server struct {
	*app.App
	URL      string
	Tokens   *auth.Tokens
	Backends testenv.Backends
	// Clock is the service's clock; Advance it to expire codes and locks
	// without sleeping.
	Clock *Clock
	// Outbox holds what the default senders were asked to deliver.
	Outbox *Outbox

	opts app.Options // what the app was built with; StartPeer reuses it
}

// Start runs the service on fresh backends until the test ends. tweak, if
// given, may change the options before the app is built.
func Start(t testing.TB, tweak ...func(*app.Options)) *Server {
	t.Helper()
	b := testenv.Open(t)
	tokens, err := auth.NewTokens(Secret)
	if err != nil {
		t.Fatal(err)
	}
	codes, err := otp.NewHasher(CodeKey, 6)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Tokens: tokens, Backends: b, Clock: NewClock(), Outbox: &Outbox{}}
	opts := app.Options{
		DB: b.DB, Redis: b.Redis, Tokens: tokens,
		Codes: codes, AssertionKey: key, SMS: s.Outbox.Channel("sms"), Email: s.Outbox.Channel("email"),
		Now: s.Clock.Now,
		// Tests share one Redis: a sweeper would move other tests' events
		// into this test's database. A test that wants one sets Match to
		// its own companies (challenge.OutboxMatch). Retries stay quick.
		AuditOutbox: outbox.Options{SweepEvery: -1, MaxBackoff: 500 * time.Millisecond},
	}
	for _, f := range tweak {
		f(&opts)
	}
	s.opts = opts
	s.App, s.URL = serve(t, opts)
	return s
}

// serve builds the app and runs it on an httptest server until the test
// ends. Cleanups run last-in first-out: the app's live streams end first,
// then the server, then (registered earlier by testenv) the backends.
func serve(t testing.TB, opts app.Options) (*app.App, string) {
	t.Helper()
	a, err := app.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(a.Handler)
	t.Cleanup(ts.Close)
	t.Cleanup(a.Close)
	return a, ts.URL
}

// Token signs a token for c valid for an hour.
func (s *Server) Token(t testing.TB, c auth.Caller) string {
	t.Helper()
	tok, err := s.Tokens.Sign(c, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Client sends GraphQL requests with one bearer token ("" for none).
type Client struct {
	URL   string
	Token string
}

// As returns a client acting as c.
func (s *Server) As(t testing.TB, c auth.Caller) *Client {
	t.Helper()
	return &Client{URL: s.URL + "/query", Token: s.Token(t, c)}
}

// Admin, Service and User return clients for the given company.
func (s *Server) Admin(t testing.TB, company string) *Client {
	t.Helper()
	return s.As(t, auth.Caller{UserID: "admin-" + company, Company: company, Role: auth.RoleAdmin, Name: "Admin"})
}

func (s *Server) Service(t testing.TB, company string) *Client {
	t.Helper()
	return s.As(t, auth.Caller{UserID: "svc-" + company, Company: company, Role: auth.RoleService})
}

func (s *Server) User(t testing.TB, company, userID string) *Client {
	t.Helper()
	return s.As(t, auth.Caller{UserID: userID, Company: company, Role: auth.RoleUser})
}

// Error is one GraphQL error.
type Error struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

// Code is extensions.code.
func (e Error) Code() string { s, _ := e.Extensions["code"].(string); return s }

// Response is a GraphQL response.
type Response struct {
	Status int
	Data   json.RawMessage `json:"data"`
	Errors []Error         `json:"errors"`
}

// Codes lists the errors' extensions.code values.
func (r Response) Codes() []string {
	out := make([]string, len(r.Errors))
	for i, e := range r.Errors {
		out[i] = e.Code()
	}
	return out
}

// Decode unmarshals data into v, failing the test on errors.
func (r Response) Decode(t testing.TB, v any) {
	t.Helper()
	if len(r.Errors) > 0 {
		t.Fatalf("unexpected GraphQL errors: %+v", r.Errors)
	}
	if err := json.Unmarshal(r.Data, v); err != nil {
		t.Fatalf("decode data %s: %v", r.Data, err)
	}
}

// Do posts one operation and returns the response, whatever its status.
func (c *Client) Do(t testing.TB, query string, vars map[string]any) Response {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", c.URL, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := Response{Status: resp.StatusCode}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("response is not JSON (status %d): %s", resp.StatusCode, raw)
	}
	return out
}

// Must posts one operation, fails the test on any error, and decodes the
// data into v (if not nil).
func (c *Client) Must(t testing.TB, query string, vars map[string]any, v any) {
	t.Helper()
	r := c.Do(t, query, vars)
	if r.Status != http.StatusOK {
		t.Fatalf("status %d: %+v", r.Status, r.Errors)
	}
	if v == nil {
		if len(r.Errors) > 0 {
			t.Fatalf("unexpected GraphQL errors: %+v", r.Errors)
		}
		return
	}
	r.Decode(t, v)
}
