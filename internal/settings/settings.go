// Package settings holds each company's 2FA configuration: how codes are
// delivered, whom users may contact when locked out, and the defaults for
// new users.
package settings

import (
	"context"
	"errors"

	"fmt"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

// DeliveryMethod is how codes reach users.
type DeliveryMethod string

// Delivery methods.
const (
	SMSWithEmailBackup DeliveryMethod = "SMS_WITH_EMAIL_BACKUP"
	EmailOnly          DeliveryMethod = "EMAIL_ONLY"
)

// Valid reports whether m is a known method.
func (m DeliveryMethod) Valid() bool { return m == SMSWithEmailBackup || m == EmailOnly }

// ContactPerson is shown to users who ran out of code attempts.
type ContactPerson struct {
	Name  string `json:"name"`
	Email string `json:"email,omitempty"`
	Phone string `json:"phone,omitempty"`
}

// ErrConflict means the settings changed after the caller's
// ExpectedUpdatedAt: nothing was written.
var ErrConflict = errors.New("settings changed since they were read")

// Settings is one company's configuration.
type Settings struct {
	Company        string
	DeliveryMethod DeliveryMethod
	Contact        *ContactPerson
	// Defaults holds, for every app, whether new users start with 2FA on.
	Defaults  map[apps.App]bool
	UpdatedAt time.Time
}

// AuditWriter appends an audit row inside the caller's transaction and
// announces it once that transaction has committed.
type AuditWriter interface {
	Write(tx *gorm.DB, e *audit.Event) error
	Announce(ctx context.Context, events ...*audit.Event)
}

// Service reads and changes settings.
type Service struct {
	db    *gorm.DB
	audit AuditWriter
	cache *Cache // nil: every read goes to the database
}

// Option configures a Service.
type Option func(*Service)

// WithCache reads ForCompany (and Get) through c, whose loads should be
// Loader's; a committed change is put into c, so this instance reads its
// own writes at once. Other instances learn of it through the notices
// that whoever wires c feeds to Invalidate.
func WithCache(c *Cache) Option { return func(s *Service) { s.cache = c } }

// NewService returns a settings service.
func NewService(db *gorm.DB, audit AuditWriter, opts ...Option) *Service {
	s := &Service{db: db, audit: audit}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Loader reads a company's settings from db, creating the defaults on
// first use: what a Cache in front of the service loads.
func Loader(db *gorm.DB) func(ctx context.Context, company string) (Settings, error) {
	return func(ctx context.Context, company string) (Settings, error) {
		row, err := load(db.WithContext(ctx), company, "")
		if err != nil {
			return Settings{}, err
		}
		return fromRow(row), nil
	}
}

// Get returns the caller's company settings. Admin only.
func (s *Service) Get(ctx context.Context, c auth.Caller) (Settings, error) {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return Settings{}, fmt.Errorf("get settings: %w", err)
	}
	return s.ForCompany(ctx, c.Company)
}

// ForCompany returns a company's settings, creating the defaults on first
// use. It is for other services acting on the company's behalf. With a
// cache the result is shared: read it, never change it.
func (s *Service) ForCompany(ctx context.Context, company string) (Settings, error) {
	get := Loader(s.db)
	if s.cache != nil {
		get = s.cache.Get
	}
	set, err := get(ctx, company)
	if err != nil {
		return Settings{}, fmt.Errorf("get settings: %w", err)
	}
	return set, nil
}

// FillOnMiss is for a caller about to read company's data anyway (an
// issue reads the user): when the cache misses the company's settings it
// returns fill, to keep the settings row the caller read joined with its
// own (one statement instead of two); fill keeps it by the cache's rules
// (Cache.Miss). Nil when there is no cache, it holds the company, or it
// is dark. A row of another company, or none (the zero row of an outer
// join: defaults not created yet), is not kept.
func (s *Service) FillOnMiss(company string) func(models.CompanySettings) {
	if s.cache == nil {
		return nil
	}
	fill, miss := s.cache.Miss(company)
	if !miss {
		return nil
	}
	return func(r models.CompanySettings) {
		if r.CompanyID == company && r.DeliveryMethod != "" {
			fill(fromRow(r))
		}
	}
}

// DefaultsIn returns a company's settings inside the caller's transaction
// tx, creating the defaults on first use. The row stays share-locked until
// tx ends, so on PostgreSQL a concurrent change of the settings commits
// either wholly before tx's read or after tx (SQLite has one writer).
func (s *Service) DefaultsIn(tx *gorm.DB, company string) (Settings, error) {
	row, err := load(tx, company, "SHARE")
	if err != nil {
		return Settings{}, fmt.Errorf("get settings: %w", err)
	}
	return fromRow(row), nil
}

// load reads the row with a row lock of the given strength ("UPDATE",
// "SHARE") unless empty. Only a company seen for the first time costs
// more than that one SELECT: its defaults row is inserted (a concurrent
// first use is no conflict) and read again.
func load(tx *gorm.DB, company, lock string) (models.CompanySettings, error) {
	take := func(row *models.CompanySettings) error {
		q := tx.Where("company_id = ?", company)
		if lock != "" {
			q = q.Clauses(clause.Locking{Strength: lock})
		}
		return q.Take(row).Error
	}
	var row models.CompanySettings
	err := take(&row)
	if !errors.Is(err, gorm.ErrRecordNotFound) {
		return row, err
	}
	row = models.CompanySettings{CompanyID: company, DeliveryMethod: string(SMSWithEmailBackup)}
	if err := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&row).Error; err != nil {
		return row, err
	}
	return row, take(&row)
}

