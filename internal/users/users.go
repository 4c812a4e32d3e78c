// Package users holds the platform users known to the 2FA service and
// their per-app 2FA switches.
package users

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

// App is a frontend with its own 2FA switch; the list and each app's
// encodings live in internal/apps.
type App = apps.App

// Apps, re-exported from internal/apps.
const (
	Web     = apps.Web
	Manager = apps.Manager
)

// Errors the GraphQL layer maps to codes.
var (
	ErrNotFound      = errors.New("user not found")
	ErrAlreadyExists = errors.New("user already exists")
)

// User is a platform user.
type User struct {
	Company     string
	ID          string
	Email       string
	Phone       string
	DisplayName string
	// TwoFactor holds, for every app, whether 2FA is on. An unknown app
	// reads as off.
	TwoFactor map[App]bool
	CreatedAt time.Time
}

// AuditWriter appends an audit row inside the caller's transaction and
// announces it once that transaction has committed.
type AuditWriter interface {
	Write(tx *gorm.DB, e *audit.Event) error
	Announce(ctx context.Context, events ...*audit.Event)
}

// Defaults gives a company's settings, for the switches of new users. It
// reads them inside the creating transaction tx, locked against a
// concurrent change, so a new user gets the defaults in force when its
// audit row is written.
type Defaults interface {
	DefaultsIn(tx *gorm.DB, company string) (settings.Settings, error)
}

// Service reads and changes users.
type Service struct {
	db       *gorm.DB
	audit    AuditWriter
	defaults Defaults
	cursors  *cursor.Codec
	state    RedisState
}

// Option configures a Service.
type Option func(*Service)

// WithCodec seals the listing's cursors with c. Every instance must use the
// same key; without this option the service uses a key of its own, which
// suits tests only.
func WithCodec(c *cursor.Codec) Option { return func(s *Service) { s.cursors = c } }

// NewService returns a users service.
func NewService(db *gorm.DB, audit AuditWriter, defaults Defaults, opts ...Option) *Service {
	s := &Service{db: db, audit: audit, defaults: defaults}
	for _, o := range opts {
		o(s)
	}
	if s.cursors == nil {
		s.cursors = cursor.Ephemeral()
	}
	return s
}

// NewUser is the input to Create.
type NewUser struct {
	ID, Email, Phone, DisplayName string
}

// validate checks n and puts the display name in its stored form (NFC).
func (n *NewUser) validate() error {
	var v validation.Errors
	v.ID(n.ID, "id")
	if n.Email != "" {
		v.Email(n.Email, "email")
	}
	if n.Phone != "" {
		v.Phone(n.Phone, "phone")
	}
	n.DisplayName = v.Text(n.DisplayName, false, validation.MaxNameLen, "displayName")
	return v.Err()
}

// Create adds a user whose switches follow the company defaults. Admins
// and services only.
func (s *Service) Create(ctx context.Context, c auth.Caller, n NewUser) (User, error) {
	if err := c.Require(auth.RoleAdmin, auth.RoleService); err != nil {
		return User{}, fmt.Errorf("create user: %w", err)
	}
	if err := n.validate(); err != nil {
		return User{}, fmt.Errorf("create user: %w", err)
	}
	var (
		row   models.User
		event *audit.Event
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var err error
		row, event, err = s.insert(tx, c, n)
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("create user %q: %w", n.ID, err)
	}
	s.audit.Announce(ctx, event)
	return fromRow(row), nil
}

// insert writes the user n, with the company defaults read in tx, and its
// audit row.
func (s *Service) insert(tx *gorm.DB, c auth.Caller, n NewUser) (models.User, *audit.Event, error) {
	defaults, err := s.defaults.DefaultsIn(tx, c.Company)
	if err != nil {
		return models.User{}, nil, err
	}
	row := models.User{
		CompanyID:   c.Company,
		ID:          n.ID,
		Email:       models.Nullable(n.Email),
		Phone:       models.Nullable(n.Phone),
		DisplayName: models.Nullable(n.DisplayName),
	}
	applyDefaults(&row, defaults)
	res := tx.Clauses(clause.OnConflict{DoNothing: true}).Create(&row)
	if res.Error != nil {
		return row, nil, res.Error
	}
	if res.RowsAffected == 0 {
		return row, nil, ErrAlreadyExists
	}
	u := fromRow(row)
	event := &audit.Event{
		Company: c.Company,
		Action:  audit.UserCreated,
		Actor:   audit.ActorOf(c),
		Target:  target(u),
		Details: audit.Details(audit.Change{Before: map[string]any{}, After: snapshot(u)}),
	}
	return row, event, s.audit.Write(tx, event)
}

