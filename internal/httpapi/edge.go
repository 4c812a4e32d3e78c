package httpapi

import (
	"context"
	"crypto/rand"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

// DefaultContentSecurityPolicy is sent with every response that sets no
// policy of its own: API answers and errors load nothing and may not be
// framed. The pages replace it with theirs.
const DefaultContentSecurityPolicy = "default-src 'none'; frame-ancestors 'none'"

// securityHeaders sets the headers every response carries, before the
// handler runs, so a handler's own Header().Set (a page's CSP, an asset's
// or the JWKS's Cache-Control) still wins.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Content-Security-Policy", DefaultContentSecurityPolicy)
		// API answers are per caller: no shared or browser cache keeps them.
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// RequestIDHeader names the request in the response and in the log.
const RequestIDHeader = "X-Request-Id"

// requestID gives every request an id, in its context (where chi's
// middleware.GetReqID finds it), its log line and the X-Request-Id
// response header. A caller's own id is kept only when it is short and
// plain, so it can go into logs and headers as it is.
func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !safeRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set(RequestIDHeader, id)
		ctx := context.WithValue(r.Context(), middleware.RequestIDKey, id)
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// safeRequestID: 1 to 64 of [A-Za-z0-9._-].
func safeRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range []byte(id) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// bodyDeadline bounds reading a request's body, from now on. A request
// without one has nothing to bound: net/http has already cleared the
// connection's read deadline to watch for the client going away, and a
// deadline set now would cancel a long handler. net/http clears it too
// when the body hits EOF and when a websocket hijacks the connection;
// readBody and upgrade say so explicitly (liftDeadline). An answer given
// without reading the body ends the connection instead (abandonBody).
func (cfg Config) bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			// Unsupported (a recorder in tests) is fine: nothing to bound.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(cfg.BodyTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

// liftDeadline removes the read deadline once nothing more is expected
// from the client but what a stream or websocket reads itself.
func liftDeadline(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
}

// abandonBody is for an answer given before the body was read: the
// connection closes after the answer, and net/http does not wait for a
// body that may never come (it would read up to 256 KiB to reuse the
// connection).
func abandonBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || (r.ContentLength == 0 && len(r.TransferEncoding) == 0) {
		return
	}
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// loopbackHosts refuses a request whose Host does not name this machine:
// in embedded mode, a page on another site whose name resolves to
// 127.0.0.1 (DNS rebinding) would otherwise reach the service with the
// visitor's browser.
func (cfg Config) loopbackHosts(next http.Handler) http.Handler {
	if !cfg.LoopbackHostsOnly {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !LoopbackHost(r.Host) {
			abandonBody(w, r)
			writeGraphQLError(w, http.StatusMisdirectedRequest, "MISDIRECTED_REQUEST",
				"this service answers to localhost only; set LISTEN_ADDR to serve other host names")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// LoopbackHost reports whether a Host header (with or without a port)
// is localhost, 127.0.0.0/8 or [::1].
func LoopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// notFound answers in the API's error shape, so every answer is JSON or
// a page.
func notFound(w http.ResponseWriter, r *http.Request) {
	abandonBody(w, r)
	writeGraphQLError(w, http.StatusNotFound, "NOT_FOUND", "no such route")
}

// allowProbe lists the methods methodNotAllowed may name in Allow.
var allowProbe = []string{http.MethodGet, http.MethodHead, http.MethodPost}

// methodNotAllowed answers 405 with Allow, which chi sets only in its own
// handler. HEAD is allowed wherever GET is (middleware.GetHead).
func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	rctx := chi.RouteContext(r.Context())
	path := r.URL.Path
	if rctx != nil && rctx.RoutePath != "" {
		path = rctx.RoutePath
	}
	var allow []string
	for _, m := range allowProbe {
		probe := m
		if m == http.MethodHead {
			probe = http.MethodGet
		}
		if rctx != nil && rctx.Routes != nil && rctx.Routes.Match(chi.NewRouteContext(), probe, path) {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
	}
	abandonBody(w, r)
	writeGraphQLError(w, http.StatusMethodNotAllowed, "BAD_REQUEST", "method not allowed")
}
