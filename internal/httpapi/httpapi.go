// Package httpapi is the HTTP surface around the GraphQL handler: routes,
// authentication, CORS, body limits, logging, metrics and health checks.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/cors"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/metrics"
	"github.com/twofactor/service/web"
)

// Verifier turns a bearer token into a caller.
type Verifier interface {
	Verify(token string) (auth.Caller, error)
}

// Config is what the HTTP layer needs.
type Config struct {
	GraphQL        http.Handler
	Tokens         Verifier
	Metrics        *metrics.Metrics
	Logger         *slog.Logger
	AllowedOrigins []string
	// AllowedHeaders are request headers CORS allows besides DefaultAllowedHeaders.
	AllowedHeaders []string
	MaxBodyBytes   int64
	// Ready reports whether the database and Redis answer.
	Ready func(context.Context) error
	// Pages are the browser pages (playground, admin console, demo login).
	Pages web.Config
	// JWKS is the public key set for challenge assertions.
	JWKS []byte
	// Embedded allows websocket connections from localhost origins.
	Embedded bool
	// Schema is the SDL served at /schema.graphql to admins and services.
	Schema []byte
	// LoopbackHostsOnly refuses requests whose Host is not localhost,
	// 127.0.0.0/8 or [::1] (embedded mode on a loopback address).
	LoopbackHostsOnly bool
	// BodyTimeout bounds reading a request's body, counted from the end
	// of its headers; zero is DefaultBodyTimeout.
	BodyTimeout time.Duration
	// Audit serves GET /audit/export; nil leaves the route out.
	Audit AuditExporter
}

// DefaultAllowedHeaders are the request headers CORS always allows: the
// token, JSON, W3C trace context, and the client names Apollo tools send.
var DefaultAllowedHeaders = []string{
	"Authorization", "Content-Type", "traceparent", "apollographql-client-name", "apollographql-client-version",
}

// DefaultMaxBodyBytes bounds a request body; real operations are a few KiB.
const DefaultMaxBodyBytes = 64 << 10

// New returns the service's HTTP handler.
func New(cfg Config) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	r := chi.NewRouter()
	r.Use(requestID, cfg.observe, cfg.recoverer, securityHeaders, cfg.bodyDeadline, cfg.loopbackHosts,
		middleware.GetHead)
	r.NotFound(notFound)
	r.MethodNotAllowed(methodNotAllowed)

	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		if err := cfg.Ready(ctx); err != nil {
			cfg.Logger.WarnContext(ctx, "not ready", "err", err)
			// Details (addresses, driver errors) stay in the log.
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	web.Mount(r, cfg.Pages)
	r.Get("/.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(cfg.JWKS)
	})

	corsOpts := cors.Options{
		AllowedOrigins:   cfg.AllowedOrigins,
		AllowedMethods:   []string{http.MethodGet, http.MethodPost},
		AllowedHeaders:   append(slices.Clone(DefaultAllowedHeaders), cfg.AllowedHeaders...),
		AllowCredentials: false,
		MaxAge:           600,
	}
	if len(cfg.AllowedOrigins) == 0 {
		// rs/cors reads an empty list as "any origin"; here it means none.
		corsOpts.AllowOriginFunc = func(string) bool { return false }
	}
	c := cors.New(corsOpts)
	r.With(c.Handler, cfg.limitBody, cfg.authenticate, cfg.readBody).Handle("/query", cfg.GraphQL)
	r.With(c.Handler, cfg.authenticate).Handle("/schema.graphql", http.HandlerFunc(cfg.schema))
	if cfg.Audit != nil {
		r.With(c.Handler, cfg.authenticate).Handle("/audit/export", http.HandlerFunc(cfg.exportAudit))
	}
	return r
}

// schema serves the SDL, for codegen and other tools, to the roles that
// may introspect.
func (cfg Config) schema(w http.ResponseWriter, r *http.Request) {
	if _, ok := getAs(w, r, "only admin and service tokens may read the schema", auth.RoleAdmin, auth.RoleService); !ok {
		return
	}
	// Cache-Control: no-store comes from securityHeaders.
	w.Header().Set("Content-Type", "application/graphql; charset=utf-8")
	_, _ = w.Write(cfg.Schema)
}

// getAs admits a GET (or HEAD) from a caller with one of roles, and
// otherwise answers 405, 401 or 403 (forbidden: the message) without
// reading the body. It is for the plain-HTTP routes beside /query.
func getAs(w http.ResponseWriter, r *http.Request, forbidden string, roles ...auth.Role) (auth.Caller, bool) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		abandonBody(w, r)
		writeGraphQLError(w, http.StatusMethodNotAllowed, "BAD_REQUEST", "use GET")
		return auth.Caller{}, false
	}
	c, err := auth.FromContext(r.Context())
	if err != nil {
		unauthenticated(w, r, reasonNoToken)
		return auth.Caller{}, false
	}
	if c.Require(roles...) != nil {
		abandonBody(w, r)
		writeGraphQLError(w, http.StatusForbidden, "FORBIDDEN", forbidden)
		return auth.Caller{}, false
	}
	return c, true
}