// Get returns a user of the caller's company. A user-role caller sees only
// themself; anyone else is reported as not found, never as forbidden, so
// existence does not leak.
func (s *Service) Get(ctx context.Context, c auth.Caller, id string) (User, error) {
	if c.Role == auth.RoleUser && id != c.UserID {
		return User{}, fmt.Errorf("get user: %w", ErrNotFound)
	}
	return s.ByID(ctx, c.Company, id)
}

// ByID returns a user of company, for services acting on the company's
// behalf after their own access checks.
func (s *Service) ByID(ctx context.Context, company, id string) (User, error) {
	if f, ok := s.defaults.(settingsFiller); ok {
		if fill := f.FillOnMiss(company); fill != nil {
			return s.byIDWithSettings(ctx, company, id, fill)
		}
	}
	var row models.User
	err := s.db.WithContext(ctx).Where("company_id = ? AND id = ?", company, id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return User{}, fmt.Errorf("get user: %w", ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	return fromRow(row), nil
}

// ListRequest pages through users by id.
type ListRequest struct {
	First  *int
	After  string
	Query  string // case-insensitive substring of id, email or display name
	Filter *Filter
}

// ListPage is one page of users.
type ListPage struct {
	Users       []User
	HasNextPage bool
	HasPrevious bool
	// ResumeAfter is set when a locked filter's scan bound cut the page
	// short: the id to go on after, whose cursor is the page's endCursor.
	ResumeAfter string
}

// Page size bounds.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

const cursorKind = "user"

// Cursor is the opaque position of u in its company's listing.
func (s *Service) Cursor(u User) string { return s.cursors.Seal(cursorKind, u.Company, []byte(u.ID)) }

// parseCursor returns the user id in a cursor that s handed out for
// company; any other string is cursor.ErrBad.
func (s *Service) parseCursor(company, c string) (string, error) {
	id, err := s.cursors.Open(cursorKind, company, c)
	if err != nil || len(id) == 0 {
		return "", cursor.ErrBad
	}
	return string(id), nil
}

// List returns users of the caller's company. Admins and services only.
func (s *Service) List(ctx context.Context, c auth.Caller, r ListRequest) (ListPage, error) {
	if err := c.Require(auth.RoleAdmin, auth.RoleService); err != nil {
		return ListPage{}, fmt.Errorf("list users: %w", err)
	}
	var v validation.Errors
	size := DefaultPageSize
	if r.First != nil {
		size = *r.First
		if size < 0 || size > MaxPageSize {
			v.Add(validation.CodeInvalidValue, fmt.Sprintf("must be between 0 and %d", MaxPageSize), "first")
		}
	}
	if utf8.RuneCountInString(r.Query) > validation.MaxNameLen { // characters, as for names
		v.Add(validation.CodeTooLong, fmt.Sprintf("must be at most %d characters", validation.MaxNameLen), "query")
	}
	r.Filter.validate(&v, "filter")
	if err := v.Err(); err != nil {
		return ListPage{}, fmt.Errorf("list users: %w", err)
	}
	after := ""
	if r.After != "" {
		var err error
		if after, err = s.parseCursor(c.Company, r.After); err != nil {
			return ListPage{}, fmt.Errorf("list users: after: %w", err)
		}
	}
	query := func() *gorm.DB { return s.listQuery(ctx, c.Company, r) }
	var (
		rows []models.User
		page = ListPage{HasPrevious: r.After != ""}
		err  error
	)
	if r.Filter != nil && r.Filter.Locked != nil {
		rows, page.ResumeAfter, err = s.scanLocked(ctx, c.Company, r.Filter, query, after, size)
	} else {
		q := query()
		if after != "" {
			q = q.Where("id > ?", after)
		}
		err = q.Order("id ASC").Limit(size + 1).Find(&rows).Error
	}
	if err != nil {
		return ListPage{}, fmt.Errorf("list users: %w", err)
	}
	page.HasNextPage = len(rows) > size || page.ResumeAfter != ""
	if len(rows) > size {
		rows = rows[:size]
	}
	for _, row := range rows {
		page.Users = append(page.Users, fromRow(row))
	}
	return page, nil
}

// listQuery is the company's users matching r's query and the SQL part of
// its filter.
func (s *Service) listQuery(ctx context.Context, company string, r ListRequest) *gorm.DB {
	q := s.db.WithContext(ctx).Where("company_id = ?", company)
	if r.Query != "" {
		// Both sides go through the database's LOWER: SQLite's folds ASCII
		// only, and a Go-lowered query would then miss "Ä" even in its own case.
		like := "%" + escapeLike(r.Query) + "%"
		q = q.Where(`(LOWER(id) LIKE LOWER(?) ESCAPE '\' OR LOWER(email) LIKE LOWER(?) ESCAPE '\' OR LOWER(display_name) LIKE LOWER(?) ESCAPE '\')`, like, like, like)
	}
	return r.Filter.where(q)
}

// SetTwoFactor switches 2FA on or off for one user and app. Admin only.
// Setting the value it already has writes nothing.
func (s *Service) SetTwoFactor(ctx context.Context, c auth.Caller, id string, app App, enabled bool) (User, error) {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return User{}, fmt.Errorf("set two-factor: %w", err)
	}
	if !app.Valid() {
		var v validation.Errors
		v.Add(validation.CodeInvalidValue, "unknown app", "app")
		return User{}, fmt.Errorf("set two-factor: %w", v)
	}
	var (
		row   models.User
		event *audit.Event
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).
			Where("company_id = ? AND id = ?", c.Company, id).Take(&row).Error
		if errors.Is(err, gorm.ErrRecordNotFound) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		before := row.TwoFactor(app)
		if before == enabled {
			return nil
		}
		row.SetTwoFactor(app, enabled)
		if err := tx.Model(&row).Update(app.Column(), enabled).Error; err != nil {
			return err
		}
		action := audit.UserTwoFactorDisabled
		if enabled {
			action = audit.UserTwoFactorEnabled
		}
		event = &audit.Event{
			Company: c.Company,
			Action:  action,
			Actor:   audit.ActorOf(c),
			Target:  target(fromRow(row)),
			App:     string(app),
			Details: audit.Details(audit.Change{
				Before: map[string]any{"enabled": before},
				After:  map[string]any{"enabled": enabled},
			}),
		}
		return s.audit.Write(tx, event)
	})
	if err != nil {
		return User{}, fmt.Errorf("set two-factor for %q: %w", id, err)
	}
	s.audit.Announce(ctx, event)
	return fromRow(row), nil
}

