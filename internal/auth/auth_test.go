package auth_test

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/validation"
)

var secret = []byte("test-secret-test-secret-0123456789")

func newTokens(t testing.TB, opts ...auth.Option) *auth.Tokens {
	t.Helper()
	tokens, err := auth.NewTokens(secret, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// hs256 signs arbitrary claims with the test secret, as an attacker who
// holds a token could not but a confused or compromised issuer could.
func hs256(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func validClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "alice", "company": "acme", "role": "admin", "name": "Alice",
		"exp": time.Now().Add(time.Hour).Unix()}
}

func with(kv ...any) jwt.MapClaims {
	c := validClaims()
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(c, kv[i].(string))
		} else {
			c[kv[i].(string)] = kv[i+1]
		}
	}
	return c
}

// TestClaimsNotChecked is issue 8, finding 7: sub, company and name were
// taken verbatim ("ja\u202Ene\u0000\n\u001b[31m" became an audit actor),
// exp could be a string or years ahead, and iss and aud were ignored.
// Every such token is refused with ErrUnauthenticated and a message that
// does not repeat the claim.
func TestClaimsNotChecked(t *testing.T) {
	t.Parallel()
	plain := newTokens(t)
	strict := newTokens(t, auth.WithIssuer("https://idp.example"), auth.WithAudience("twofactor"), auth.WithMaxTTL(2*time.Hour))
	now := time.Now()
	evil := "ja\u202ene\u0000\n\u001b[31m"
	cases := []struct {
		name   string
		tokens *auth.Tokens
		claims jwt.MapClaims
	}{
		{"sub with controls", plain, with("sub", evil)},
		{"sub with zero-width space", plain, with("sub", "ali\u200bce")},
		{"sub with RTL override", plain, with("sub", "ali\u202ece")},
		{"sub with U+0085", plain, with("sub", "ali\u0085ce")},
		{"sub with U+2028", plain, with("sub", "ali\u2028ce")},
		{"sub with space", plain, with("sub", "ali ce")},
		{"sub non-character", plain, with("sub", "ali\ufdd0ce")},
		{"sub invalid UTF-8", plain, with("sub", "ali\xffce")},
		{"sub too long", plain, with("sub", strings.Repeat("s", 129))},
		{"sub not a string", plain, with("sub", 42)},
		{"company with controls", plain, with("company", evil)},
		{"company with zero-width space", plain, with("company", "ac\u200bme")},
		{"company with bidi isolate", plain, with("company", "ac\u2066me")},
		{"company too long", plain, with("company", strings.Repeat("c", 65))},
		{"name with controls", plain, with("name", evil)},
		{"name with RTL override", plain, with("name", "Ali\u202ece")},
		{"name with U+2029", plain, with("name", "Ali\u2029ce")},
		{"name with BOM", plain, with("name", "\ufeffAlice")},
		{"name blank", plain, with("name", "   ")},
		{"name too long", plain, with("name", strings.Repeat("n", 201))},
		{"name not a string", plain, with("name", []string{"Alice"})},
		{"role not a string", plain, with("role", 1)},
		{"exp missing", plain, with("exp", nil)},
		{"exp as a numeric string", plain, with("exp", "9999999999")},
		{"exp as a word", plain, with("exp", "tomorrow")},
		{"exp as a bool", plain, with("exp", true)},
		{"exp as an object", plain, with("exp", map[string]any{"n": 1})},
		{"exp past the default max TTL", plain, with("exp", now.Add(721*time.Hour).Unix())},
		{"exp a year ahead", plain, with("exp", now.AddDate(1, 0, 0).Unix())},
		{"exp huge", plain, with("exp", 1e300)},
		{"exp negative", plain, with("exp", -1)},
		{"iat as a string", plain, with("iat", "0")},
		{"nbf as a string", plain, with("nbf", "0")},
		{"exp past a configured max TTL", strict, with("iss", "https://idp.example", "aud", "twofactor", "exp", now.Add(3*time.Hour).Unix())},
		{"iss missing", strict, with("aud", "twofactor")},
		{"iss wrong", strict, with("iss", "https://evil.example", "aud", "twofactor")},
		{"aud missing", strict, with("iss", "https://idp.example")},
		{"aud wrong", strict, with("iss", "https://idp.example", "aud", []string{"other"})},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.tokens.Verify(hs256(t, tc.claims))
			if !errors.Is(err, auth.ErrUnauthenticated) {
				t.Fatalf("Verify = %+v, %v; want ErrUnauthenticated", c, err)
			}
			for _, k := range []string{"sub", "company", "name", "exp", "iss", "aud"} {
				if v, ok := tc.claims[k].(string); ok && len(v) > 3 && strings.Contains(err.Error(), v) {
					t.Errorf("error %q repeats the %s claim", err, k)
				}
			}
			if strings.ContainsAny(err.Error(), "\u202e\x00\x1b\n") || strings.Contains(err.Error(), "auth.Role") {
				t.Errorf("error %q is not generic", err)
			}
		})
	}
}

