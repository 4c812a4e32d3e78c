// Package challenge issues one-time codes, delivers them, and verifies
// them. Codes, attempt counters and locks live in Redis; each issue and
// each verify is one atomic Lua script, so limits hold under concurrency.
package challenge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/assertion"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/otp"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/internal/validation"
)

// Channel is how a code travels.
type Channel string

// Channels.
const (
	SMS   Channel = "SMS"
	Email Channel = "EMAIL"
)

// Status is where a challenge stands.
type Status string

// Statuses.
const (
	Pending  Status = "PENDING"
	Approved Status = "APPROVED"
	Rejected Status = "REJECTED"
	Locked   Status = "LOCKED"
	Expired  Status = "EXPIRED"
)

// Refusal codes, reported to clients as user errors.
const (
	CodeNotEnabled          = "TWO_FACTOR_NOT_ENABLED"
	CodeChannelNotAvailable = "CHANNEL_NOT_AVAILABLE"
	CodeNoDeliveryAddress   = "NO_DELIVERY_ADDRESS"
	CodeLocked              = "LOCKED"
	CodeResendTooSoon       = "RESEND_TOO_SOON"
	CodeRateLimited         = "RATE_LIMITED"
	CodeDeliveryFailed      = "DELIVERY_FAILED"
	CodeInvalidCode         = "INVALID_CODE"
	CodeAlreadyUsed         = "ALREADY_USED"
)

// Errors the GraphQL layer maps to codes.
var (
	ErrNotFound    = errors.New("challenge not found")
	ErrUnavailable = errors.New("two-factor store unavailable")
)

// Refusal is a request the rules turned down. It carries what the client
// needs to explain it.
type Refusal struct {
	Code        string
	Message     string
	RetryAfter  time.Duration
	LockedUntil time.Time // zero when the lock lasts until an admin unlocks
	// LockedIndefinitely: after MaxConsecutiveFailures only an admin unlocks.
	LockedIndefinitely bool
	Contact            *settings.ContactPerson
	Available          []Channel
}

func (r *Refusal) Error() string { return r.Code + ": " + r.Message }

// Challenge is one issued code, without the code.
type Challenge struct {
	ID                string
	App               apps.App
	Channel           Channel
	Destination       string // masked
	ExpiresAt         time.Time
	ResendAvailableAt time.Time
	AvailableChannels []Channel
	AttemptsRemaining int
	Status            Status
}

// Config holds the limits. Zero fields take the defaults.
type Config struct {
	CodeTTL              time.Duration
	ResendCooldown       time.Duration
	MaxCodesPerWindow    int
	LoginWindow          time.Duration
	MaxFailedAttempts    int
	LockDuration         time.Duration
	SMSPerCompanyPerHour int
	SendTimeout          time.Duration
	// Each further lock lasts twice the one before, up to MaxLockDuration;
	// after MaxConsecutiveFailures wrong codes in a row 2FA stays locked
	// until an admin unlocks (NIST SP 800-63B 5.2.2: at most 100).
	MaxLockDuration        time.Duration
	MaxConsecutiveFailures int
}

// MaxConsecutiveFailuresLimit is NIST SP 800-63B's bound on consecutive
// failed attempts.
const MaxConsecutiveFailuresLimit = 100

// DefaultConfig is the documented defaults.
var DefaultConfig = Config{
	CodeTTL:              5 * time.Minute,
	ResendCooldown:       30 * time.Second,
	MaxCodesPerWindow:    5,
	LoginWindow:          15 * time.Minute,
	MaxFailedAttempts:    3,
	LockDuration:         15 * time.Minute,
	SMSPerCompanyPerHour: 1000,
	SendTimeout:          10 * time.Second,

	MaxLockDuration:        24 * time.Hour,
	MaxConsecutiveFailures: 30,
}

