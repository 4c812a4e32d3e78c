// Package assertion signs the proof of a passed 2FA challenge: a short-lived
// EdDSA (Ed25519) JWT that the platform verifies offline with the public
// key published as a JWKS.
package assertion

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TTL is how long an assertion is valid: long enough to hand it to the
// platform, short enough that a leaked one is soon useless.
const TTL = 2 * time.Minute

// Claims of an assertion.
type Claims struct {
	Company string   `json:"company"`
	App     string   `json:"app"`
	AMR     []string `json:"amr"`
	jwt.RegisteredClaims
}

// Signer signs assertions with one Ed25519 key.
type Signer struct {
	issuer string
	key    ed25519.PrivateKey
	kid    string
	now    func() time.Time
}

// NewSigner returns a signer. now may be nil for the wall clock.
func NewSigner(issuer string, key ed25519.PrivateKey, now func() time.Time) *Signer {
	if now == nil {
		now = time.Now
	}
	return &Signer{issuer: issuer, key: key, kid: thumbprint(key.Public().(ed25519.PublicKey)), now: now}
}

// Grant is what was proven.
type Grant struct {
	ChallengeID string
	Company     string
	UserID      string
	App         string // "web" or "manager"
	Channel     string // "sms" or "email"
}

// Sign returns the assertion JWT for g.
func (s *Signer) Sign(g Grant) (string, error) {
	now := s.now()
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, Claims{
		Company: g.Company,
		App:     g.App,
		AMR:     []string{"otp", g.Channel},
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.issuer,
			Subject:   g.UserID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(TTL)),
			ID:        g.ChallengeID,
		},
	})
	tok.Header["kid"] = s.kid
	out, err := tok.SignedString(s.key)
	if err != nil {
		return "", fmt.Errorf("sign assertion: %w", err)
	}
	return out, nil
}

// JWKS is the public key set served at /.well-known/jwks.json.
func (s *Signer) JWKS() []byte {
	pub := s.key.Public().(ed25519.PublicKey)
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "OKP",
		"crv": "Ed25519",
		"x":   base64.RawURLEncoding.EncodeToString(pub),
		"kid": s.kid,
		"alg": "EdDSA",
		"use": "sig",
	}}})
	return b
}

// thumbprint is the RFC 7638 key id.
func thumbprint(pub ed25519.PublicKey) string {
	canonical := `{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// LoadKey reads a PKCS#8 PEM Ed25519 private key.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read assertion key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("read assertion key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("read assertion key %s: %w", path, err)
	}
	ed, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("read assertion key %s: not an Ed25519 key", path)
	}
	return ed, nil
}

// LoadOrCreateKey reads path, generating a new key there on first use
// (embedded mode).
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	k, err := LoadKey(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate assertion key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(crypto.PrivateKey(priv))
	if err != nil {
		return nil, fmt.Errorf("encode assertion key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create key dir: %w", err)
	}
	// Write a temporary file and link it into place: a process that
	// starts at the same moment sees either no key or a whole one, never a
	// half-written file (O_EXCL on the final path would expose that).
	f, err := os.CreateTemp(filepath.Dir(path), ".assertion-key-*")
	if err != nil {
		return nil, fmt.Errorf("create assertion key: %w", err)
	}
	defer os.Remove(f.Name())
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("write assertion key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write assertion key: %w", err)
	}
	if err := os.Link(f.Name(), path); errors.Is(err, os.ErrExist) {
		return LoadKey(path) // another process made it first
	} else if err != nil {
		return nil, fmt.Errorf("create assertion key: %w", err)
	}
	return priv, nil
}