// authenticate puts the caller in the context, or answers 401 in the
// GraphQL error shape so clients handle it like any other error.
func (cfg Config) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			// CORS preflights are answered before this; an OPTIONS that
			// gets here is answered without its body, and without a token.
			abandonBody(w, r)
			r.Body = http.NoBody
			next.ServeHTTP(w, r)
			return
		}
		if isUpgrade(r) {
			cfg.upgrade(next, w, r)
			return
		}
		token, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			unauthenticated(w, r, reasonNoToken)
			return
		}
		c, err := cfg.Tokens.Verify(token)
		if err != nil {
			unauthenticated(w, r, tokenReason(err))
			return
		}
		next.ServeHTTP(w, r.WithContext(auth.WithCaller(r.Context(), c)))
	})
}

// upgrade admits a websocket handshake from an allowed origin. Browsers
// cannot set headers on websockets, so the token may come later in
// connection_init; a token in the header is checked now.
func (cfg Config) upgrade(next http.Handler, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		// Checked before the deadline is lifted below: a "handshake" with
		// a body that never comes would otherwise hold the connection.
		abandonBody(w, r)
		writeGraphQLError(w, http.StatusBadRequest, "BAD_REQUEST", "a websocket handshake is a GET request without a body")
		return
	}
	if !cfg.originAllowed(r) {
		abandonBody(w, r)
		writeGraphQLError(w, http.StatusForbidden, "FORBIDDEN_ORIGIN", "this origin is not in ALLOWED_ORIGINS")
		return
	}
	if h := r.Header.Get("Authorization"); h != "" {
		token, ok := bearer(h)
		if !ok {
			unauthenticated(w, r, reasonMalformed)
			return
		}
		c, err := cfg.Tokens.Verify(token)
		if err != nil {
			unauthenticated(w, r, tokenReason(err))
			return
		}
		r = r.WithContext(auth.WithCaller(r.Context(), c))
	}
	// The websocket reads at its own pace, with its own keep-alives.
	liftDeadline(w)
	next.ServeHTTP(w, r)
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// originAllowed: no Origin (not a browser), the service's own origin, one
// of ALLOWED_ORIGINS, or, in embedded mode, any localhost origin.
func (cfg Config) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	if cfg.Embedded {
		switch u.Hostname() {
		case "localhost", "127.0.0.1", "::1":
			return true
		}
	}
	return false
}

func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// Reasons a request is unauthenticated: the whole closed set a client
// may see. The verifier's own words can quote library internals.
const (
	reasonNoToken   = "send Authorization: Bearer <token>"
	reasonExpired   = "token expired"
	reasonMalformed = "malformed token"
	reasonSignature = "bad signature"
	reasonInvalid   = "invalid token"
)

// tokenReason maps a verification failure to a reason from the closed
// set above.
func tokenReason(err error) string {
	// The verifier's detail follows ErrUnauthenticated's own text, which
	// names every reason at once.
	msg := strings.TrimPrefix(err.Error(), auth.ErrUnauthenticated.Error())
	switch {
	case errors.Is(err, jwt.ErrTokenExpired) || strings.Contains(msg, "expired"):
		return reasonExpired
	case errors.Is(err, jwt.ErrTokenSignatureInvalid) || strings.Contains(msg, "signature"):
		return reasonSignature
	case errors.Is(err, jwt.ErrTokenMalformed) || strings.Contains(msg, "malformed"):
		return reasonMalformed
	}
	return reasonInvalid
}

// unauthenticated answers 401 without reading the body: an anonymous
// caller must not hold the connection by sending it slowly.
func unauthenticated(w http.ResponseWriter, r *http.Request, reason string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="twofactor"`)
	abandonBody(w, r)
	writeGraphQLError(w, http.StatusUnauthorized, "UNAUTHENTICATED", reason)
}

// limitBody refuses a declared length over the limit at once, before
// authentication, and bounds an undeclared (chunked) one.
func (cfg Config) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > cfg.MaxBodyBytes {
			abandonBody(w, r)
			tooLarge(w)
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, cfg.MaxBodyBytes)
		}
		next.ServeHTTP(w, r)
	})
}

// readBody reads the bounded body, after authentication so that an
// anonymous caller cannot make the server buffer anything, and answers an
// oversized one with a clear error instead of a JSON decoding failure.
func (cfg Config) readBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody && !isUpgrade(r) {
			buf, err := readAll(r.Body)
			var over *http.MaxBytesError
			if errors.As(err, &over) {
				tooLarge(w)
				return
			}
			if err != nil {
				// Usually the body deadline: the connection is closing.
				writeGraphQLError(w, http.StatusBadRequest, "BAD_REQUEST", "could not read request body")
				return
			}
			r.Body = buf
			// The request is in; an SSE stream may now run for long.
			liftDeadline(w)
		}
		next.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter) {
	writeGraphQLError(w, http.StatusRequestEntityTooLarge, "REQUEST_TOO_LARGE", "request body is larger than the limit")
}

func writeGraphQLError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{
		"errors": []map[string]any{{"message": msg, "extensions": map[string]string{"code": code}}},
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
