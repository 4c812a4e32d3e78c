package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

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
	tokens, _, err := cfg.tokens()
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
