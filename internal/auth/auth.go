// Package auth turns bearer tokens into callers and decides what a caller
// may do. The company always comes from the token, never from arguments.
package auth

import (
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

// claims is the token body.
type claims struct {
	Company string `json:"company"`
	Role    Role   `json:"role"`
	Name    string `json:"name,omitempty"`
	jwt.RegisteredClaims
}

// Tokens signs and verifies HS256 caller tokens.
type Tokens struct {
	secret []byte
	parser *jwt.Parser
}

// NewTokens returns a signer and verifier for secret. A short secret is
// refused: HS256 with a guessable key is no authentication at all.
func NewTokens(secret []byte) (*Tokens, error) {
	if len(secret) < 32 {
		return nil, errors.New("token secret must be at least 32 bytes")
	}
	return &Tokens{
		secret: secret,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(30*time.Second),
		),
	}, nil
}

// Verify checks a token and returns its caller.
func (t *Tokens) Verify(token string) (Caller, error) {
	var c claims
	if _, err := t.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return t.secret, nil }); err != nil {
		return Caller{}, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	switch {
	case c.Subject == "" || len(c.Subject) > 128:
		return Caller{}, fmt.Errorf("%w: sub must be 1 to 128 characters", ErrUnauthenticated)
	case c.Company == "" || len(c.Company) > 64:
		return Caller{}, fmt.Errorf("%w: company must be 1 to 64 characters", ErrUnauthenticated)
	case !c.Role.Valid():
		return Caller{}, fmt.Errorf("%w: role must be admin, service or user", ErrUnauthenticated)
	}
	return Caller{UserID: c.Subject, Company: c.Company, Role: c.Role, Name: c.Name, ExpiresAt: c.ExpiresAt.Time}, nil
}

// Sign issues a token for c that lives for ttl.
func (t *Tokens) Sign(c Caller, ttl time.Duration) (string, error) {
	if !c.Role.Valid() {
		return "", fmt.Errorf("sign token: unknown role %q", c.Role)
	}
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims{
		Company: c.Company,
		Role:    c.Role,
		Name:    c.Name,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.UserID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	})
	s, err := tok.SignedString(t.secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return s, nil
}
