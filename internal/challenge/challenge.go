// Package challenge issues one-time codes, delivers them, and verifies
// them. Codes, attempt counters and locks live in Redis; each issue and
// each verify is one atomic Lua script, so limits hold under concurrency.
package challenge

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/assertion"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/mask"
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
	LockedUntil time.Time
	Contact     *settings.ContactPerson
	Available   []Channel
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
}

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
}

// Validate reports settings that cannot work together.
func (c Config) Validate() error {
	switch {
	case c.CodeTTL <= 0 || c.ResendCooldown < 0 || c.LoginWindow <= 0 || c.LockDuration <= 0 || c.SendTimeout <= 0:
		return errors.New("durations must be positive")
	case c.CodeTTL > c.LoginWindow:
		return errors.New("CODE_TTL must not exceed LOGIN_WINDOW")
	case c.MaxCodesPerWindow < 1 || c.MaxFailedAttempts < 1 || c.SMSPerCompanyPerHour < 1:
		return errors.New("limits must be at least 1")
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

// AuditRecorder appends an audit row, running apply in the same
// transaction first.
type AuditRecorder interface {
	Record(ctx context.Context, e *audit.Event, apply func() error) error
}

// Deps are the service's collaborators.
type Deps struct {
	Redis    redis.UniversalClient
	Users    UserLookup
	Settings SettingsLookup
	Audit    AuditRecorder
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
	cfg Config
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

// IssueRequest asks for a code. UserID may be empty for a user-role
// caller, meaning themself; Channel may be empty for the default.
type IssueRequest struct {
	UserID  string
	App     apps.App
	Channel Channel
}

// Issue creates a code and delivers it.
func (s *Service) Issue(ctx context.Context, c auth.Caller, r IssueRequest) (Challenge, error) {
	userID, err := subject(c, r.UserID)
	if err != nil {
		return Challenge{}, fmt.Errorf("issue challenge: %w", err)
	}
	var v validation.Errors
	if !r.App.Valid() {
		v.Add(validation.CodeInvalidValue, "unknown app", "app")
	}
	if r.Channel != "" && r.Channel != SMS && r.Channel != Email {
		v.Add(validation.CodeInvalidValue, "unknown channel", "channel")
	}
	if err := v.Err(); err != nil {
		return Challenge{}, fmt.Errorf("issue challenge: %w", err)
	}
	u, err := s.Users.ByID(ctx, c.Company, userID)
	if err != nil {
		return Challenge{}, fmt.Errorf("issue challenge: %w", err)
	}
	if !u.TwoFactor[r.App] {
		return Challenge{}, &Refusal{Code: CodeNotEnabled, Message: "two-factor authentication is off for this user and app"}
	}
	set, err := s.Settings.ForCompany(ctx, c.Company)
	if err != nil {
		return Challenge{}, fmt.Errorf("issue challenge: %w", err)
	}
	mode := deliveryMode(set.DeliveryMethod, u)
	if mode == "" {
		return Challenge{}, &Refusal{Code: CodeNoDeliveryAddress, Message: "the user has no phone or email that this company delivers codes to"}
	}

	code, err := s.Codes.NewCode()
	if err != nil {
		return Challenge{}, fmt.Errorf("issue challenge: %w", err)
	}
	random := make([]byte, 16)
	if _, err := rand.Read(random); err != nil {
		return Challenge{}, fmt.Errorf("issue challenge: %w", err)
	}
	id := makeID(base64.RawURLEncoding.EncodeToString(random), r.App, userID)
	k := keysFor(c.Company, userID)
	now := s.Now()
	res, err := issueScript.Run(ctx, s.Redis,
		[]string{k.login(r.App), k.lock(r.App), k.issued(), k.challenge(id)},
		now.UnixMilli(), id, s.Codes.Hash(id, code), mode, string(r.Channel),
		s.cfg.CodeTTL.Milliseconds(), s.cfg.ResendCooldown.Milliseconds(), s.cfg.MaxCodesPerWindow,
		s.cfg.LoginWindow.Milliseconds(), s.cfg.MaxFailedAttempts, mask.Phone(u.Phone), mask.Email(u.Email),
	).Slice()
	if err != nil {
		return Challenge{}, fmt.Errorf("issue challenge: %w: %v", ErrUnavailable, err)
	}
	rep := reply(res)
	switch rep.str(0) {
	case "OK":
	case "LOCKED":
		return Challenge{}, &Refusal{Code: CodeLocked, Message: "too many failed attempts; two-factor is locked",
			LockedUntil: time.UnixMilli(rep.int(1)).UTC(), Contact: set.Contact}
	case "RESEND_TOO_SOON":
		return Challenge{}, &Refusal{Code: CodeResendTooSoon, Message: "wait before asking for another code",
			RetryAfter: time.Duration(rep.int(1)) * time.Millisecond}
	case "RATE_LIMITED":
		return Challenge{}, &Refusal{Code: CodeRateLimited, Message: "too many codes asked for; try again later",
			RetryAfter: time.Duration(rep.int(1)) * time.Millisecond}
	case "CHANNEL_NOT_AVAILABLE":
		return Challenge{}, &Refusal{Code: CodeChannelNotAvailable, Message: "that channel is not available for this code",
			Available: available(mode, false)}
	default:
		return Challenge{}, fmt.Errorf("issue challenge: unexpected script reply %v", rep.str(0))
	}
	ch := Challenge{
		ID:                id,
		App:               r.App,
		Channel:           Channel(rep.str(1)),
		ExpiresAt:         time.UnixMilli(rep.int(2)).UTC(),
		ResendAvailableAt: time.UnixMilli(rep.int(3)).UTC(),
		AttemptsRemaining: int(rep.int(4)),
		AvailableChannels: available(mode, rep.str(5) == "1"),
		Status:            Pending,
	}
	to, dest := u.Phone, mask.Phone
	if ch.Channel == Email {
		to, dest = u.Email, mask.Email
	}
	ch.Destination = dest(to)
	if refusal := s.deliver(ctx, c.Company, k, ch, to, code); refusal != nil {
		refusal.Available = available(mode, true)
		return Challenge{}, refusal
	}
	return ch, nil
}

// deliver sends the code. A refused or failed delivery kills the
// challenge and opens the email fallback, like any unsuccessful attempt.
func (s *Service) deliver(ctx context.Context, company string, k keys, ch Challenge, to, code string) *Refusal {
	var refusal *Refusal
	if ch.Channel == SMS {
		if over, err := s.smsOverCap(ctx, company); err != nil {
			refusal = &Refusal{Code: CodeDeliveryFailed, Message: "could not send the SMS"}
			s.Logger.ErrorContext(ctx, "sms cap check failed", "company", company, "err", err)
		} else if over {
			// The counter is per clock hour: the next SMS may go when it turns.
			now := s.Now()
			hourLeft := time.Hour - now.Sub(now.Truncate(time.Hour))
			refusal = &Refusal{Code: CodeRateLimited, Message: "this company's SMS limit is reached; ask for the code by email",
				RetryAfter: hourLeft}
			s.Logger.WarnContext(ctx, "company sms cap reached", "company", company)
		}
	}
	if refusal == nil {
		sender, msg := s.SMS, smsMessage(code, s.cfg.CodeTTL)
		if ch.Channel == Email {
			sender, msg = s.Email, emailMessage(code, s.cfg.CodeTTL)
		}
		msg.To = to
		sendCtx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
		err := sender.Send(sendCtx, msg)
		cancel()
		if err == nil {
			return nil
		}
		// A provider's error may quote the message back (an SMTP rejection
		// naming the subject, say); the code must not reach the log.
		s.Logger.ErrorContext(ctx, "code delivery failed", "company", company, "channel", string(ch.Channel),
			"destination", ch.Destination, "err", strings.ReplaceAll(err.Error(), code, "[code]"))
		refusal = &Refusal{Code: CodeDeliveryFailed, Message: "the code could not be delivered; try again or use another channel"}
	}
	if err := failedScript.Run(ctx, s.Redis, []string{k.challenge(ch.ID), k.login(ch.App)}, ch.ID).Err(); err != nil {
		s.Logger.ErrorContext(ctx, "mark delivery failure", "err", err)
	}
	return refusal
}

// smsOverCap counts an SMS against the company's hourly cap. The counter
// lives in the company's own hash slot, so it is a separate round trip,
// taken only for SMS.
func (s *Service) smsOverCap(ctx context.Context, company string) (bool, error) {
	key := smsKey(company, s.Now().Unix()/3600)
	pipe := s.Redis.TxPipeline()
	n := pipe.Incr(ctx, key)
	pipe.Expire(ctx, key, 2*time.Hour)
	if _, err := pipe.Exec(ctx); err != nil {
		return false, err
	}
	return n.Val() > int64(s.cfg.SMSPerCompanyPerHour), nil
}

// VerifyResult is the outcome of one verify.
type VerifyResult struct {
	Status            Status
	AttemptsRemaining int
	Assertion         string
	LockedUntil       time.Time
	Contact           *settings.ContactPerson
}

// Verify checks a code. Below the lock threshold it is one Redis round trip
// and no SQL.
func (s *Service) Verify(ctx context.Context, c auth.Caller, id, code string) (VerifyResult, error) {
	app, userID, err := s.ownChallenge(c, id)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify challenge: %w", err)
	}
	if s.Codes.Check(code) != nil {
		return VerifyResult{}, &Refusal{Code: CodeInvalidCode,
			Message: fmt.Sprintf("the code is %d digits", s.Codes.Length())}
	}
	k := keysFor(c.Company, userID)
	res, err := verifyScript.Run(ctx, s.Redis,
		[]string{k.challenge(id), k.login(app), k.lock(app)},
		s.Now().UnixMilli(), id, s.Codes.Hash(id, code), s.cfg.MaxFailedAttempts,
		s.cfg.LockDuration.Milliseconds(), s.cfg.LoginWindow.Milliseconds(),
	).Slice()
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify challenge: %w: %v", ErrUnavailable, err)
	}
	rep := reply(res)
	out := VerifyResult{Status: Status(rep.str(0)), AttemptsRemaining: int(rep.int(1))}
	switch out.Status {
	case "NOT_FOUND":
		return VerifyResult{}, fmt.Errorf("verify challenge: %w", ErrNotFound)
	case "ALREADY_USED":
		return VerifyResult{Status: Rejected}, &Refusal{Code: CodeAlreadyUsed, Message: "this code was already used"}
	case Approved:
		out.Assertion, err = s.Signer.Sign(assertion.Grant{
			ChallengeID: id, Company: c.Company, UserID: userID, App: string(app), Channel: lower(rep.str(2)),
		})
		if err != nil {
			return VerifyResult{}, fmt.Errorf("verify challenge: %w", err)
		}
	case Locked:
		out.LockedUntil = time.UnixMilli(rep.int(2)).UTC()
		if out.Contact, err = s.locked(ctx, c, userID, app, rep.int(3) == 1, out.LockedUntil); err != nil {
			return VerifyResult{}, fmt.Errorf("verify challenge: %w", err)
		}
	}
	return out, nil
}

// locked returns the contact person, and records the lock the first time:
// the caller whose verify locked (the user, or a service acting for them)
// as the actor, the user as the target.
func (s *Service) locked(ctx context.Context, c auth.Caller, userID string, app apps.App, first bool, until time.Time) (*settings.ContactPerson, error) {
	company := c.Company
	if first {
		u, err := s.Users.ByID(ctx, company, userID)
		if err != nil && !errors.Is(err, users.ErrNotFound) {
			return nil, err
		}
		actor := audit.ActorOf(c)
		if actor.ID == userID && c.Role == auth.RoleUser && actor.Name == "" {
			actor.Name = u.DisplayName // the user themself, as the users table names them
		}
		e := &audit.Event{
			Company: company,
			Action:  audit.FailedAttemptsLimitReached,
			Actor:   actor,
			Target:  &audit.Party{ID: userID, Name: u.DisplayName},
			App:     string(app),
			Details: audit.Details(map[string]any{"failedAttempts": s.cfg.MaxFailedAttempts, "lockedUntil": until.Format(time.RFC3339)}),
		}
		if err := s.Audit.Record(ctx, e, nil); err != nil {
			return nil, err
		}
	}
	set, err := s.Settings.ForCompany(ctx, company)
	if err != nil {
		return nil, err
	}
	return set.Contact, nil
}

// Get reads a challenge's current state.
func (s *Service) Get(ctx context.Context, c auth.Caller, id string) (Challenge, error) {
	app, userID, err := s.ownChallenge(c, id)
	if err != nil {
		return Challenge{}, fmt.Errorf("get challenge: %w", err)
	}
	k := keysFor(c.Company, userID)
	pipe := s.Redis.Pipeline()
	chCmd := pipe.HMGet(ctx, k.challenge(id), "st", "ch", "dest", "mode", "exp")
	loginCmd := pipe.HMGet(ctx, k.login(app), "cur", "failures", "email", "last", "start", "curexp")
	lockCmd := pipe.Get(ctx, k.lock(app))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Challenge{}, fmt.Errorf("get challenge: %w: %v", ErrUnavailable, err)
	}
	f := chCmd.Val()
	if f[0] == nil {
		return Challenge{}, fmt.Errorf("get challenge: %w", ErrNotFound)
	}
	l := loginCmd.Val()
	now := s.Now()
	mode := str(f[3])
	ch := Challenge{
		ID:                id,
		App:               app,
		Status:            Status(str(f[0])),
		Channel:           Channel(str(f[1])),
		Destination:       str(f[2]),
		ExpiresAt:         time.UnixMilli(num(f[4])).UTC(),
		AttemptsRemaining: s.cfg.MaxFailedAttempts - int(num(l[1])),
		// A current code that expired unused opens email too (issue.lua).
		AvailableChannels: available(mode, str(l[2]) == "1" || (str(l[0]) != "" && now.UnixMilli() >= num(l[5]))),
	}
	current := str(l[0]) == id && now.Sub(time.UnixMilli(num(l[4]))) < s.cfg.LoginWindow
	if ch.Status == Pending && (!current || !now.Before(ch.ExpiresAt)) {
		ch.Status = Expired
	}
	// last is 0 once an attempt failed (a new code may come at once), and
	// the login may be over: then the answer is now, not 1970 + cooldown.
	ch.ResendAvailableAt = now.UTC()
	if last := num(l[3]); current && last > 0 {
		ch.ResendAvailableAt = time.UnixMilli(last).Add(s.cfg.ResendCooldown).UTC()
	}
	if until, err := lockCmd.Int64(); err == nil && until > now.UnixMilli() {
		ch.Status, ch.AttemptsRemaining = Locked, 0
	} else if ch.Status == Locked {
		// The code that locked was wrong; once the lock is over it is just
		// a rejected code, not a lock with no end (verify.lua agrees).
		ch.Status = Rejected
	}
	return ch, nil
}