// GeneralUpdate changes the general settings. Nil fields stay as they
// are; SetContact with a nil Contact removes the contact person.
type GeneralUpdate struct {
	DeliveryMethod *DeliveryMethod
	SetContact     bool
	Contact        *ContactPerson
	// ExpectedUpdatedAt, when set, must equal the stored UpdatedAt (to the
	// millisecond), or nothing is written and the error is ErrConflict.
	ExpectedUpdatedAt *time.Time
}

// validate checks u and returns it with the contact's name in its stored
// form (NFC); the caller's ContactPerson is not changed.
func (u GeneralUpdate) validate() (GeneralUpdate, error) {
	var v validation.Errors
	if u.DeliveryMethod != nil && !u.DeliveryMethod.Valid() {
		v.Add(validation.CodeInvalidValue, "unknown delivery method", "deliveryMethod")
	}
	if cp := u.Contact; u.SetContact && cp != nil {
		c := *cp
		c.Name = v.Text(cp.Name, true, validation.MaxNameLen, "contactPerson", "name")
		u.Contact = &c
		if cp.Email != "" {
			v.Email(cp.Email, "contactPerson", "email")
		}
		if cp.Phone != "" {
			v.Phone(cp.Phone, "contactPerson", "phone")
		}
		if cp.Email == "" && cp.Phone == "" {
			v.Add(validation.CodeRequired, "give an email or a phone so users can reach this person", "contactPerson")
		}
	}
	return u, v.Err()
}

// UpdateGeneral changes the delivery method and contact person. Admin only.
// With ErrConflict the returned settings are the current ones.
func (s *Service) UpdateGeneral(ctx context.Context, c auth.Caller, u GeneralUpdate) (Settings, error) {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return Settings{}, fmt.Errorf("update general settings: %w", err)
	}
	u, err := u.validate()
	if err != nil {
		return Settings{}, fmt.Errorf("update general settings: %w", err)
	}
	return s.update(ctx, c, audit.GeneralSettingsChanged, u.ExpectedUpdatedAt, func(row *models.CompanySettings) audit.Change {
		ch := audit.Change{Before: map[string]any{}, After: map[string]any{}}
		if m := u.DeliveryMethod; m != nil && string(*m) != row.DeliveryMethod {
			ch.Before["deliveryMethod"], ch.After["deliveryMethod"] = row.DeliveryMethod, *m
			row.DeliveryMethod = string(*m)
		}
		if before := contactOf(*row); u.SetContact && !sameContact(before, u.Contact) {
			ch.Before["contactPerson"], ch.After["contactPerson"] = before, u.Contact
			row.ContactName, row.ContactEmail, row.ContactPhone = nil, nil, nil
			if cp := u.Contact; cp != nil {
				row.ContactName, row.ContactEmail, row.ContactPhone = &cp.Name, models.Nullable(cp.Email), models.Nullable(cp.Phone)
			}
		}
		return ch
	})
}

// DefaultsUpdate changes whether new users start with 2FA on. Apps not in
// Defaults stay as they are.
type DefaultsUpdate struct {
	Defaults map[apps.App]bool
	// ExpectedUpdatedAt works as in GeneralUpdate.
	ExpectedUpdatedAt *time.Time
}

