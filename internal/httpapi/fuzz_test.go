package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/httpapi"
	"github.com/twofactor/service/internal/metrics"
)

// knownTypes are the content types the service answers with: JSON from
// the API, pages, the embedded assets, the schema, the JWKS, redirects,
// and net/http's plain-text errors from the asset server.
var knownTypes = []string{
	"application/json", "text/html", "text/plain", "text/css", "text/javascript", "application/javascript",
	"application/graphql", "application/jwk-set+json", "image/", "font/", "application/octet-stream",
}

// maxResponse is more than the largest embedded asset (GraphiQL, ~1 MB).
const maxResponse = 4 << 20

// FuzzHandler sends the whole HTTP handler any method, target, headers
// and body: it must not panic, must answer with a status it means (never
// 500) and a known content type, and must carry the request id and the
// security headers. The GraphQL handler is a stub; the API's own edge
// (routing, CORS, auth, body limits, Host check) is what is fuzzed.
//
//	go test -run '^$' -fuzz '^FuzzHandler$' -fuzztime 30s ./internal/httpapi
func FuzzHandler(f *testing.F) {
	handlers := map[bool]http.Handler{}
	for _, only := range []bool{false, true} {
		handlers[only] = httpapi.New(httpapi.Config{
			GraphQL: stubGraphQL, Tokens: verifier{}, Metrics: metrics.New(),
			Logger: slog.New(slog.DiscardHandler), Ready: func(context.Context) error { return nil },
			Schema: []byte("type Query { x: Int }\n"), JWKS: []byte(`{"keys":[]}`),
			LoopbackHostsOnly: only, MaxBodyBytes: 1 << 10,
		})
	}
	seeds := []struct {
		method, target, headers, body string
	}{
		{"GET", "/healthz", "", ""},
		{"POST", "/query", "Authorization: Bearer good\nContent-Type: application/json", `{"query":"{x}"}`},
		{"POST", "/query", "Authorization: Bearer bad", strings.Repeat("x", 2000)},
		{"GET", "/query", "Upgrade: websocket\nOrigin: https://evil.example", ""},
		{"OPTIONS", "/query", "Origin: https://a.example\nAccess-Control-Request-Method: POST", ""},
		{"HEAD", "/assets/vendor/dist/graphiql.min.css", "Range: bytes=0-1,2-3,4-5,6-7,8-9", ""},
		{"PROPFIND", "/admin", "X-Request-Id: ../../etc", ""},
		{"GET", "/schema.graphql", "Authorization: Bearer service", ""},
		{"GET", "//%2e%2e/metrics?x=1#y", "Host: rebind.example", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.target, s.headers, []byte(s.body), false)
		f.Add(s.method, s.target, s.headers, []byte(s.body), true)
	}
	f.Fuzz(func(t *testing.T, method, target, headers string, body []byte, loopbackOnly bool) {
		req := fuzzRequest(method, target, headers, body)
		if req == nil {
			return // net/http would refuse it before any handler
		}
		rec := httptest.NewRecorder()
		handlers[loopbackOnly].ServeHTTP(rec, req)
		checkFuzzResponse(t, rec)
	})
}

// stubGraphQL reads the body and answers JSON, as gqlgen would.
var stubGraphQL = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	n, _ := io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"data":{"len":%d}}`, n)
})

// fuzzRequest builds a request as net/http's server would hand it over,
// or nil when the server would have refused it already.
func fuzzRequest(method, target, headers string, body []byte) *http.Request {
	if !strings.HasPrefix(target, "/") {
		return nil
	}
	req, err := http.NewRequest(method, "http://localhost"+target, bytes.NewReader(body))
	if err != nil {
		return nil
	}
	req.RemoteAddr = "127.0.0.1:40000"
	req.RequestURI = target
	for _, line := range strings.Split(headers, "\n") {
		k, v, ok := strings.Cut(line, ":")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || !validHeader(k, v) {
			continue
		}
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Add(k, v)
	}
	return req
}

// validHeader is roughly what net/http's server accepts: a token name and
// a value without control characters.
func validHeader(k, v string) bool {
	if k == "" {
		return false
	}
	for _, c := range []byte(k) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	for _, c := range []byte(v) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func checkFuzzResponse(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	h := rec.Header()
	if rec.Code >= 500 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	if rec.Body.Len() > maxResponse {
		t.Fatalf("response of %d bytes", rec.Body.Len())
	}
	if ct := h.Get("Content-Type"); rec.Body.Len() > 0 && !knownType(ct) {
		t.Fatalf("status %d, Content-Type %q", rec.Code, ct)
	}
	if id := h.Get("X-Request-Id"); !safeID.MatchString(id) {
		t.Fatalf("X-Request-Id %q", id)
	}
	if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Content-Security-Policy") == "" ||
		h.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("security headers missing: %v", h)
	}
}

func knownType(ct string) bool {
	for _, k := range knownTypes {
		if strings.HasPrefix(ct, k) {
			return true
		}
	}
	return false
}