// Unlock lifts a user's lock for app and starts a fresh login. Admin only.
// Unlocking a user who is not locked changes nothing and records nothing.
func (s *Service) Unlock(ctx context.Context, c auth.Caller, userID string, app apps.App) (users.User, error) {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return users.User{}, fmt.Errorf("unlock: %w", err)
	}
	if !app.Valid() {
		var v validation.Errors
		v.Add(validation.CodeInvalidValue, "unknown app", "app")
		return users.User{}, fmt.Errorf("unlock: %w", v)
	}
	u, err := s.Users.ByID(ctx, c.Company, userID)
	if err != nil {
		return users.User{}, fmt.Errorf("unlock: %w", err)
	}
	k := keysFor(c.Company, userID)
	until, err := s.Redis.Get(ctx, k.lock(app)).Int64()
	if errors.Is(err, redis.Nil) || (err == nil && until <= s.Now().UnixMilli()) {
		return u, nil
	}
	if err != nil {
		return users.User{}, fmt.Errorf("unlock: %w: %v", ErrUnavailable, err)
	}
	e := &audit.Event{
		Company: c.Company,
		Action:  audit.UserTwoFactorUnlocked,
		Actor:   audit.ActorOf(c),
		Target:  &audit.Party{ID: u.ID, Name: u.DisplayName},
		App:     string(app),
		Details: audit.Details(audit.Change{
			Before: map[string]any{"lockedUntil": time.UnixMilli(until).UTC().Format(time.RFC3339)},
			After:  map[string]any{"lockedUntil": nil},
		}),
	}
	// The lock goes inside the audit transaction: if Redis fails, no row.
	err = s.Audit.Record(ctx, e, func() error {
		return s.Redis.Del(ctx, k.lock(app), k.login(app)).Err()
	})
	if err != nil {
		return users.User{}, fmt.Errorf("unlock: %w", err)
	}
	return u, nil
}

// Locks tells until when a user's 2FA is locked, per app; an app that is
// not locked is absent. Every app's lock shares the user's hash tag: one
// MGET.
func (s *Service) Locks(ctx context.Context, company, userID string) (map[apps.App]time.Time, error) {
	k := keysFor(company, userID)
	all := apps.All()
	lockKeys := make([]string, len(all))
	for i, app := range all {
		lockKeys[i] = k.lock(app)
	}
	vals, err := s.Redis.MGet(ctx, lockKeys...).Result()
	if err != nil {
		return nil, fmt.Errorf("lock state: %w: %v", ErrUnavailable, err)
	}
	out := make(map[apps.App]time.Time, len(all))
	now := s.Now()
	for i, app := range all {
		if t := time.UnixMilli(num(vals[i])).UTC(); t.After(now) {
			out[app] = t
		}
	}
	return out, nil
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
