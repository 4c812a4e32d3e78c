package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/twofactor/service/internal/auth"
)

// With AUTH_ISSUER and AUTH_AUDIENCE set, `token` signs with them, and the
// server's verifier (built from the same environment) requires them.
func TestTokenCommandUsesIssuerAndAudience(t *testing.T) {
	secret := strings.Repeat("s", 32)
	t.Setenv("DATA_DIR", t.TempDir())
	t.Setenv("AUTH_JWT_SECRET", secret)
	t.Setenv("AUTH_ISSUER", "https://idp.example")
	t.Setenv("AUTH_AUDIENCE", "twofactor")
	t.Setenv("AUTH_MAX_TOKEN_TTL", "2h")
	var out, errOut bytes.Buffer
	if err := runToken([]string{"--ttl", "1h"}, &out, &errOut); err != nil {
		t.Fatalf("token: %v\n%s", err, errOut.String())
	}
	tok := strings.TrimSpace(out.String())
	var mc jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &mc); err != nil {
		t.Fatal(err)
	}
	if mc["iss"] != "https://idp.example" || mc["aud"] == nil {
		t.Errorf("claims %v, want iss and aud", mc)
	}
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	tokens, _, err := cfg.tokens(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Verify(tok); err != nil {
		t.Errorf("the server refuses the command's token: %v", err)
	}
	plain, err := auth.NewTokens([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	bare, err := plain.Sign(auth.Caller{UserID: "a", Company: "demo", Role: auth.RoleAdmin}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Verify(bare); err == nil {
		t.Error("the server takes a token without iss and aud")
	}
	if err := runToken([]string{"--ttl", "3h"}, &out, &errOut); err == nil {
		t.Error("token --ttl over AUTH_MAX_TOKEN_TTL succeeded")
	}
}

// SMTP_URL with tls=none starts, with a warning in the log; without it,
// no warning.
func TestSMTPPlaintextWarning(t *testing.T) {
	for url, warn := range map[string]bool{
		"smtp://mail.example.com:25?tls=none": true,
		"smtp://mail.example.com:587":         false,
		"smtps://mail.example.com":            false,
	} {
		t.Run(url, func(t *testing.T) {
			t.Setenv("DATA_DIR", t.TempDir())
			t.Setenv("SMTP_URL", url)
			t.Setenv("EMAIL_FROM", "no-reply@example.com")
			cfg, err := loadConfig()
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			if _, err := cfg.challengeOptions(slog.New(slog.NewJSONHandler(&logs, nil))); err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(logs.String(), `"level":"WARN"`) && strings.Contains(logs.String(), "tls=none"); got != warn {
				t.Errorf("warning logged: %v, want %v; log: %s", got, warn, logs.String())
			}
		})
	}
}

// idpKey serves an Ed25519 key set on loopback and returns its URL and a
// function that mints tokens with it.
func idpKey(t *testing.T) (url string, mint func(claims map[string]any) string) {
	t.Helper()
	_, raw, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	priv.Set(jwk.KeyIDKey, "k1")
	pub, _ := priv.PublicKey()
	set := jwk.NewSet()
	set.AddKey(pub)
	body, _ := json.Marshal(set)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(body) }))
	t.Cleanup(srv.Close)
	return srv.URL, func(claims map[string]any) string {
		tok := jwxjwt.New()
		for k, v := range claims {
			tok.Set(k, v)
		}
		b, err := jwxjwt.Sign(tok, jwxjwt.WithKey(jwa.EdDSA(), priv))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
}

// Production with AUTH_JWKS_URL needs no AUTH_JWT_SECRET; the server
// takes the provider's tokens under the configured claim names, and the
// token command, which signs HS256, says it needs the secret.
func TestJWKSConfig(t *testing.T) {
	url, mint := idpKey(t)
	t.Setenv("DATA_DIR", t.TempDir())
	t.Setenv("DATABASE_URL", "postgres://unused")
	t.Setenv("REDIS_URL", "redis://unused")
	t.Setenv("AUTH_JWT_SECRET", "")
	t.Setenv("AUTH_JWKS_URL", "")
	if _, err := loadConfig(); err == nil || !strings.Contains(err.Error(), "AUTH_JWKS_URL") {
		t.Errorf("production without a secret or key set: %v", err)
	}
	t.Setenv("AUTH_JWKS_URL", url)
	t.Setenv("AUTH_CLAIM_ROLE", "roles")
	t.Setenv("AUTH_CLAIM_COMPANY", "org")
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	tokens, _, err := cfg.tokens(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, err := tokens.Verify(mint(map[string]any{"sub": "alice", "org": "acme", "roles": []string{"user", "admin"},
		"exp": time.Now().Add(time.Hour).Unix()}))
	if err != nil || c.Company != "acme" || c.Role != auth.RoleAdmin {
		t.Errorf("Verify = %+v, %v", c, err)
	}
	var out, errOut bytes.Buffer
	if err := runToken(nil, &out, &errOut); err == nil || !strings.Contains(err.Error(), "AUTH_JWT_SECRET is required") {
		t.Errorf("token without AUTH_JWT_SECRET: %v", err)
	}
	t.Setenv("AUTH_JWKS_FILE", "/x.json")
	if _, err := loadConfig(); err == nil {
		t.Error("both AUTH_JWKS_URL and AUTH_JWKS_FILE accepted")
	}
}

// A key set that is unreachable at start logs a warning and the server
// starts (HS256 still works); an http:// URL off this machine is refused.
func TestJWKSConfigUnreachable(t *testing.T) {
	t.Setenv("DATA_DIR", t.TempDir())
	t.Setenv("AUTH_JWT_SECRET", strings.Repeat("s", 32))
	for url, wantErr := range map[string]bool{"http://127.0.0.1:1/jwks": false, "http://idp.example/jwks": true} {
		t.Setenv("AUTH_JWKS_URL", url)
		cfg, err := loadConfig()
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		tokens, _, err := cfg.tokens(slog.New(slog.NewJSONHandler(&logs, nil)))
		if (err != nil) != wantErr {
			t.Fatalf("%s: tokens: %v", url, err)
		}
		if wantErr {
			continue
		}
		if !strings.Contains(logs.String(), `"level":"WARN"`) {
			t.Errorf("no warning for an unreachable key set: %s", logs.String())
		}
		tok, err := tokens.Sign(auth.Caller{UserID: "a", Company: "demo", Role: auth.RoleAdmin}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tokens.Verify(tok); err != nil {
			t.Errorf("HS256 refused while the key set is down: %v", err)
		}
	}
}

// The page and listener switches read from the environment refuse what
// they cannot mean, instead of quietly taking a default.
func TestConfigPagesHeadersAndMetrics(t *testing.T) {
	t.Setenv("DATABASE_URL", "")
	t.Setenv("DATA_DIR", t.TempDir())
	t.Setenv("ALLOWED_HEADERS", " X-Request-Id, ,X-Trace-Id ,,")
	for _, v := range []string{"yes", "on", "true; rm -rf /", " true"} {
		t.Setenv("DEMO_PAGES", v)
		if _, err := loadConfig(); err == nil || !strings.Contains(err.Error(), "DEMO_PAGES") {
			t.Errorf("DEMO_PAGES=%q: err %v, want it refused", v, err)
		}
	}
	t.Setenv("DEMO_PAGES", "1")
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.DemoPages {
		t.Error("DEMO_PAGES=1 did not turn the demo pages on")
	}
	if got := strings.Join(cfg.AllowedHeaders, "|"); got != "X-Request-Id|X-Trace-Id" {
		t.Errorf("ALLOWED_HEADERS read as %q, want the two names trimmed, empty entries dropped", got)
	}
	if cfg.MetricsAddr != "127.0.0.1:9464" {
		t.Errorf("METRICS_ADDR unset: %q, want this machine only", cfg.MetricsAddr)
	}
	t.Setenv("METRICS_ADDR", "")
	if cfg, err = loadConfig(); err != nil || cfg.MetricsAddr != "" {
		t.Errorf("METRICS_ADDR empty: %q, %v; want metrics off", cfg.MetricsAddr, err)
	}
	logger := slog.New(slog.DiscardHandler)
	for _, addr := range []string{"9464", "127.0.0.1:99999", "127.0.0.1:no-such-port"} {
		if ln, err := listenMetrics(addr, logger); err == nil || !strings.Contains(err.Error(), "METRICS_ADDR") {
			if ln != nil {
				ln.Close()
			}
			t.Errorf("METRICS_ADDR=%q: err %v, want a METRICS_ADDR error", addr, err)
		}
	}
}
