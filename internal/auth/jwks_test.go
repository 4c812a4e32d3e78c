package auth_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	jwxjwt "github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/twofactor/service/internal/auth"
)

// signer is a private key of the test's identity provider.
type signer struct {
	alg  jwa.SignatureAlgorithm
	priv jwk.Key // carries the kid
}

var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// newSigner makes a key of the kind alg needs, named kid. RSA keys are
// shared (slow to make); kids tell them apart.
func newSigner(t testing.TB, alg jwa.SignatureAlgorithm, kid string) signer {
	t.Helper()
	var raw any
	var err error
	switch alg {
	case jwa.RS256():
		raw = rsaKey()
	case jwa.ES256():
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.EdDSA():
		_, raw, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	k, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Set(jwk.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	return signer{alg: alg, priv: k}
}

func (s signer) public(t testing.TB) jwk.Key {
	t.Helper()
	pub, err := s.priv.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// jwksJSON is the public key set of signers.
func jwksJSON(t testing.TB, signers ...signer) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, s := range signers {
		if err := set.AddKey(s.public(t)); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// mint signs claims with a real JOSE library, the kid in the header.
func (s signer) mint(t testing.TB, claims map[string]any) string {
	t.Helper()
	tok := jwxjwt.New()
	for k, v := range claims {
		if err := tok.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	b, err := jwxjwt.Sign(tok, jwxjwt.WithKey(s.alg, s.priv))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// forge signs payload with key under any alg and header kid, as an
// attacker who names a key the server trusts would.
func forge(t testing.TB, alg jwa.SignatureAlgorithm, key any, kid string, claims map[string]any) string {
	t.Helper()
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func goodClaims() map[string]any {
	return map[string]any{"sub": "alice", "company": "acme", "role": "admin", "name": "Alice",
		"exp": time.Now().Add(time.Hour).Unix()}
}

// clock is a settable clock for the refresh interval.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now()} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// idp serves a key set on loopback and counts fetches; fail makes it
// answer 500.
type idp struct {
	*httptest.Server
	body    atomic.Pointer[[]byte]
	fail    atomic.Bool
	fetches atomic.Int64
}

func newIDP(t testing.TB, signers ...signer) *idp {
	t.Helper()
	p := &idp{}
	p.serve(t, signers...)
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		if p.fail.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(*p.body.Load())
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *idp) serve(t testing.TB, signers ...signer) {
	t.Helper()
	b := jwksJSON(t, signers...)
	p.body.Store(&b)
}

// verifier builds Tokens on p's key set with the clock c; secret may be
// nil for a key-set-only verifier.
func (p *idp) verifier(t testing.TB, c *clock, secret []byte, opts ...auth.Option) (*auth.Tokens, *auth.JWKS) {
	t.Helper()
	k, err := auth.NewJWKS(auth.JWKSOptions{URL: p.URL, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens(secret, append(opts, auth.WithJWKS(k))...)
	if err != nil {
		t.Fatal(err)
	}
	return tokens, k
}

func mustAccept(t *testing.T, v *auth.Tokens, tok string) auth.Caller {
	t.Helper()
	c, err := v.Verify(tok)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return c
}

func mustRefuse(t *testing.T, v *auth.Tokens, tok string) {
	t.Helper()
	if c, err := v.Verify(tok); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("Verify = %+v, %v; want ErrUnauthenticated", c, err)
	}
}

// RS256, ES256 and EdDSA tokens from the key set are accepted, with the
// same claim rules as HS256 ones; with a secret too, either kind is.
func TestJWKSAlgorithms(t *testing.T) {
	t.Parallel()
	signers := []signer{newSigner(t, jwa.RS256(), "rsa1"), newSigner(t, jwa.ES256(), "ec1"), newSigner(t, jwa.EdDSA(), "ed1")}
	p := newIDP(t, signers...)
	both, _ := p.verifier(t, newClock(), secret, auth.WithIssuer("https://idp.example"))
	only, _ := p.verifier(t, newClock(), nil)
	for _, s := range signers {
		t.Run(s.alg.String(), func(t *testing.T) {
			claims := goodClaims()
			c := mustAccept(t, only, s.mint(t, claims))
			if c.UserID != "alice" || c.Company != "acme" || c.Role != auth.RoleAdmin || c.Name != "Alice" {
				t.Errorf("caller %+v", c)
			}
			mustRefuse(t, both, s.mint(t, claims)) // no iss
			claims["iss"] = "https://idp.example"
			mustAccept(t, both, s.mint(t, claims))
			claims["exp"] = time.Now().Add(800 * time.Hour).Unix()
			mustRefuse(t, both, s.mint(t, claims))
			delete(claims, "exp")
			mustRefuse(t, both, s.mint(t, claims))
			claims = goodClaims()
			claims["sub"] = "a\u202eb"
			mustRefuse(t, only, s.mint(t, claims))
		})
	}
	mustAccept(t, both, hs256(t, with("iss", "https://idp.example")))
	mustRefuse(t, only, hs256(t, validClaims())) // no secret: no HS256
}

// The alg is checked against the key's type, not trusted from the
// header: a token that names a trusted kid under another alg, signed
// with the attacker's own key, an HS256 token whose secret is a public
// key, and alg none are all refused, with or without a shared secret.
func TestJWKSAlgorithmConfusion(t *testing.T) {
	t.Parallel()
	rsaS, ecS, edS := newSigner(t, jwa.RS256(), "rsa1"), newSigner(t, jwa.ES256(), "ec1"), newSigner(t, jwa.EdDSA(), "ed1")
	p := newIDP(t, rsaS, ecS, edS)
	both, _ := p.verifier(t, newClock(), secret)
	only, _ := p.verifier(t, newClock(), nil)
	evilEC, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, evilEd, _ := ed25519.GenerateKey(rand.Reader)
	evilRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, err := x509.MarshalPKIXPublicKey(&rsaKey().PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	edX, _ := edS.public(t).(jwk.OKPPublicKey).X()
	c := goodClaims()
	cases := []struct {
		name string
		tok  string
	}{
		{"RS256 header, EC kid", forge(t, jwa.RS256(), evilRSA, "ec1", c)},
		{"RS256 header, OKP kid", forge(t, jwa.RS256(), evilRSA, "ed1", c)},
		{"ES256 header, RSA kid", forge(t, jwa.ES256(), evilEC, "rsa1", c)},
		{"ES256 header, OKP kid", forge(t, jwa.ES256(), evilEC, "ed1", c)},
		{"EdDSA header, EC kid", forge(t, jwa.EdDSA(), evilEd, "ec1", c)},
		{"EdDSA header, RSA kid", forge(t, jwa.EdDSA(), evilEd, "rsa1", c)},
		{"ES384 with a P-384 key", forge(t, jwa.ES384(), p384, "ec1", c)},
		{"HS256 keyed with the RSA PEM", forge(t, jwa.HS256(), pemBytes, "rsa1", c)},
		{"HS256 keyed with the RSA JWK", forge(t, jwa.HS256(), jwksJSON(t, rsaS), "rsa1", c)},
		{"HS256 keyed with the EC JWK", forge(t, jwa.HS256(), jwksJSON(t, ecS), "ec1", c)},
		{"HS256 keyed with the Ed25519 key", forge(t, jwa.HS256(), edX, "ed1", c)},
		{"RS256 by an unknown key under a known kid", forge(t, jwa.RS256(), evilRSA, "rsa1", c)},
		{"alg none", unsigned(t, `{"alg":"none","kid":"rsa1"}`, c)},
		{"alg None", unsigned(t, `{"alg":"None"}`, c)},
		{"no alg", unsigned(t, `{"kid":"rsa1"}`, c)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mustRefuse(t, both, tc.tok)
			mustRefuse(t, only, tc.tok)
		})
	}
}

// unsigned is header.payload. with an empty signature.
func unsigned(t testing.TB, header string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(header)) + "." + enc(payload) + "."
}

// A new kid in the served set is taken after a refresh; an unknown kid
// is refused and refetches at most once per MinRefresh, counted on the
// test server (the clock is fake, so nothing sleeps).
func TestJWKSRotationAndUnknownKid(t *testing.T) {
	t.Parallel()
	old, next, stranger := newSigner(t, jwa.ES256(), "k1"), newSigner(t, jwa.ES256(), "k2"), newSigner(t, jwa.EdDSA(), "nobody")
	p := newIDP(t, old)
	clk := newClock()
	v, k := p.verifier(t, clk, nil)
	mustAccept(t, v, old.mint(t, goodClaims()))
	if n := p.fetches.Load(); n != 1 {
		t.Fatalf("fetches after start = %d, want 1", n)
	}
	for range 5 {
		mustRefuse(t, v, stranger.mint(t, goodClaims()))
	}
	if n := p.fetches.Load(); n != 1 {
		t.Errorf("unknown kids within 30 s of a fetch fetched %d times, want none", n-1)
	}
	clk.Advance(31 * time.Second)
	for range 5 {
		mustRefuse(t, v, stranger.mint(t, goodClaims()))
	}
	if n := p.fetches.Load(); n != 2 {
		t.Errorf("fetches = %d, want 2: one refresh per 30 s however many unknown kids", n)
	}
	p.serve(t, old, next) // rotation: the provider adds k2
	mustRefuse(t, v, next.mint(t, goodClaims()))
	clk.Advance(31 * time.Second)
	mustAccept(t, v, next.mint(t, goodClaims()))
	mustAccept(t, v, old.mint(t, goodClaims()))
	if n, kn := p.fetches.Load(), k.Fetches(); n != 3 || kn != 3 {
		t.Errorf("fetches = %d (counted %d), want 3", n, kn)
	}
}

// A key set unreachable at start: the verifier is built, its tokens fail,
// and once the set is reachable (after the refresh interval) they work.
// A refresh that fails later keeps the last good set.
func TestJWKSUnreachable(t *testing.T) {
	t.Parallel()
	k1, k2 := newSigner(t, jwa.RS256(), "k1"), newSigner(t, jwa.EdDSA(), "k2")
	p := newIDP(t, k1)
	p.fail.Store(true)
	clk := newClock()
	v, _ := p.verifier(t, clk, secret)
	mustRefuse(t, v, k1.mint(t, goodClaims()))
	mustAccept(t, v, hs256(t, validClaims())) // HS256 is unaffected
	p.fail.Store(false)
	clk.Advance(31 * time.Second)
	mustAccept(t, v, k1.mint(t, goodClaims()))

	p.fail.Store(true)
	p.serve(t, k2)
	clk.Advance(31 * time.Second)
	mustRefuse(t, v, k2.mint(t, goodClaims())) // triggers a failing refresh
	mustAccept(t, v, k1.mint(t, goodClaims()))
	if n := p.fetches.Load(); n != 3 {
		t.Errorf("fetches = %d, want 3", n)
	}
	clk.Advance(2 * time.Hour) // stale: refetched in the background, still failing
	mustAccept(t, v, k1.mint(t, goodClaims()))
}

// A set older than MaxAge is refetched, so a key the provider dropped
// stops working.
func TestJWKSDroppedKey(t *testing.T) {
	t.Parallel()
	k1, k2 := newSigner(t, jwa.ES256(), "k1"), newSigner(t, jwa.ES256(), "k2")
	p := newIDP(t, k1, k2)
	clk := newClock()
	v, _ := p.verifier(t, clk, nil)
	mustAccept(t, v, k1.mint(t, goodClaims()))
	p.serve(t, k2)
	clk.Advance(auth.DefaultJWKSMaxAge + time.Minute)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := v.Verify(k1.mint(t, goodClaims())); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a dropped key still works after the set went stale")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustAccept(t, v, k2.mint(t, goodClaims()))
}

// Bad sets and sources: not https, both or neither source, too large, no
// usable key. A bad served set is a warning (the verifier starts with
// nothing); a bad file or URL is an error.
func TestJWKSSources(t *testing.T) {
	t.Parallel()
	for _, o := range []auth.JWKSOptions{
		{},
		{URL: "https://idp.example/jwks", File: "/x"},
		{URL: "http://idp.example/jwks"},
		{URL: "ftp://127.0.0.1/jwks"},
		{URL: "/jwks"},
		{File: filepath.Join(t.TempDir(), "missing.json")},
	} {
		if _, err := auth.NewJWKS(o); err == nil {
			t.Errorf("NewJWKS(%+v) succeeded", o)
		}
	}
	for _, u := range []string{"https://idp.example/jwks", "http://localhost:1/jwks", "http://127.0.0.1:1/jwks", "http://[::1]:1/jwks"} {
		if _, err := auth.NewJWKS(auth.JWKSOptions{URL: u}); err != nil {
			t.Errorf("NewJWKS(%s): %v", u, err)
		}
	}
	s := newSigner(t, jwa.EdDSA(), "k1")
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	weakJWK, _ := jwk.Import(&weak.PublicKey)
	weakSet, _ := json.Marshal(map[string]any{"keys": []any{weakJWK}})
	hmacSet := []byte(`{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}`)
	big := make([]byte, 2<<20)
	for name, body := range map[string][]byte{"too large": big, "not JSON": []byte("<html>"), "only a 1024-bit RSA key": weakSet, "only an HMAC key": hmacSet} {
		t.Run(name, func(t *testing.T) {
			p := newIDP(t, s)
			p.body.Store(&body)
			v, _ := p.verifier(t, newClock(), nil)
			mustRefuse(t, v, s.mint(t, goodClaims()))
			mustRefuse(t, v, forge(t, jwa.HS256(), []byte("secret-secret-secret-secret-secret"), "k1", goodClaims()))
		})
	}
}

// AUTH_JWKS_FILE: the set is read from disk, and reread on an unknown
// kid, so replacing the file rotates keys.
func TestJWKSFile(t *testing.T) {
	t.Parallel()
	k1, k2 := newSigner(t, jwa.ES256(), "k1"), newSigner(t, jwa.RS256(), "k2")
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwksJSON(t, k1), 0o600); err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	k, err := auth.NewJWKS(auth.JWKSOptions{File: path, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewTokens(nil, auth.WithJWKS(k))
	if err != nil {
		t.Fatal(err)
	}
	mustAccept(t, v, k1.mint(t, goodClaims()))
	if err := os.WriteFile(path, jwksJSON(t, k1, k2), 0o600); err != nil {
		t.Fatal(err)
	}
	clk.Advance(31 * time.Second)
	mustAccept(t, v, k2.mint(t, goodClaims()))
}

// Claim names are configurable, and a role may be an array of which the
// highest known role counts; values follow the same rules.
func TestClaimNamesAndRoleArrays(t *testing.T) {
	t.Parallel()
	s := newSigner(t, jwa.EdDSA(), "k1")
	p := newIDP(t, s)
	names := auth.ClaimNames{Company: "org_id", Role: "roles", Name: "preferred_username"}
	custom, _ := p.verifier(t, newClock(), nil, auth.WithClaimNames(names))
	plain, _ := p.verifier(t, newClock(), nil)
	base := func(kv ...any) map[string]any {
		c := map[string]any{"sub": "alice", "org_id": "acme", "preferred_username": "Jose\u0301", "exp": time.Now().Add(time.Hour).Unix()}
		for i := 0; i < len(kv); i += 2 {
			c[kv[i].(string)] = kv[i+1]
		}
		return c
	}
	for _, tc := range []struct {
		name     string
		v        *auth.Tokens
		claims   map[string]any
		wantRole auth.Role // "" means refused
	}{
		{"custom names, role string", custom, base("roles", "service"), auth.RoleService},
		{"role array, highest counts", custom, base("roles", []any{"user", "admin", "service"}), auth.RoleAdmin},
		{"role array, unknown ignored", custom, base("roles", []any{"offline_access", "user"}), auth.RoleUser},
		{"role array, none known", custom, base("roles", []any{"offline_access", "root"}), ""},
		{"role array, empty", custom, base("roles", []any{}), ""},
		{"role array with a number", custom, base("roles", []any{"admin", 1}), ""},
		{"role array under the default name", plain, with("role", []any{"service", "user"}), auth.RoleService},
		{"role unknown string", custom, base("roles", "root"), ""},
		{"role missing", custom, base(), ""},
		{"default names not read when renamed", custom, with(), ""},
		{"custom company invalid", custom, base("roles", "user", "org_id", "ac\u202eme"), ""},
		{"custom company not a string", custom, base("roles", "user", "org_id", 7), ""},
		{"custom name with controls", custom, base("roles", "user", "preferred_username", "A\x1b[31m"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := s.mint(t, tc.claims)
			if tc.wantRole == "" {
				mustRefuse(t, tc.v, tok)
				return
			}
			c := mustAccept(t, tc.v, tok)
			if c.Role != tc.wantRole || c.Company != "acme" || c.UserID != "alice" {
				t.Errorf("caller %+v, want role %s", c, tc.wantRole)
			}
			if tc.v == custom && c.Name != "José" {
				t.Errorf("name %q, want José in NFC", c.Name)
			}
		})
	}
	for _, bad := range []auth.ClaimNames{{Role: "sub"}, {Company: "exp"}, {Company: "x", Role: "x"}} {
		if _, err := auth.NewTokens(secret, auth.WithClaimNames(bad)); err == nil {
			t.Errorf("claim names %+v accepted", bad)
		}
	}
	signer := newTokens(t, auth.WithClaimNames(names))
	tok, err := signer.Sign(auth.Caller{UserID: "a", Company: "acme", Role: auth.RoleUser}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c := mustAccept(t, signer, tok); c.Company != "acme" || c.Role != auth.RoleUser {
		t.Errorf("Sign/Verify with custom names: %+v", c)
	}
}
