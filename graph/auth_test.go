package graph_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// httpResult is a raw HTTP answer.
type httpResult struct {
	Status int
	Header http.Header
	Body   []byte
}

// gql decodes the body as a GraphQL response, failing if it is not one.
func (h httpResult) gql(t *testing.T) apptest.Response {
	t.Helper()
	out := apptest.Response{Status: h.Status}
	if err := json.Unmarshal(h.Body, &out); err != nil {
		t.Fatalf("status %d: body is not JSON: %q", h.Status, h.Body)
	}
	return out
}

// send makes one HTTP request; header values are set as given.
// expectContinue waits for the server's go-ahead before sending a body
// (Expect: 100-continue), as clients do for large uploads: a body the
// server refuses by its declared length is then never written, and the
// refusal always arrives (without it, the client may still be writing
// when the server closes, and see a broken pipe instead of the 413).
var expectContinue = &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 10 * time.Second}}

func send(t *testing.T, method, url string, header map[string]string, body io.Reader) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := http.DefaultClient
	if req.Header.Get("Expect") != "" {
		client = expectContinue
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpResult{Status: resp.StatusCode, Header: resp.Header, Body: raw}
}

// postQuery posts a small valid operation with the given Authorization
// header ("" for none).
func postQuery(t *testing.T, s *apptest.Server, authorization string) httpResult {
	t.Helper()
	h := map[string]string{"Content-Type": "application/json"}
	if authorization != "" {
		h["Authorization"] = authorization
	}
	return send(t, http.MethodPost, s.URL+"/query", h, strings.NewReader(`{"query":"{ me { id } }"}`))
}

