package auth_test

import (
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
)

// Through the whole HTTP service: an admin token from the identity
// provider (role array, custom company claim) reads admin-only settings,
// a user token from it is FORBIDDEN there, a forged kid is
// UNAUTHENTICATED, and the service's own HS256 tokens still work.
func TestJWKSThroughService(t *testing.T) {
	s := newSigner(t, jwa.ES256(), "k1")
	p := newIDP(t, s)
	k, err := auth.NewJWKS(auth.JWKSOptions{URL: p.URL})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(apptest.Secret, auth.WithJWKS(k), auth.WithClaimNames(auth.ClaimNames{Company: "org"}))
	if err != nil {
		t.Fatal(err)
	}
	srv := apptest.Start(t, func(o *app.Options) { o.Tokens = tokens })
	srv.Tokens = tokens
	claims := func(roles ...string) map[string]any {
		return map[string]any{"sub": "idp-admin", "org": "acme", "role": roles, "exp": time.Now().Add(time.Hour).Unix()}
	}
	const q = `{ twoFactorSettings { __typename } }`
	for _, tc := range []struct {
		name, token, want string
	}{
		{"IdP admin", s.mint(t, claims("user", "admin")), ""},
		{"IdP user", s.mint(t, claims("user", "offline_access")), "FORBIDDEN"},
		{"IdP no known role", s.mint(t, claims("offline_access")), "UNAUTHENTICATED"},
		{"unknown kid", newSigner(t, jwa.ES256(), "k9").mint(t, claims("admin")), "UNAUTHENTICATED"},
		{"own HS256 admin", srv.Token(t, auth.Caller{UserID: "a", Company: "acme", Role: auth.RoleAdmin}), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := (&apptest.Client{URL: srv.URL + "/query", Token: tc.token}).Do(t, q, nil)
			codes := r.Codes()
			if (tc.want == "" && len(codes) > 0) || (tc.want != "" && (len(codes) == 0 || codes[0] != tc.want)) {
				t.Errorf("status %d, codes %v; want %q", r.Status, codes, tc.want)
			}
		})
	}
}
