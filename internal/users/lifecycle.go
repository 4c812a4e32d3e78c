package users

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/mask"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

// ErrStateUnavailable means the change could not reach the users' Redis
// state (pending codes, locks).
var ErrStateUnavailable = errors.New("two-factor state unavailable")

// RedisState is the users' Redis state: pending codes, counters and locks.
// internal/challenge implements it; it is an interface because challenge
// imports this package.
type RedisState interface {
	// Void makes the user's pending codes unusable.
	Void(ctx context.Context, company, userID string) error
	// Forget deletes all of the user's state.
	Forget(ctx context.Context, company, userID string) error
	// Locked tells which of ids are locked now.
	Locked(ctx context.Context, company string, ids []string) (map[string]bool, error)
}

// WithRedisState lets the service void codes, forget deleted users and
// filter by lock. Without it, those are no-ops and the locked filter fails.
func WithRedisState(r RedisState) Option { return func(s *Service) { s.state = r } }

// Change is the input to Update: a nil field is kept, an empty one cleared.
type Change struct {
	ID                        string
	Email, Phone, DisplayName *string
}

func (ch *Change) validate() error {
	var v validation.Errors
	v.ID(ch.ID, "id")
	if ch.Email != nil && *ch.Email != "" {
		v.Email(*ch.Email, "email")
	}
	if ch.Phone != nil && *ch.Phone != "" {
		v.Phone(*ch.Phone, "phone")
	}
	if ch.DisplayName != nil {
		*ch.DisplayName = v.Text(*ch.DisplayName, false, validation.MaxNameLen, "displayName")
	}
	return v.Err()
}

// apply sets the changed fields on row and returns the audit details of
// the change, nil when nothing changed, and whether an address changed.
func (ch Change) apply(row *models.User) (details map[string][2]any, addressChanged bool) {
	details = map[string][2]any{}
	set := func(name string, dst **string, v *string, masker func(string) string) {
		old := models.Value(*dst)
		if v == nil || *v == old {
			return
		}
		details[name] = [2]any{maybe(masker(old)), maybe(masker(*v))}
		*dst = models.Nullable(*v)
	}
	set("email", &row.Email, ch.Email, mask.Email)
	set("phone", &row.Phone, ch.Phone, mask.Phone)
	set("displayName", &row.DisplayName, ch.DisplayName, func(s string) string { return s })
	_, e := details["email"]
	_, p := details["phone"]
	if len(details) == 0 {
		return nil, false
	}
	return details, e || p
}

// maybe is s, or null in JSON when s is empty (a cleared field).
func maybe(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func changeDetails(d map[string][2]any) audit.Change {
	c := audit.Change{Before: map[string]any{}, After: map[string]any{}}
	for k, v := range d {
		c.Before[k], c.After[k] = v[0], v[1]
	}
	return c
}

// Update changes a user's addresses and name. Admins and services only.
// A change of phone or email voids the user's pending codes; a change to
// nothing writes nothing.
func (s *Service) Update(ctx context.Context, c auth.Caller, ch Change) (User, error) {
	if err := c.Require(auth.RoleAdmin, auth.RoleService); err != nil {
		return User{}, fmt.Errorf("update user: %w", err)
	}
	if err := ch.validate(); err != nil {
		return User{}, fmt.Errorf("update user: %w", err)
	}
	var (
		row     models.User
		event   *audit.Event
		address bool
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := lockUser(tx, c.Company, ch.ID, &row); err != nil {
			return err
		}
		var details map[string][2]any
		if details, address = ch.apply(&row); details == nil {
			return nil
		}
		if err := saveAddresses(tx, &row); err != nil {
			return err
		}
		event = s.event(c, audit.UserUpdated, fromRow(row), changeDetails(details))
		return s.audit.Write(tx, event)
	})
	if err != nil {
		return User{}, fmt.Errorf("update user %q: %w", ch.ID, err)
	}
	s.audit.Announce(ctx, event)
	if address {
		if err := s.void(ctx, c.Company, ch.ID); err != nil {
			return fromRow(row), fmt.Errorf("update user %q: saved, but: %w", ch.ID, err)
		}
	}
	return fromRow(row), nil
}

func lockUser(tx *gorm.DB, company, id string, row *models.User) error {
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).
		Where("company_id = ? AND id = ?", company, id).Take(row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ErrNotFound
	}
	return err
}

func saveAddresses(tx *gorm.DB, row *models.User) error {
	return tx.Model(&models.User{}).Where("company_id = ? AND id = ?", row.CompanyID, row.ID).
		Updates(map[string]any{"email": row.Email, "phone": row.Phone, "display_name": row.DisplayName}).Error
}

func (s *Service) event(c auth.Caller, a audit.Action, u User, details any) *audit.Event {
	return &audit.Event{Company: c.Company, Action: a, Actor: audit.ActorOf(c), Target: target(u), Details: audit.Details(details)}
}

// void runs after the commit, so no code issued from here on can go to the
// old address.
func (s *Service) void(ctx context.Context, company, id string) error {
	if s.state == nil {
		return nil
	}
	if err := s.state.Void(ctx, company, id); err != nil {
		return fmt.Errorf("%w: %w", ErrStateUnavailable, err)
	}
	return nil
}

// Delete removes a user and their Redis state. Admins and services only.
// Earlier audit rows keep their snapshots of the user. The Redis state is
// forgotten even when the row is already gone, so retrying a delete whose
// Redis step failed finishes the job (and still answers not found).
func (s *Service) Delete(ctx context.Context, c auth.Caller, id string) (User, error) {
	if err := c.Require(auth.RoleAdmin, auth.RoleService); err != nil {
		return User{}, fmt.Errorf("delete user: %w", err)
	}
	var (
		row   models.User
		event *audit.Event
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := lockUser(tx, c.Company, id, &row); err != nil {
			return err
		}
		if err := tx.Where("company_id = ? AND id = ?", c.Company, id).Delete(&models.User{}).Error; err != nil {
			return err
		}
		u := fromRow(row)
		event = s.event(c, audit.UserDeleted, u, audit.Change{Before: maskedSnapshot(u), After: map[string]any{}})
		return s.audit.Write(tx, event)
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return User{}, fmt.Errorf("delete user %q: %w", id, err)
	}
	s.audit.Announce(ctx, event)
	if s.state != nil {
		if ferr := s.state.Forget(ctx, c.Company, id); ferr != nil {
			return User{}, fmt.Errorf("delete user %q: %w: %w", id, ErrStateUnavailable, ferr)
		}
	}
	if err != nil {
		return User{}, fmt.Errorf("delete user %q: %w", id, err)
	}
	return fromRow(row), nil
}

// maskedSnapshot is snapshot with the addresses masked, for rows that
// outlive the user.
func maskedSnapshot(u User) map[string]any {
	u.Email, u.Phone = mask.Email(u.Email), mask.Phone(u.Phone)
	return snapshot(u)
}
