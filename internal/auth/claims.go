package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/twofactor/service/internal/validation"
)

// ClaimNames name the claims that hold the company, the role and the
// display name; identity providers differ. The user id is always sub.
type ClaimNames struct{ Company, Role, Name string }

// DefaultClaimNames are this service's own claim names.
var DefaultClaimNames = ClaimNames{Company: "company", Role: "role", Name: "name"}

// validate refuses a name that would shadow a registered claim or another
// configured one: "role" read from "sub" would be a silent mix-up.
func (n ClaimNames) validate() error {
	seen := map[string]bool{"sub": true, "iss": true, "aud": true, "exp": true, "iat": true, "nbf": true, "jti": true}
	for _, v := range []string{n.Company, n.Role, n.Name} {
		if v == "" || seen[v] {
			return fmt.Errorf("claim name %q is empty, a registered claim or used twice", v)
		}
		seen[v] = true
	}
	return nil
}

// registered are the registered claims. The dates are strict (see date),
// which is why jwt.RegisteredClaims is not used.
type registered struct {
	Subject   string           `json:"sub"`
	Issuer    string           `json:"iss,omitempty"`
	Audience  jwt.ClaimStrings `json:"aud,omitempty"`
	ExpiresAt *date            `json:"exp,omitempty"`
	IssuedAt  *date            `json:"iat,omitempty"`
	NotBefore *date            `json:"nbf,omitempty"`
}

// claims is the token body: the registered claims and the three whose
// names are configured (names; the zero value means DefaultClaimNames).
type claims struct {
	registered
	Company string
	Role    Role
	Name    string
	names   ClaimNames
}

var _ jwt.Claims = claims{}

func (c claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt.numeric(), nil }
func (c claims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt.numeric(), nil }
func (c claims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore.numeric(), nil }
func (c claims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c claims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c claims) GetAudience() (jwt.ClaimStrings, error)       { return c.Audience, nil }

func (c claims) claimNames() ClaimNames {
	if c.names == (ClaimNames{}) {
		return DefaultClaimNames
	}
	return c.names
}

// UnmarshalJSON reads the registered claims and the configured ones. The
// company and name must be JSON strings; the role a string or an array
// of strings, of which the highest known role counts.
func (c *claims) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	if err := json.Unmarshal(b, &c.registered); err != nil {
		return err
	}
	n := c.claimNames()
	if err := stringClaim(m[n.Company], &c.Company); err != nil {
		return fmt.Errorf("%w: company", errClaims)
	}
	if err := stringClaim(m[n.Name], &c.Name); err != nil {
		return fmt.Errorf("%w: name", errClaims)
	}
	role, err := roleClaim(m[n.Role])
	if err != nil {
		return fmt.Errorf("%w: role", errClaims)
	}
	c.Role = role
	return nil
}

func stringClaim(raw json.RawMessage, dst *string) error {
	if raw == nil {
		return nil
	}
	return json.Unmarshal(raw, dst)
}

// roleRank orders the roles for a role array: the highest known counts.
var roleRank = map[Role]int{RoleUser: 1, RoleService: 2, RoleAdmin: 3}

// roleClaim reads a role string, or the highest known role of an array
// (unknown strings are ignored; none known leaves the role empty).
func roleClaim(raw json.RawMessage) (Role, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || trimmed[0] != '[' {
		var r Role
		return r, stringClaim(raw, (*string)(&r))
	}
	var roles []string
	if err := json.Unmarshal(trimmed, &roles); err != nil {
		return "", err
	}
	var best Role
	for _, r := range roles {
		if roleRank[Role(r)] > roleRank[best] {
			best = Role(r)
		}
	}
	return best, nil
}

// MarshalJSON writes the claims under the configured names, so that a
// token Sign makes is one Verify with the same names takes.
func (c claims) MarshalJSON() ([]byte, error) {
	m := map[string]any{"sub": c.Subject}
	n := c.claimNames()
	m[n.Company], m[n.Role] = c.Company, c.Role
	if c.Name != "" {
		m[n.Name] = c.Name
	}
	reg, err := json.Marshal(c.registered)
	if err != nil {
		return nil, err
	}
	var rm map[string]json.RawMessage
	if err := json.Unmarshal(reg, &rm); err != nil {
		return nil, err
	}
	for k, v := range rm {
		m[k] = v
	}
	return json.Marshal(m)
}

// errClaims says which claim is wrong, never what it holds: the value is
// the attacker's, and would end up in a response or a log.
var errClaims = errors.New("invalid claim")

// caller checks the identity claims by the rules for ids and names that
// user input follows, and returns the caller with the name in NFC. A
// token's sub and name end up in the audit log as they are.
func (c claims) caller() (Caller, error) {
	var v validation.Errors
	v.ID(c.Subject, "sub")
	v.ID(c.Company, "company")
	name := v.Text(c.Name, false, validation.MaxNameLen, "name")
	switch {
	case len(v) > 0:
		return Caller{}, fmt.Errorf("%w: %s", errClaims, v[0].Field[0])
	case len(c.Company) > MaxCompanyLen:
		return Caller{}, fmt.Errorf("%w: company", errClaims)
	case !c.Role.Valid():
		return Caller{}, fmt.Errorf("%w: role", errClaims)
	case c.ExpiresAt == nil:
		return Caller{}, fmt.Errorf("%w: exp", errClaims)
	}
	return Caller{UserID: c.Subject, Company: c.Company, Role: c.Role, Name: name, ExpiresAt: c.ExpiresAt.Time}, nil
}

// maxSeconds bounds dates to about the year 5000, far past any TTL, so
// that float seconds convert to time.Time exactly and never overflow.
const maxSeconds = 1e11

// date is a NumericDate that must be a JSON number. jwt alone also takes
// a numeric string ("exp":"1700000000"), and any float, however large.
type date struct{ time.Time }

func newDate(t time.Time) *date { return &date{t.Truncate(time.Second)} }

func (d *date) numeric() *jwt.NumericDate {
	if d == nil {
		return nil
	}
	return jwt.NewNumericDate(d.Time)
}

// ahead is how long after now d is; zero for a missing date.
func (d *date) ahead(now time.Time) time.Duration {
	if d == nil {
		return 0
	}
	return d.Time.Sub(now)
}

// MarshalJSON writes whole seconds, as NumericDate does.
func (d date) MarshalJSON() ([]byte, error) {
	return strconv.AppendInt(nil, d.Unix(), 10), nil
}

// UnmarshalJSON accepts a JSON number of seconds in [0, maxSeconds].
func (d *date) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || (b[0] != '-' && (b[0] < '0' || b[0] > '9')) {
		return errors.New("date claim is not a number")
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxSeconds {
		return errors.New("date claim is out of range")
	}
	sec, frac := math.Modf(f)
	d.Time = time.Unix(int64(sec), int64(frac*1e9))
	return nil
}
