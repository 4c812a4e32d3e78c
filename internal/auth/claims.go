package auth

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/twofactor/service/internal/validation"
)

// claims is the token body. It spells out the registered claims instead of
// embedding jwt.RegisteredClaims so that the dates are strict (see date).
type claims struct {
	Subject   string           `json:"sub"`
	Company   string           `json:"company"`
	Role      Role             `json:"role"`
	Name      string           `json:"name,omitempty"`
	Issuer    string           `json:"iss,omitempty"`
	Audience  jwt.ClaimStrings `json:"aud,omitempty"`
	ExpiresAt *date            `json:"exp,omitempty"`
	IssuedAt  *date            `json:"iat,omitempty"`
	NotBefore *date            `json:"nbf,omitempty"`
}

var _ jwt.Claims = claims{}

func (c claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt.numeric(), nil }
func (c claims) GetIssuedAt() (*jwt.NumericDate, error)       { return c.IssuedAt.numeric(), nil }
func (c claims) GetNotBefore() (*jwt.NumericDate, error)      { return c.NotBefore.numeric(), nil }
func (c claims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c claims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c claims) GetAudience() (jwt.ClaimStrings, error)       { return c.Audience, nil }

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
