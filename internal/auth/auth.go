// Package auth turns bearer tokens into callers and decides what a caller
// may do. The company always comes from the token, never from arguments.
package auth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Role is what kind of caller this is.
type Role string

// Roles a token may carry.
const (
	RoleAdmin   Role = "admin"   // company administrators: everything in their company
	RoleService Role = "service" // the platform's backend
	RoleUser    Role = "user"    // an end user, about themself
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleAdmin || r == RoleService || r == RoleUser }

// Errors the GraphQL layer maps to codes.
var (
	ErrUnauthenticated = errors.New("missing, malformed, expired or wrongly signed token")
	ErrForbidden       = errors.New("not allowed for this role")
)

// Caller is who is making a request.
type Caller struct {
	UserID  string
	Company string
	Role    Role
	Name    string // display name for the audit log; may be empty
	// ExpiresAt is when the token stops being valid; long-lived
	// subscriptions end then.
	ExpiresAt time.Time
}

// Require returns ErrForbidden unless the caller has one of roles.
func (c Caller) Require(roles ...Role) error {
	for _, r := range roles {
		if c.Role == r {
			return nil
		}
	}
	return fmt.Errorf("%s may not do this: %w", c.Role, ErrForbidden)
}

type ctxKey struct{}

// WithCaller stores c in ctx.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the caller, or ErrUnauthenticated.
func FromContext(ctx context.Context) (Caller, error) {
	c, ok := ctx.Value(ctxKey{}).(Caller)
	if !ok {
		return Caller{}, ErrUnauthenticated
	}
	return c, nil
}

// Tokens signs and verifies caller tokens: HS256 with the shared secret,
// and RS256, ES256 and EdDSA with the identity provider's key set.
type Tokens struct {
	secret   []byte // nil: HS256 is off (the key set alone)
	jwks     *JWKS  // nil: HS256 only
	names    ClaimNames
	issuer   string // required in tokens when set
	audience string // required in tokens when set
	maxTTL   time.Duration
	parser   *jwt.Parser
}

// DefaultMaxTTL is how far ahead a token's exp may be unless WithMaxTTL
// says otherwise: a leaked token with a far exp would work for years.
const DefaultMaxTTL = 720 * time.Hour

// leeway absorbs clock differences between the signer and this server.
const leeway = 30 * time.Second

// MaxCompanyLen bounds the company claim, in bytes; sub follows the rules
// for ids (validation.MaxIDLen characters).
const MaxCompanyLen = 64

// Option configures Tokens.
type Option func(*Tokens)

// WithIssuer makes iss a required issuer: tokens must carry it as their
// iss, and Sign puts it there. Empty checks nothing.
func WithIssuer(iss string) Option { return func(t *Tokens) { t.issuer = iss } }

// WithAudience makes aud a required audience: tokens' aud must name it,
// and Sign puts it there. Empty checks nothing.
func WithAudience(aud string) Option { return func(t *Tokens) { t.audience = aud } }

// WithJWKS also accepts tokens signed with the keys of k.
func WithJWKS(k *JWKS) Option { return func(t *Tokens) { t.jwks = k } }

// WithClaimNames reads the company, role and name from these claims, and
// Sign writes them there. Empty fields keep the defaults.
func WithClaimNames(n ClaimNames) Option {
	return func(t *Tokens) {
		d := DefaultClaimNames
		t.names = ClaimNames{Company: cmp.Or(n.Company, d.Company), Role: cmp.Or(n.Role, d.Role), Name: cmp.Or(n.Name, d.Name)}
	}
}

// MaxTTL is the longest lifetime a token may have.
func (t *Tokens) MaxTTL() time.Duration { return t.maxTTL }

// WithMaxTTL bounds how far ahead a token's exp may be; zero keeps the
// default.
func WithMaxTTL(d time.Duration) Option {
	return func(t *Tokens) {
		if d > 0 {
			t.maxTTL = d
		}
	}
}