// sign signs claims with method and key.
func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBadTokens(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	now := time.Now()
	valid := func() jwt.MapClaims {
		return jwt.MapClaims{"sub": "alice", "company": co, "role": "admin", "exp": now.Add(time.Hour).Unix()}
	}
	with := func(k string, v any) jwt.MapClaims {
		c := valid()
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	hs256 := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, apptest.Secret, c) }
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := hs256(valid())
	parts := strings.Split(good, ".")
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	cases := []struct {
		name, authorization string
	}{
		{"missing header", ""},
		{"basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:secret"))},
		{"token without scheme", good},
		{"bearer without token", "Bearer "},
		{"bearer only", "Bearer"},
		{"garbage", "Bearer not-a-jwt"},
		{"garbage with dots", "Bearer a.b.c"},
		{"expired", "Bearer " + hs256(with("exp", now.Add(-time.Hour).Unix()))},
		{"expired beyond leeway", "Bearer " + hs256(with("exp", now.Add(-2*time.Minute).Unix()))},
		{"not yet valid", "Bearer " + hs256(with("nbf", now.Add(time.Hour).Unix()))},
		{"wrong signature", "Bearer " + sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-0123456789"), valid())},
		{"tampered payload", "Bearer " + parts[0] + "." + b64(`{"sub":"alice","company":"`+co+`","role":"admin","exp":9999999999,"x":1}`) + "." + parts[2]},
		{"alg none", "Bearer " + sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid())},
		{"alg none, no signature", "Bearer " + b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "."},
		{"HS384", "Bearer " + sign(t, jwt.SigningMethodHS384, apptest.Secret, valid())},
		{"HS512", "Bearer " + sign(t, jwt.SigningMethodHS512, apptest.Secret, valid())},
		{"RS256", "Bearer " + sign(t, jwt.SigningMethodRS256, rsaKey, valid())},
		{"RS256 header, HMAC signature", "Bearer " + b64(`{"alg":"RS256","typ":"JWT"}`) + "." + parts[1] + "." + parts[2]},
		{"missing exp", "Bearer " + hs256(with("exp", nil))},
		{"exp as string", "Bearer " + hs256(with("exp", "tomorrow"))},
		{"missing company", "Bearer " + hs256(with("company", nil))},
		{"empty company", "Bearer " + hs256(with("company", ""))},
		{"company too long", "Bearer " + hs256(with("company", strings.Repeat("c", 65)))},
		{"missing sub", "Bearer " + hs256(with("sub", nil))},
		{"empty sub", "Bearer " + hs256(with("sub", ""))},
		{"sub too long", "Bearer " + hs256(with("sub", strings.Repeat("s", 129)))},
		{"unknown role", "Bearer " + hs256(with("role", "superadmin"))},
		{"upper-case role", "Bearer " + hs256(with("role", "ADMIN"))},
		{"missing role", "Bearer " + hs256(with("role", nil))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := postQuery(t, s, tc.authorization)
			r := h.gql(t)
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401; body %s", r.Status, h.Body)
			}
			if len(r.Errors) != 1 || r.Errors[0].Code() != "UNAUTHENTICATED" || r.Errors[0].Message == "" {
				t.Fatalf("errors %+v, want one UNAUTHENTICATED", r.Errors)
			}
			if len(r.Data) != 0 && string(r.Data) != "null" {
				t.Errorf("data = %s, want none", r.Data)
			}
			if !strings.HasPrefix(h.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", h.Header.Get("WWW-Authenticate"))
			}
			if tc.authorization != "" {
				if tok := strings.TrimSpace(strings.TrimPrefix(tc.authorization, "Bearer")); len(tok) > 8 && strings.Contains(string(h.Body), tok) {
					t.Error("the response echoes the token")
				}
			}
		})
	}

	// GET is authenticated the same way.
	h := send(t, http.MethodGet, s.URL+"/query?query="+url.QueryEscape("{ me { id } }"), nil, nil)
	if r := h.gql(t); r.Status != http.StatusUnauthorized || r.Errors[0].Code() != "UNAUTHENTICATED" {
		t.Errorf("GET without a token: %d %s", h.Status, h.Body)
	}

	// Controls: the same request with good tokens works, including a
	// lower-case scheme, a small clock skew and a token name.
	for name, authorization := range map[string]string{
		"valid":              "Bearer " + good,
		"lower-case scheme":  "bearer " + good,
		"expired within 30s": "Bearer " + hs256(with("exp", now.Add(-5*time.Second).Unix())),
		"service":            "Bearer " + hs256(with("role", "service")),
		"user":               "Bearer " + hs256(with("role", "user")),
		"with name":          "Bearer " + hs256(with("name", "Alice")),
	} {
		t.Run("accepted/"+name, func(t *testing.T) {
			h := postQuery(t, s, authorization)
			if r := h.gql(t); r.Status != http.StatusOK || len(r.Errors) > 0 || string(r.Data) != `{"me":null}` {
				t.Errorf("status %d body %s", h.Status, h.Body)
			}
		})
	}
	h = send(t, http.MethodGet, s.URL+"/query?query="+url.QueryEscape("{ me { id } }"),
		map[string]string{"Authorization": "Bearer " + good}, nil)
	if r := h.gql(t); r.Status != http.StatusOK || len(r.Errors) > 0 {
		t.Errorf("GET with a token: %d %s", h.Status, h.Body)
	}
}

// TestTokenCompanyWins: the company comes from the token only.
func TestTokenCompanyWins(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	a, b := testenv.Company(t), testenv.Company(t)
	createUser(t, s.Admin(t, b), map[string]any{"id": "only-in-b"})
	// A token with an extra, unknown claim naming B is still A's.
	tok := sign(t, jwt.SigningMethodHS256, apptest.Secret, jwt.MapClaims{
		"sub": "x", "company": a, "role": "admin", "exp": time.Now().Add(time.Hour).Unix(), "companyId": b, "tenant": b,
	})
	c := &apptest.Client{URL: s.URL + "/query", Token: tok}
	wantCode(t, c.Do(t, qUser, map[string]any{"id": "only-in-b"}), "NOT_FOUND")
	if got := listUsers(t, c, nil); len(got.Edges) != 0 {
		t.Errorf("A lists %v", got.ids())
	}
	body := bytes.NewReader([]byte(`{"query":"{ users { edges { node { id } } } }","extensions":{"company":"` + b + `"}}`))
	h := send(t, http.MethodPost, s.URL+"/query", map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + tok}, body)
	if strings.Contains(string(h.Body), "only-in-b") {
		t.Errorf("request extensions reached B: %s", h.Body)
	}
}