// applyDefaults sets every app's switch of a new row to the company's
// default.
func applyDefaults(row *models.User, defaults settings.Settings) {
	for _, app := range apps.All() {
		row.SetTwoFactor(app, defaults.Defaults[app])
	}
}

func target(u User) *audit.Party { return &audit.Party{ID: u.ID, Name: u.DisplayName} }

func snapshot(u User) map[string]any {
	// Keyed by the app's name: {"web": ..., "manager": ...}.
	twoFactor := make(map[string]bool, len(u.TwoFactor))
	for _, app := range apps.All() {
		twoFactor[string(app)] = u.TwoFactor[app]
	}
	m := map[string]any{"twoFactor": twoFactor}
	for k, v := range map[string]string{"email": u.Email, "phone": u.Phone, "displayName": u.DisplayName} {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

func fromRow(r models.User) User {
	twoFactor := make(map[App]bool, len(apps.All()))
	for _, app := range apps.All() {
		twoFactor[app] = r.TwoFactor(app)
	}
	return User{
		Company:     r.CompanyID,
		ID:          r.ID,
		Email:       models.Value(r.Email),
		Phone:       models.Value(r.Phone),
		DisplayName: models.Value(r.DisplayName),
		TwoFactor:   twoFactor,
		CreatedAt:   r.CreatedAt.UTC(),
	}
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
