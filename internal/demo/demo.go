// Package demo is embedded mode's company "demo": the identities that the
// browser pages are handed on this machine, and the user the reference
// login screen signs in as.
package demo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/users"
)

// Company is embedded mode's company, used by the banner's token, the
// pages and the README's examples alike.
const Company = "demo"

// Admin is the demo company's administrator.
var Admin = AdminOf(Company)

// AdminOf is the demo administrator of company.
func AdminOf(company string) auth.Caller {
	return auth.Caller{UserID: "admin", Company: company, Role: auth.RoleAdmin, Name: "Demo Admin"}
}

// User is the person the demo login screen signs in as.
var User = users.NewUser{ID: "demo-user", Email: "demo.user@example.com", Phone: "+37120000001", DisplayName: "Demo User"}

// PageTokenTTL is how long a token minted for one page load lasts, unless
// AUTH_MAX_TOKEN_TTL is shorter.
const PageTokenTTL = 12 * time.Hour

// Signer mints caller tokens.
type Signer interface {
	Sign(c auth.Caller, ttl time.Duration) (string, error)
	MaxTTL() time.Duration
}

func (d Identities) ttl() time.Duration { return min(PageTokenTTL, d.Tokens.MaxTTL()) }

// Users is the part of the users service the demo needs.
type Users interface {
	Create(ctx context.Context, c auth.Caller, n users.NewUser) (users.User, error)
	ByID(ctx context.Context, company, id string) (users.User, error)
	SetTwoFactor(ctx context.Context, c auth.Caller, id string, app users.App, enabled bool) (users.User, error)
}

// Identities mints the demo tokens.
type Identities struct {
	Tokens Signer
	Users  Users
	// Company is Company unless tests give each run its own.
	Company string
}

func (d Identities) company() string {
	if d.Company == "" {
		return Company
	}
	return d.Company
}

// AdminToken mints a demo admin token.
func (d Identities) AdminToken(context.Context) (string, error) {
	return d.Tokens.Sign(AdminOf(d.company()), d.ttl())
}

// EnsureUser creates the demo user, with 2FA on in the Web app, unless
// they exist. Only their creation is ever done for them: an admin's later
// changes to the user stand.
func (d Identities) EnsureUser(ctx context.Context) error {
	company, admin := d.company(), AdminOf(d.company())
	_, err := d.Users.ByID(ctx, company, User.ID)
	if !errors.Is(err, users.ErrNotFound) {
		return err
	}
	_, err = d.Users.Create(ctx, admin, User)
	if errors.Is(err, users.ErrAlreadyExists) { // another instance at the same moment
		return nil
	}
	if err != nil {
		return fmt.Errorf("create demo user: %w", err)
	}
	if _, err := d.Users.SetTwoFactor(ctx, admin, User.ID, users.Web, true); err != nil {
		return fmt.Errorf("demo user: switch 2FA on: %w", err)
	}
	return nil
}

// UserToken mints a user token for the demo user, creating them the first
// time. The pages call it only for a person on this machine opening the
// page (web.MintFor), never for another site's request.
func (d Identities) UserToken(ctx context.Context) (string, error) {
	if err := d.EnsureUser(ctx); err != nil {
		return "", err
	}
	return d.Tokens.Sign(auth.Caller{UserID: User.ID, Company: d.company(), Role: auth.RoleUser, Name: User.DisplayName}, d.ttl())
}