// Validate reports settings that cannot work together.
func (c Config) Validate() error {
	switch {
	case c.CodeTTL <= 0 || c.ResendCooldown < 0 || c.LoginWindow <= 0 || c.LockDuration <= 0 || c.SendTimeout <= 0:
		return errors.New("durations must be positive")
	case c.CodeTTL > c.LoginWindow:
		return errors.New("CODE_TTL must not exceed LOGIN_WINDOW")
	case c.MaxCodesPerWindow < 1:
		return errors.New("MAX_CODES_PER_WINDOW must be at least 1")
	case c.MaxFailedAttempts < 1:
		return errors.New("MAX_FAILED_ATTEMPTS must be at least 1")
	case c.SMSPerCompanyPerHour < 1:
		return errors.New("SMS_PER_COMPANY_PER_HOUR must be at least 1")
	case c.MaxConsecutiveFailures < 1:
		return errors.New("MAX_CONSECUTIVE_FAILURES must be at least 1")
	case c.MaxLockDuration < c.LockDuration:
		return errors.New("MAX_LOCK_DURATION must not be shorter than LOCK_DURATION")
	case c.MaxConsecutiveFailures > MaxConsecutiveFailuresLimit:
		return fmt.Errorf("MAX_CONSECUTIVE_FAILURES must be at most %d", MaxConsecutiveFailuresLimit)
	}
	return nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig
	return Config{
		CodeTTL:              cmp.Or(c.CodeTTL, d.CodeTTL),
		ResendCooldown:       cmp.Or(c.ResendCooldown, d.ResendCooldown),
		MaxCodesPerWindow:    cmp.Or(c.MaxCodesPerWindow, d.MaxCodesPerWindow),
		LoginWindow:          cmp.Or(c.LoginWindow, d.LoginWindow),
		MaxFailedAttempts:    cmp.Or(c.MaxFailedAttempts, d.MaxFailedAttempts),
		LockDuration:         cmp.Or(c.LockDuration, d.LockDuration),
		SMSPerCompanyPerHour: cmp.Or(c.SMSPerCompanyPerHour, d.SMSPerCompanyPerHour),
		SendTimeout:          cmp.Or(c.SendTimeout, d.SendTimeout),

		// Unset, the cap is never below the first lock.
		MaxLockDuration:        cmp.Or(c.MaxLockDuration, max(d.MaxLockDuration, cmp.Or(c.LockDuration, d.LockDuration))),
		MaxConsecutiveFailures: cmp.Or(c.MaxConsecutiveFailures, d.MaxConsecutiveFailures),
	}
}

// UserLookup finds a user of a company.
type UserLookup interface {
	ByID(ctx context.Context, company, id string) (users.User, error)
}

// SettingsLookup gives a company's settings.
type SettingsLookup interface {
	ForCompany(ctx context.Context, company string) (settings.Settings, error)
}

// Kicker is told when a user's outbox (a Redis key) has new events, so it
// can move them to the audit table soon (internal/outbox). It must not
// block: it runs on the request path.
type Kicker interface {
	Kick(key string)
}

// Deps are the service's collaborators.
type Deps struct {
	Redis    redis.UniversalClient
	Outbox   Kicker // nil: events wait in Redis for a sweeper
	Users    UserLookup
	Settings SettingsLookup
	Codes    *otp.Hasher
	Signer   *assertion.Signer
	SMS      delivery.Sender
	Email    delivery.Sender
	Logger   *slog.Logger
	Now      func() time.Time // nil for the wall clock
}

// Service runs challenges.
type Service struct {
	Deps
	cfg   Config
	quota smsQuota // the SMS cap units this instance holds
}

// NewService returns a challenge service.
func NewService(d Deps, cfg Config) (*Service, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("challenge config: %w", err)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &Service{Deps: d, cfg: cfg}, nil
}

// subject is whom a request is about: user-role callers only themselves,
// services anyone in their company, admins no one.
func subject(c auth.Caller, userID string) (string, error) {
	switch c.Role {
	case auth.RoleUser:
		if userID != "" && userID != c.UserID {
			return "", users.ErrNotFound
		}
		return c.UserID, nil
	case auth.RoleService:
		if userID == "" {
			var v validation.Errors
			v.Add(validation.CodeRequired, "a service must name the user", "userId")
			return "", v
		}
		return userID, nil
	}
	return "", fmt.Errorf("admins do not take challenges: %w", auth.ErrForbidden)
}

// ownChallenge parses id and checks the caller may act on it.
func (s *Service) ownChallenge(c auth.Caller, id string) (app apps.App, userID string, err error) {
	if err := c.Require(auth.RoleUser, auth.RoleService); err != nil {
		return "", "", err
	}
	app, userID, ok := parseID(id)
	if !ok || (c.Role == auth.RoleUser && userID != c.UserID) {
		return "", "", ErrNotFound
	}
	return app, userID, nil
}

// deliveryMode condenses the method and the user's addresses: E email
// only, S SMS with no email to fall back to, SE SMS then email; "" none.
func deliveryMode(m settings.DeliveryMethod, u users.User) string {
	switch {
	case m == settings.EmailOnly || u.Phone == "":
		if u.Email == "" {
			return ""
		}
		return "E"
	case u.Email == "":
		return "S"
	}
	return "SE"
}

func available(mode string, emailUnlocked bool) []Channel {
	switch {
	case mode == "E":
		return []Channel{Email}
	case mode == "SE" && emailUnlocked:
		return []Channel{SMS, Email}
	}
	return []Channel{SMS}
}

func lower(s string) string {
	if s == string(Email) {
		return "email"
	}
	return "sms"
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any) int64 {
	var n int64
	_, _ = fmt.Sscan(str(v), &n)
	return n
}
