package assertion_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jwt"

	"github.com/twofactor/service/internal/assertion"
)

func TestSignVerifiesWithJWKS(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s := assertion.NewSigner("twofactor-test", key, func() time.Time { return now })
	tok, err := s.Sign(assertion.Grant{ChallengeID: "ch-1", Company: "co", UserID: "u1", App: "web", Channel: "sms"})
	if err != nil {
		t.Fatal(err)
	}
	set, err := jwk.Parse(s.JWKS())
	if err != nil {
		t.Fatalf("JWKS %s: %v", s.JWKS(), err)
	}
	k, _ := set.Key(0)
	kid, _ := k.KeyID()
	// The key id is the RFC 7638 thumbprint, as the JOSE library computes it.
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if kid != base64.RawURLEncoding.EncodeToString(tp) {
		t.Errorf("kid %s is not the RFC 7638 thumbprint", kid)
	}
	parsed, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithClock(jwt.ClockFunc(func() time.Time { return now })),
		jwt.WithIssuer("twofactor-test"))
	if err != nil {
		t.Fatalf("verify with the JWKS: %v", err)
	}
	exp, _ := parsed.Expiration()
	if !exp.Equal(now.Add(assertion.TTL)) || assertion.TTL != 2*time.Minute {
		t.Errorf("exp %v, want now + 2m", exp)
	}
	// Two minutes and a second later it no longer verifies.
	later := now.Add(assertion.TTL + time.Second)
	if _, err := jwt.Parse([]byte(tok), jwt.WithKeySet(set), jwt.WithClock(jwt.ClockFunc(func() time.Time { return later }))); err == nil {
		t.Error("an expired assertion verified")
	}
	// Another key's JWKS does not verify it.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherSet, err := jwk.Parse(assertion.NewSigner("twofactor-test", other, nil).JWKS())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwt.Parse([]byte(tok), jwt.WithKeySet(otherSet), jwt.WithValidate(false)); err == nil {
		t.Error("verified with another key")
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "assertion.pem")
	k1, err := assertion.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
	k2, err := assertion.LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Error("second start made a new key")
	}
	k3, err := assertion.LoadKey(path)
	if err != nil || !k1.Equal(k3) {
		t.Errorf("LoadKey: %v", err)
	}
}

func TestLoadKeyRejects(t *testing.T) {
	dir := t.TempDir()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"not-pem":   []byte("hello"),
		"ecdsa":     pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"garbage":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		"sha-bytes": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: sha256.New().Sum(nil)}),
	}
	for name, b := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := assertion.LoadKey(p); err == nil {
			t.Errorf("%s: loaded", name)
		}
		if _, err := assertion.LoadOrCreateKey(p); err == nil {
			t.Errorf("%s: LoadOrCreateKey replaced or accepted a bad key file", name)
		}
	}
	if _, err := assertion.LoadKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file loaded")
	}
}

// Processes starting together agree on one key, and none reads a
// half-written file.
func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	for range 20 {
		path := filepath.Join(t.TempDir(), "assertion.pem")
		keys := make([]ed25519.PrivateKey, 8)
		errs := make([]error, 8)
		var wg sync.WaitGroup
		for i := range keys {
			wg.Go(func() { keys[i], errs[i] = assertion.LoadOrCreateKey(path) })
		}
		wg.Wait()
		for i := range keys {
			if errs[i] != nil {
				t.Fatalf("starter %d: %v", i, errs[i])
			}
			if !keys[i].Equal(keys[0]) {
				t.Fatalf("starter %d has another key", i)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".assertion-key-*")); len(left) != 0 {
			t.Fatalf("temporary files left: %v", left)
		}
	}
}
