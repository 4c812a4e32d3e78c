package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// The asymmetric algorithms a key set's keys may sign with, one per key
// type: RSA keys RS256, EC P-256 keys ES256, OKP Ed25519 keys EdDSA.
const (
	algRS256 = "RS256"
	algES256 = "ES256"
	algEdDSA = "EdDSA"
)

// Limits on fetching a key set.
const (
	DefaultJWKSMinRefresh = 30 * time.Second // least time between two fetches
	DefaultJWKSMaxAge     = time.Hour        // a set this old is refetched
	jwksTimeout           = 5 * time.Second
	jwksMaxBody           = 1 << 20
	minRSABits            = 2048
)

// JWKSOptions say where an identity provider's public keys are.
type JWKSOptions struct {
	URL  string // https://, or http:// on a loopback address
	File string // a JWKS document on disk; exactly one of URL and File
	// MinRefresh is the least time between two fetches (an unknown kid
	// triggers one); zero means DefaultJWKSMinRefresh.
	MinRefresh time.Duration
	// MaxAge: a set older than this is refetched in the background, so
	// that keys the provider dropped stop working; zero means
	// DefaultJWKSMaxAge.
	MaxAge time.Duration
	Now    func() time.Time // nil: time.Now
	Logger *slog.Logger     // nil: slog.Default()
}

// JWKS is a cached key set. A fetch that fails keeps the last good set.
type JWKS struct {
	o          JWKSOptions
	client     *http.Client
	keys       atomic.Pointer[keySet]
	background atomic.Bool // a background refresh is running
	mu         sync.Mutex  // serializes fetches; guards lastTry
	lastTry    time.Time
	fetches    atomic.Int64
}

type keySet struct {
	byKID   map[string]publicKey
	only    *publicKey // the one key of a one-key set, for tokens without kid
	fetched time.Time
}

