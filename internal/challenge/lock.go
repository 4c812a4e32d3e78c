package challenge

import (
	"context"
	"fmt"
	"time"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/internal/validation"
)

// lockForever is the lock key's value for a lock only an admin lifts: the
// largest integer a Lua number holds exactly, a time no clock reaches, so
// every reader that asks "locked until after now?" is right without
// knowing about it.
const lockForever int64 = 1<<53 - 1

// lockEnd reads a lock value: its end, or indefinite.
func lockEnd(ms int64) (until time.Time, indefinite bool) {
	if ms >= lockForever {
		return time.Time{}, true
	}
	return time.UnixMilli(ms).UTC(), false
}

// remaining is how many wrong codes are left before the next lock after
// failures consecutive ones (verify.lua and issue.lua agree).
func (s *Service) remaining(failures int64) int {
	maxF, maxC := int64(s.cfg.MaxFailedAttempts), int64(s.cfg.MaxConsecutiveFailures)
	return int(max(min(maxF-failures%maxF, maxC-failures), 0))
}

// Lock is one app's lock.
type Lock struct {
	Until      time.Time // zero when Indefinite
	Indefinite bool      // only an admin unlocks
}

// LockStates tells how a user's 2FA is locked, per app; an app that is not
// locked is absent. Every app's lock shares the user's hash tag: one MGET.
func (s *Service) LockStates(ctx context.Context, company, userID string) (map[apps.App]Lock, error) {
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
	out := make(map[apps.App]Lock, len(all))
	now := s.Now().UnixMilli()
	for i, app := range all {
		if ms := num(vals[i]); ms > now {
			until, forever := lockEnd(ms)
			out[app] = Lock{Until: until, Indefinite: forever}
		}
	}
	return out, nil
}

// Locks tells until when a user's 2FA is locked, per app; an app that is
// not locked, or locked until an admin unlocks, is absent.
func (s *Service) Locks(ctx context.Context, company, userID string) (map[apps.App]time.Time, error) {
	states, err := s.LockStates(ctx, company, userID)
	if err != nil {
		return nil, err
	}
	out := make(map[apps.App]time.Time, len(states))
	for app, l := range states {
		if !l.Indefinite {
			out[app] = l.Until
		}
	}
	return out, nil
}

// Unlock lifts a user's lock for app, forgets the consecutive wrong codes
// and starts a fresh login. Admin only. One script reads and clears the
// keys and appends USER_TWO_FACTOR_UNLOCKED to the user's outbox in the
// same step (unlock.lua): a lock set meanwhile is never lifted
// unrecorded, and the row reaches the log through the outbox mover like
// the sign-in events. A user with neither a lock nor a wrong code to
// forget is left alone, and nothing is recorded.
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
	uid, err := newUID()
	if err != nil {
		return users.User{}, fmt.Errorf("unlock: %w", err)
	}
	k := keysFor(c.Company, userID)
	res, err := unlockScript.Run(ctx, s.Redis,
		[]string{k.lock(app), k.login(app), k.failures(app), k.outbox(), k.kept()},
		s.Now().UnixMilli(), uid, header(c, userID, app), u.DisplayName, lockForever, keptReplyTTL.Milliseconds(),
	).Slice()
	if err != nil {
		return users.User{}, fmt.Errorf("unlock: %w: %v", ErrUnavailable, err)
	}
	if reply(res).str(0) == "UNLOCKED" {
		s.kick(k)
	}
	return u, nil
}

// IndefiniteLocks tells, per app, whether the user's 2FA is locked until an
// admin unlocks it.
func (s *Service) IndefiniteLocks(ctx context.Context, company, userID string) (map[apps.App]bool, error) {
	states, err := s.LockStates(ctx, company, userID)
	if err != nil {
		return nil, err
	}
	out := make(map[apps.App]bool, len(apps.All()))
	for _, app := range apps.All() {
		out[app] = states[app].Indefinite
	}
	return out, nil
}