// UpdateDefaults changes the defaults for new users. Admin only. With
// ErrConflict the returned settings are the current ones.
func (s *Service) UpdateDefaults(ctx context.Context, c auth.Caller, u DefaultsUpdate) (Settings, error) {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return Settings{}, fmt.Errorf("update default settings: %w", err)
	}
	for app := range u.Defaults {
		if !app.Valid() {
			var v validation.Errors
			v.Add(validation.CodeInvalidValue, "unknown app", "app")
			return Settings{}, fmt.Errorf("update default settings: %w", v)
		}
	}
	return s.update(ctx, c, audit.DefaultSettingsChanged, u.ExpectedUpdatedAt, func(row *models.CompanySettings) audit.Change {
		// Audit details are keyed by the app's name ("web", "manager").
		ch := audit.Change{Before: map[string]any{}, After: map[string]any{}}
		for _, app := range apps.All() {
			if on, ok := u.Defaults[app]; ok && on != row.Default(app) {
				ch.Before[string(app)], ch.After[string(app)] = row.Default(app), on
				row.SetDefault(app, on)
			}
		}
		return ch
	})
}

// update applies edit to the locked row and writes the change and its
// audit row in one transaction. An edit that changes nothing writes
// nothing; neither does one whose expected UpdatedAt is stale (ErrConflict,
// with the current settings).
func (s *Service) update(ctx context.Context, c auth.Caller, action audit.Action, expected *time.Time,
	edit func(*models.CompanySettings) audit.Change) (Settings, error) {
	var (
		row      models.CompanySettings
		event    *audit.Event
		conflict bool
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		if row, err = load(tx, c.Company, "UPDATE"); err != nil {
			return err
		}
		// Checked under the row lock, so of concurrent writers expecting
		// the same value exactly one passes. Commits only a first use's
		// defaults row, so the settings returned with the conflict exist.
		if conflict = expected != nil && !sameMilli(row.UpdatedAt, *expected); conflict {
			return nil
		}
		ch := edit(&row)
		if len(ch.After) == 0 {
			return nil
		}
		row.UpdatedAt = nextStamp(row.UpdatedAt, time.Now())
		stamp := func() time.Time { return row.UpdatedAt }
		if err := tx.Session(&gorm.Session{NowFunc: stamp}).Save(&row).Error; err != nil {
			return err
		}
		event = &audit.Event{
			Company: c.Company,
			Action:  action,
			Actor:   audit.ActorOf(c),
			Details: audit.Details(ch),
		}
		return s.audit.Write(tx, event)
	})
	if err != nil {
		return Settings{}, fmt.Errorf("update settings: %w", err)
	}
	// Committed, and read under the row lock: the newest settings there are.
	if s.cache != nil {
		s.cache.Put(c.Company, fromRow(row))
	}
	if conflict {
		return fromRow(row), fmt.Errorf("update settings: %w", ErrConflict)
	}
	s.audit.Announce(ctx, event)
	return fromRow(row), nil
}

// sameMilli compares at the DateTime scalar's precision, the precision
// clients see UpdatedAt in.
func sameMilli(a, b time.Time) bool {
	return a.Truncate(time.Millisecond).Equal(b.Truncate(time.Millisecond))
}

// nextStamp is a change's UpdatedAt: now at millisecond precision, but
// always at least a millisecond after prev, so that every write moves the
// value clients compare and two writes in one millisecond still conflict.
func nextStamp(prev, now time.Time) time.Time {
	next, floor := now.UTC().Truncate(time.Millisecond), prev.UTC().Truncate(time.Millisecond).Add(time.Millisecond)
	if next.Before(floor) {
		return floor
	}
	return next
}

func fromRow(r models.CompanySettings) Settings {
	defaults := make(map[apps.App]bool, len(apps.All()))
	for _, app := range apps.All() {
		defaults[app] = r.Default(app)
	}
	return Settings{
		Company:        r.CompanyID,
		DeliveryMethod: DeliveryMethod(r.DeliveryMethod),
		Contact:        contactOf(r),
		Defaults:       defaults,
		UpdatedAt:      r.UpdatedAt.UTC(),
	}
}

func contactOf(r models.CompanySettings) *ContactPerson {
	if r.ContactName == nil {
		return nil
	}
	return &ContactPerson{Name: *r.ContactName, Email: models.Value(r.ContactEmail), Phone: models.Value(r.ContactPhone)}
}

func sameContact(a, b *ContactPerson) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}