type publicKey struct {
	alg string // the only alg this key verifies
	key any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

var errUnknownKey = errors.New("no key for this kid and alg")

// NewJWKS loads a key set. A URL that cannot be fetched now is logged,
// not an error: the service starts, and its tokens fail until a fetch
// works. A file that cannot be read is an error (a local mistake).
func NewJWKS(o JWKSOptions) (*JWKS, error) {
	if (o.URL == "") == (o.File == "") {
		return nil, errors.New("key set: set exactly one of a URL and a file")
	}
	if o.URL != "" {
		if err := checkJWKSURL(o.URL); err != nil {
			return nil, err
		}
	}
	o.MinRefresh = cmpOr(o.MinRefresh, DefaultJWKSMinRefresh)
	o.MaxAge = cmpOr(o.MaxAge, DefaultJWKSMaxAge)
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &JWKS{o: o, client: &http.Client{Timeout: jwksTimeout, CheckRedirect: checkRedirect}}
	s.lastTry = o.Now()
	if err := s.load(s.lastTry); err != nil {
		if o.File != "" {
			return nil, err
		}
		o.Logger.Warn("identity provider key set is unreachable; its tokens fail until a fetch works", "err", err)
	}
	return s, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Fetches counts fetch attempts, for tests and metrics.
func (s *JWKS) Fetches() int64 { return s.fetches.Load() }

// key returns the key for kid if its type fits alg. An unknown kid
// triggers a refresh (rotation), at most once per MinRefresh.
func (s *JWKS) key(kid, alg string) (any, error) {
	set := s.keys.Load()
	if set != nil && s.o.Now().Sub(set.fetched) > s.o.MaxAge && s.background.CompareAndSwap(false, true) {
		go func() { defer s.background.Store(false); s.refresh() }()
	}
	k, ok := set.lookup(kid)
	if !ok {
		s.refresh()
		k, ok = s.keys.Load().lookup(kid)
	}
	if !ok || k.alg != alg {
		return nil, errUnknownKey
	}
	return k.key, nil
}

func (set *keySet) lookup(kid string) (publicKey, bool) {
	if set == nil {
		return publicKey{}, false
	}
	if kid == "" && set.only != nil {
		return *set.only, true
	}
	k, ok := set.byKID[kid]
	return k, ok && kid != ""
}

// refresh fetches the set unless a fetch was tried less than MinRefresh
// ago; a failure is logged and the last good set kept.
func (s *JWKS) refresh() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.o.Now()
	if now.Sub(s.lastTry) < s.o.MinRefresh {
		return
	}
	s.lastTry = now
	if err := s.load(now); err != nil {
		s.o.Logger.Warn("identity provider key set: refresh failed; keeping the last good set", "err", err)
	}
}

func (s *JWKS) load(now time.Time) error {
	s.fetches.Add(1)
	body, err := s.read()
	if err != nil {
		return err
	}
	set, err := parseKeySet(body)
	if err != nil {
		return err
	}
	set.fetched = now
	s.keys.Store(set)
	return nil
}

// read fetches the document, bounded in time and size.
func (s *JWKS) read() ([]byte, error) {
	if s.o.File != "" {
		f, err := os.Open(s.o.File)
		if err != nil {
			return nil, fmt.Errorf("key set: %w", err)
		}
		defer f.Close()
		return readLimited(f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), jwksTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.o.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("key set: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("key set: fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("key set: fetch: status %d", resp.StatusCode)
	}
	return readLimited(resp.Body)
}

func readLimited(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, jwksMaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("key set: read: %w", err)
	}
	if len(b) > jwksMaxBody {
		return nil, fmt.Errorf("key set: larger than %d bytes", jwksMaxBody)
	}
	return b, nil
}

// parseKeySet keeps the signing keys this service can use; a set with
// none is an error, so that it never replaces a good one.
func parseKeySet(body []byte) (*keySet, error) {
	parsed, err := jwk.Parse(body)
	if err != nil {
		return nil, fmt.Errorf("key set: parse: %w", err)
	}
	set := &keySet{byKID: map[string]publicKey{}}
	var usable []publicKey
	for i := range parsed.Len() {
		k, _ := parsed.Key(i)
		pk, ok := usableKey(k)
		if !ok {
			continue
		}
		usable = append(usable, pk)
		if kid, _ := k.KeyID(); kid != "" {
			if _, dup := set.byKID[kid]; !dup {
				set.byKID[kid] = pk
			}
		}
	}
	switch len(usable) {
	case 0:
		return nil, errors.New("key set: no usable signing key (RSA ≥ 2048 bits, EC P-256 or Ed25519)")
	case 1:
		set.only = &usable[0] // no ambiguity: a token without kid may use it
	}
	return set, nil
}

// usableKey returns k's public key and the one alg it may verify. A key
// for encryption, of another type or curve, or whose own alg differs, is
// skipped; symmetric keys always are (HS256 is the shared secret's only).
func usableKey(k jwk.Key) (publicKey, bool) {
	if use, ok := k.KeyUsage(); ok && use != "sig" {
		return publicKey{}, false
	}
	pub, err := k.PublicKey()
	if err != nil {
		return publicKey{}, false
	}
	var raw any
	if err := jwk.Export(pub, &raw); err != nil {
		return publicKey{}, false
	}
	var pk publicKey
	switch key := raw.(type) {
	case *rsa.PublicKey:
		pk = publicKey{algRS256, key}
		if key.N.BitLen() < minRSABits {
			return publicKey{}, false
		}
	case *ecdsa.PublicKey:
		pk = publicKey{algES256, key}
		if key.Curve != elliptic.P256() {
			return publicKey{}, false
		}
	case ed25519.PublicKey:
		pk = publicKey{algEdDSA, key}
	default:
		return publicKey{}, false
	}
	if a, ok := k.Algorithm(); ok && a.String() != pk.alg {
		return publicKey{}, false
	}
	return pk, true
}

// checkJWKSURL allows https://, and http:// to this machine only (tests,
// a local identity provider): keys fetched in the clear can be swapped.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New("AUTH_JWKS_URL is not an absolute URL")
	}
	if u.Scheme == "https" || (u.Scheme == "http" && loopbackHost(u.Hostname())) {
		return nil
	}
	return errors.New("AUTH_JWKS_URL must be https:// (http:// only on a loopback address)")
}

func loopbackHost(h string) bool {
	ip := net.ParseIP(h)
	return h == "localhost" || (ip != nil && ip.IsLoopback())
}

// checkRedirect keeps a redirect to the same rules as the URL itself.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("key set: too many redirects")
	}
	return checkJWKSURL(req.URL.String())
}