// The claims that pass: a good token, iss and aud when configured, a
// name put in NFC, exp right at the maximum.
func TestVerifyAccepts(t *testing.T) {
	t.Parallel()
	plain := newTokens(t)
	strict := newTokens(t, auth.WithIssuer("https://idp.example"), auth.WithAudience("twofactor"))
	now := time.Now()
	for _, tc := range []struct {
		name     string
		tokens   *auth.Tokens
		claims   jwt.MapClaims
		wantName string
	}{
		{"plain", plain, validClaims(), "Alice"},
		{"no name", plain, with("name", nil), ""},
		{"name NFC", plain, with("name", "Jose\u0301"), "José"},
		{"unicode ids", plain, with("sub", "ünï-ид", "company", "李"), "Alice"},
		{"exp at the max TTL", plain, with("exp", now.Add(auth.DefaultMaxTTL).Unix()), "Alice"},
		{"iss and aud", strict, with("iss", "https://idp.example", "aud", "twofactor"), "Alice"},
		{"aud among others", strict, with("iss", "https://idp.example", "aud", []string{"x", "twofactor"}), "Alice"},
		{"iss and aud ignored when not configured", plain, with("iss", "https://any.example", "aud", "any"), "Alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.tokens.Verify(hs256(t, tc.claims))
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if c.UserID != tc.claims["sub"] || c.Company != tc.claims["company"] || c.Name != tc.wantName {
				t.Errorf("caller %+v", c)
			}
		})
	}
}

// Sign puts iss and aud in when configured, so `go run . token` makes
// tokens the server takes, and refuses what Verify would refuse.
func TestSign(t *testing.T) {
	t.Parallel()
	strict := newTokens(t, auth.WithIssuer("https://idp.example"), auth.WithAudience("twofactor"), auth.WithMaxTTL(2*time.Hour))
	caller := auth.Caller{UserID: "alice", Company: "acme", Role: auth.RoleAdmin, Name: "Alice"}
	tok, err := strict.Sign(caller, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := strict.Verify(tok)
	if err != nil || got.UserID != "alice" || got.Company != "acme" || got.Name != "Alice" {
		t.Fatalf("Verify(Sign) = %+v, %v", got, err)
	}
	var mc jwt.MapClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &mc); err != nil {
		t.Fatal(err)
	}
	if mc["iss"] != "https://idp.example" || mc["aud"] == nil {
		t.Errorf("signed claims %v, want iss and aud", mc)
	}
	if _, err := newTokens(t).Verify(tok); err != nil {
		t.Errorf("a verifier without iss/aud refuses it: %v", err)
	}
	if _, err := strict.Sign(caller, 3*time.Hour); err == nil {
		t.Error("Sign with a ttl over the max succeeded")
	}
	for _, bad := range []auth.Caller{
		{UserID: "a\u202eb", Company: "acme", Role: auth.RoleAdmin},
		{UserID: "alice", Company: "ac me", Role: auth.RoleAdmin},
		{UserID: "alice", Company: "acme", Role: auth.RoleAdmin, Name: "A\x1b[31m"},
		{UserID: "alice", Company: "acme", Role: "root"},
	} {
		if _, err := strict.Sign(bad, time.Hour); err == nil {
			t.Errorf("Sign(%+v) succeeded", bad)
		}
	}
}

