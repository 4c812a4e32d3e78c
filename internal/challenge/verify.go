package challenge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/assertion"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/settings"
)

// VerifyResult is the outcome of one verify.
type VerifyResult struct {
	Status             Status
	AttemptsRemaining  int
	Assertion          string
	LockedUntil        time.Time // zero when the lock lasts until an admin unlocks
	LockedIndefinitely bool
	Contact            *settings.ContactPerson
}

// contactTimeout bounds the one database read of a locking verify: the
// answer LOCKED must not wait on a database that is away.
const contactTimeout = 2 * time.Second

// Verify checks a code: one Redis round trip and no SQL, events included
// (the script appends them to the user's outbox). Only a LOCKED answer
// reads the company's contact person from the database.
func (s *Service) Verify(ctx context.Context, c auth.Caller, id, code string) (VerifyResult, error) {
	app, userID, err := s.ownChallenge(c, id)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify challenge: %w", err)
	}
	if s.Codes.Check(code) != nil {
		return VerifyResult{}, &Refusal{Code: CodeInvalidCode,
			Message: fmt.Sprintf("the code is %d digits", s.Codes.Length())}
	}
	uid, err := newUID()
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify challenge: %w", err)
	}
	k := keysFor(c.Company, userID)
	res, err := verifyScript.Run(ctx, s.Redis,
		[]string{k.challenge(id), k.login(app), k.lock(app), k.failures(app), k.outbox()},
		s.Now().UnixMilli(), id, s.Codes.Hash(id, code), s.cfg.MaxFailedAttempts,
		s.cfg.LockDuration.Milliseconds(), s.cfg.LoginWindow.Milliseconds(), s.cfg.MaxLockDuration.Milliseconds(),
		s.cfg.MaxConsecutiveFailures, lockForever, uid, header(c, userID, app),
	).Slice()
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify challenge: %w: %v", ErrUnavailable, err)
	}
	rep := reply(res)
	if rep.int(3) > 0 {
		s.kick(k)
	}
	out := VerifyResult{Status: Status(rep.str(0)), AttemptsRemaining: int(rep.int(1))}
	switch out.Status {
	case "NOT_FOUND":
		return VerifyResult{}, fmt.Errorf("verify challenge: %w", ErrNotFound)
	case "ALREADY_USED":
		return VerifyResult{Status: Rejected}, &Refusal{Code: CodeAlreadyUsed, Message: "this code was already used"}
	case Approved:
		out.Assertion, err = s.Signer.Sign(assertion.Grant{
			ChallengeID: id, Company: c.Company, UserID: userID, App: string(app), Channel: lower(rep.str(4)),
		})
		if err != nil {
			return VerifyResult{}, fmt.Errorf("verify challenge: %w", err)
		}
	case Locked:
		out.LockedUntil, out.LockedIndefinitely = lockEnd(rep.int(2))
		out.Contact = s.contact(ctx, c.Company)
	}
	return out, nil
}

// contact is whom a locked user should call. The lock and its event are
// in Redis already; a database that fails here costs the contact, not
// the answer.
func (s *Service) contact(ctx context.Context, company string) *settings.ContactPerson {
	ctx, cancel := context.WithTimeout(ctx, contactTimeout)
	defer cancel()
	set, err := s.Settings.ForCompany(ctx, company)
	if err != nil {
		s.Logger.WarnContext(ctx, "locked without a contact person: settings unavailable", "company", company, "err", err)
		return nil
	}
	return set.Contact
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
	loginCmd := pipe.HMGet(ctx, k.login(app), "cur", "email", "last", "start", "curexp")
	lockCmd := pipe.Get(ctx, k.lock(app))
	failCmd := pipe.Get(ctx, k.failures(app))
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
		AttemptsRemaining: s.remaining(num(failCmd.Val())),
		// A current code that expired unused opens email too (issue.lua).
		AvailableChannels: available(mode, str(l[1]) == "1" || (str(l[0]) != "" && now.UnixMilli() >= num(l[4]))),
	}
	current := str(l[0]) == id && now.Sub(time.UnixMilli(num(l[3]))) < s.cfg.LoginWindow
	if ch.Status == Pending && (!current || !now.Before(ch.ExpiresAt)) {
		ch.Status = Expired
	}
	// last is 0 once an attempt failed (a new code may come at once), and
	// the login may be over: then the answer is now, not 1970 + cooldown.
	ch.ResendAvailableAt = now.UTC()
	if last := num(l[2]); current && last > 0 {
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