// NewTokens returns a signer and verifier for secret. A short secret is
// refused: HS256 with a guessable key is no authentication at all. With
// WithJWKS the secret may be empty: then only the key set's tokens count.
func NewTokens(secret []byte, opts ...Option) (*Tokens, error) {
	t := &Tokens{maxTTL: DefaultMaxTTL, names: DefaultClaimNames}
	for _, o := range opts {
		o(t)
	}
	if len(secret) > 0 || t.jwks == nil {
		if len(secret) < 32 {
			return nil, errors.New("token secret must be at least 32 bytes")
		}
		t.secret = secret
	}
	if err := t.names.validate(); err != nil {
		return nil, err
	}
	var algs []string
	if t.secret != nil {
		algs = append(algs, jwt.SigningMethodHS256.Alg())
	}
	if t.jwks != nil {
		algs = append(algs, algRS256, algES256, algEdDSA)
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(algs),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway),
	}
	if t.issuer != "" {
		popts = append(popts, jwt.WithIssuer(t.issuer))
	}
	if t.audience != "" {
		popts = append(popts, jwt.WithAudience(t.audience))
	}
	t.parser = jwt.NewParser(popts...)
	return t, nil
}

// Verify checks a token and returns its caller. The error never quotes
// the token or a claim: a client sees only a fixed reason.
func (t *Tokens) Verify(token string) (Caller, error) {
	c := claims{names: t.names}
	if _, err := t.parser.ParseWithClaims(token, &c, t.key); err != nil {
		return Caller{}, fmt.Errorf("%w: %s", ErrUnauthenticated, reason(err))
	}
	if until := c.ExpiresAt.ahead(time.Now()); until > t.maxTTL+leeway {
		return Caller{}, fmt.Errorf("%w: exp is too far ahead", ErrUnauthenticated)
	}
	caller, err := c.caller()
	if err != nil {
		return Caller{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return caller, nil
}

// key picks the verification key for a token whose alg the parser has
// already found in the allowed list. HS256 gets the shared secret and
// nothing else; the others get a key-set key whose type fits the alg, so
// a public key never becomes an HMAC secret.
func (t *Tokens) key(tok *jwt.Token) (any, error) {
	alg, _ := tok.Header["alg"].(string)
	if alg == jwt.SigningMethodHS256.Alg() {
		if t.secret == nil {
			return nil, errors.New("HS256 is not configured")
		}
		return t.secret, nil
	}
	if t.jwks == nil {
		return nil, errors.New("no key set is configured")
	}
	kid, _ := tok.Header["kid"].(string)
	return t.jwks.key(kid, alg)
}

// reason names a parse failure in fixed words, not the library's, which
// can quote types and fields from the token.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token is expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token is not valid yet"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer), errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong issuer or audience"
	}
	return "invalid claims"
}

// Sign issues a token for c that lives for ttl. It refuses a caller that
// Verify would refuse, and a ttl over the maximum.
func (t *Tokens) Sign(c Caller, ttl time.Duration) (string, error) {
	if t.secret == nil {
		return "", errors.New("sign token: no AUTH_JWT_SECRET: tokens for the identity provider's keys are signed by the provider")
	}
	if ttl > t.maxTTL {
		return "", fmt.Errorf("sign token: ttl %v is over the maximum %v (AUTH_MAX_TOKEN_TTL)", ttl, t.maxTTL)
	}
	now := time.Now()
	body := claims{
		registered: registered{Subject: c.UserID, Issuer: t.issuer, IssuedAt: newDate(now), ExpiresAt: newDate(now.Add(ttl))},
		Company:    c.Company, Role: c.Role, Name: c.Name, names: t.names,
	}
	if t.audience != "" {
		body.Audience = jwt.ClaimStrings{t.audience}
	}
	checked, err := body.caller()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	body.Name = checked.Name // NFC
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, body).SignedString(t.secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}