// signRaw signs any payload bytes, JSON or not, so the fuzzer gets past
// the signature to the claims.
func signRaw(t testing.TB, payload string) string {
	t.Helper()
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	unsigned := head + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(unsigned, secret)
	if err != nil {
		t.Fatal(err)
	}
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// forgeRaw signs any payload bytes with s, under its kid.
func forgeRaw(t testing.TB, s signer, payload string) string {
	t.Helper()
	b, err := jws.Sign([]byte(payload), jws.WithKey(s.alg, s.priv))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzVerify feeds Verify arbitrary tokens, and arbitrary payloads signed
// with the right key. It must never panic, and any caller it returns must
// have claims that pass the rules for ids and names, a known role and an
// exp within the maximum TTL. Run it with
//
//	go test ./internal/auth -run '^$' -fuzz FuzzVerify -fuzztime 30s
func FuzzVerify(f *testing.F) {
	tokens := newTokens(f, auth.WithMaxTTL(2*time.Hour))
	exp := strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)
	good := hs256(f, with("exp", time.Now().Add(time.Hour).Unix()))
	for _, seed := range [][2]string{
		{good, `{"sub":"alice","company":"acme","role":"admin","exp":` + exp + `}`},
		{good + "x", `{"sub":"a\u202eb","company":"acme","role":"user","exp":` + exp + `}`},
		{"", `{"sub":"alice","company":"acme","role":"service","name":"Jose\u0301","exp":` + exp + `}`},
		{"a.b.c", `{"sub":"alice","company":"acme","role":"admin","exp":"` + exp + `"}`},
		{"Bearer x", `{"sub":"alice","company":"acme","role":"admin","exp":1e300}`},
		{"..", `{"sub":"alice","company":"acme","role":"admin","exp":` + exp + `.5,"nbf":-1}`},
		{"e30.e30.e30", `{"sub":"alice","company":"acme","role":"admin","exp":` + exp + `,"aud":[1]}`},
		{"\xff", `[]`},
		{"", `null`},
		{"", `{"sub":"alice","sub":"bob","company":"acme","role":"admin","exp":` + exp + `}`},
	} {
		f.Add(seed[0], seed[1])
	}
	// The same with a key set too: arbitrary tokens, and payloads signed
	// with its Ed25519 key.
	ed := newSigner(f, jwa.EdDSA(), "k1")
	path := filepath.Join(f.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwksJSON(f, ed), 0o600); err != nil {
		f.Fatal(err)
	}
	k, err := auth.NewJWKS(auth.JWKSOptions{File: path})
	if err != nil {
		f.Fatal(err)
	}
	withJWKS := newTokens(f, auth.WithMaxTTL(2*time.Hour), auth.WithJWKS(k))
	f.Fuzz(func(t *testing.T, token, payload string) {
		edTok := forgeRaw(t, ed, payload)
		for _, tc := range []struct {
			v   *auth.Tokens
			tok string
		}{{tokens, token}, {tokens, signRaw(t, payload)}, {withJWKS, token}, {withJWKS, edTok}} {
			c, err := tc.v.Verify(tc.tok)
			if err != nil {
				if !errors.Is(err, auth.ErrUnauthenticated) {
					t.Fatalf("Verify error %v is not ErrUnauthenticated", err)
				}
				continue
			}
			checkCaller(t, c, 2*time.Hour)
		}
	})
}

// checkCaller fails unless c is one that Sign would sign and Verify
// should admit.
func checkCaller(t *testing.T, c auth.Caller, maxTTL time.Duration) {
	t.Helper()
	var v validation.Errors
	v.ID(c.UserID, "sub")
	v.ID(c.Company, "company")
	if name := v.Text(c.Name, false, validation.MaxNameLen, "name"); name != c.Name {
		t.Errorf("name %q is not in NFC", c.Name)
	}
	switch {
	case len(v) > 0:
		t.Errorf("caller %+v admitted with invalid claims: %v", c, v)
	case len(c.Company) > auth.MaxCompanyLen || !c.Role.Valid():
		t.Errorf("caller %+v admitted with a bad company or role", c)
	case time.Until(c.ExpiresAt) > maxTTL+time.Minute || time.Until(c.ExpiresAt) < -time.Minute:
		t.Errorf("caller %+v admitted with exp %v", c, c.ExpiresAt)
	}
}
