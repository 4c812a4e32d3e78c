// Package models holds the GORM models: the database rows and nothing else.
// Schema changes go through the versioned migrations in internal/store.
package models

import (
	"time"

	"github.com/twofactor/service/internal/apps"
)

// CompanySettings is one company's 2FA configuration. The row is created
// with defaults the first time a company is seen.
type CompanySettings struct {
	CompanyID      string `gorm:"primaryKey;size:64"`
	DeliveryMethod string `gorm:"size:32;not null"`
	ContactName    *string
	ContactEmail   *string
	ContactPhone   *string
	DefaultWeb     bool `gorm:"not null"`
	DefaultManager bool `gorm:"not null"`
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// User is a platform user as far as 2FA is concerned. Ids come from the
// platform and are unique within a company only.
type User struct {
	CompanyID        string `gorm:"primaryKey;size:64"`
	ID               string `gorm:"primaryKey;size:128"`
	Email            *string
	Phone            *string
	DisplayName      *string
	TwoFactorWeb     bool `gorm:"not null"`
	TwoFactorManager bool `gorm:"not null"`
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// The per-app columns are named by the apps table (internal/apps); these
// are the one place that maps a column to its field. An app added to the
// table needs its field here and its case below (models_test.go checks
// every app round-trips).

// TwoFactor is the user's switch for app; false for an unknown app.
func (u User) TwoFactor(app apps.App) bool {
	p := u.twoFactorField(app)
	return p != nil && *p
}

// SetTwoFactor sets the user's switch for app; an unknown app sets nothing.
func (u *User) SetTwoFactor(app apps.App, on bool) {
	if p := u.twoFactorField(app); p != nil {
		*p = on
	}
}

func (u *User) twoFactorField(app apps.App) *bool {
	switch app.Column() {
	case "two_factor_web":
		return &u.TwoFactorWeb
	case "two_factor_manager":
		return &u.TwoFactorManager
	}
	return nil
}

// Default is the company's default switch for app; false for an unknown
// app.
func (s CompanySettings) Default(app apps.App) bool {
	p := s.defaultField(app)
	return p != nil && *p
}

// SetDefault sets the company's default for app; an unknown app sets
// nothing.
func (s *CompanySettings) SetDefault(app apps.App, on bool) {
	if p := s.defaultField(app); p != nil {
		*p = on
	}
}

func (s *CompanySettings) defaultField(app apps.App) *bool {
	switch app.DefaultColumn() {
	case "default_web":
		return &s.DefaultWeb
	case "default_manager":
		return &s.DefaultManager
	}
	return nil
}

// AuditEvent is an append-only audit row. Actor and target are snapshots
// taken when the row was written, so later renames do not rewrite history.
type AuditEvent struct {
	ID             int64  `gorm:"primaryKey;autoIncrement"`
	CompanyID      string `gorm:"size:64;not null"`
	Action         string `gorm:"size:64;not null"`
	ActorID        string `gorm:"size:128;not null"`
	ActorName      *string
	ActorRole      string  `gorm:"size:16;not null"`
	TargetUserID   *string `gorm:"size:128"`
	TargetUserName *string
	App            *string   `gorm:"size:16"`
	Details        string    `gorm:"not null"`
	CreatedAt      time.Time `gorm:"not null"`
	// Category is SETTINGS or AUTHENTICATION: each has its own hash chain.
	Category string `gorm:"size:16;not null"`
	// UID identifies the event wherever it was made (an outbox entry in
	// Redis, say), so writing it twice stores it once.
	UID *string `gorm:"column:uid;size:64"`
	// Hash is the hex SHA-256 link of the company's chain for Category.
	Hash *string `gorm:"size:64"`
}

// Nullable stores an empty string as NULL.
func Nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Value reads a nullable column, NULL as "".
func Value(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
