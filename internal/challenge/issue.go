package challenge

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/mask"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/internal/validation"
)

// IssueRequest asks for a code. UserID may be empty for a user-role
// caller, meaning themself; Channel may be empty for the default.
type IssueRequest struct {
	UserID  string
	App     apps.App
	Channel Channel
}

// issuing is what an issue has learnt before its script runs.
type issuing struct {
	caller auth.Caller
	userID string
	user   users.User
	set    settings.Settings
	mode   string
	k      keys
}

// Issue creates a code and delivers it.
func (s *Service) Issue(ctx context.Context, c auth.Caller, r IssueRequest) (Challenge, error) {
	in, err := s.prepareIssue(ctx, c, r)
	if err != nil {
		return Challenge{}, err
	}
	code, err := s.Codes.NewCode()
	if err != nil {
		return Challenge{}, fmt.Errorf("issue challenge: %w", err)
	}
	random := make([]byte, 16)
	if _, err := rand.Read(random); err != nil {
		return Challenge{}, fmt.Errorf("issue challenge: %w", err)
	}
	id := makeID(base64.RawURLEncoding.EncodeToString(random), r.App, in.userID)
	ch, sms, err := s.runIssue(ctx, in, r, id, code)
	if err != nil {
		return Challenge{}, err
	}
	to, dest := in.user.Phone, mask.Phone
	if ch.Channel == Email {
		to, dest = in.user.Email, mask.Email
	}
	ch.Destination = dest(to)
	if err := s.deliver(ctx, in, ch, to, code, sms); err != nil {
		return Challenge{}, err
	}
	return ch, nil
}

// prepareIssue checks the request, the user and how the company delivers.
func (s *Service) prepareIssue(ctx context.Context, c auth.Caller, r IssueRequest) (issuing, error) {
	userID, err := subject(c, r.UserID)
	if err != nil {
		return issuing{}, fmt.Errorf("issue challenge: %w", err)
	}
	var v validation.Errors
	if !r.App.Valid() {
		v.Add(validation.CodeInvalidValue, "unknown app", "app")
	}
	if r.Channel != "" && r.Channel != SMS && r.Channel != Email {
		v.Add(validation.CodeInvalidValue, "unknown channel", "channel")
	}
	if err := v.Err(); err != nil {
		return issuing{}, fmt.Errorf("issue challenge: %w", err)
	}
	u, err := s.Users.ByID(ctx, c.Company, userID)
	if err != nil {
		return issuing{}, fmt.Errorf("issue challenge: %w", err)
	}
	if !u.TwoFactor[r.App] {
		return issuing{}, &Refusal{Code: CodeNotEnabled, Message: "two-factor authentication is off for this user and app"}
	}
	set, err := s.Settings.ForCompany(ctx, c.Company)
	if err != nil {
		return issuing{}, fmt.Errorf("issue challenge: %w", err)
	}
	mode := deliveryMode(set.DeliveryMethod, u)
	if mode == "" {
		return issuing{}, &Refusal{Code: CodeNoDeliveryAddress, Message: "the user has no phone or email that this company delivers codes to"}
	}
	return issuing{caller: c, userID: userID, user: u, set: set, mode: mode, k: keysFor(c.Company, userID)}, nil
}

// smsCount is how the issue's SMS stands against the company's cap;
// taken says the issue counted it already (in its own round trip).
type smsCount struct {
	over  bool
	err   error
	taken bool
}

// runIssue runs issue.lua, which stores the code and its CODE_SENT event
// in one step, and reads its answer. An issue that can only end in an SMS
// or a refusal takes a unit of the company's SMS cap: from the units this
// instance holds, or reserved in the same round trip (the counter is in
// the company's slot, not the user's, so it cannot be in the script). A
// refusal keeps the unit for the next issue.
func (s *Service) runIssue(ctx context.Context, in issuing, r IssueRequest, id, code string) (Challenge, smsCount, error) {
	k, u := in.k, in.user
	uid, err := newUID()
	if err != nil {
		return Challenge{}, smsCount{}, fmt.Errorf("issue challenge: %w", err)
	}
	keys := []string{k.login(r.App), k.lock(r.App), k.issued(), k.challenge(id), k.failures(r.App), k.outbox()}
	args := []any{s.Now().UnixMilli(), id, s.Codes.Hash(id, code), in.mode, string(r.Channel),
		s.cfg.CodeTTL.Milliseconds(), s.cfg.ResendCooldown.Milliseconds(), s.cfg.MaxCodesPerWindow,
		s.cfg.LoginWindow.Milliseconds(), s.cfg.MaxFailedAttempts, mask.Phone(u.Phone), mask.Email(u.Email),
		s.cfg.MaxConsecutiveFailures, u.DisplayName, uid, header(in.caller, in.userID, r.App)}
	pipe := s.Redis.Pipeline()
	issued := issueScript.EvalSha(ctx, pipe, keys, args...)
	var unit *smsUnit
	if in.mode != "E" && r.Channel != Email {
		u := s.reserveSMS(ctx, pipe, in.caller.Company)
		unit = &u
	}
	if len(pipe.Cmds()) == 1 {
		pipe.Discard()
		_ = s.Redis.Process(ctx, issued)
	} else {
		_, _ = pipe.Exec(ctx) // each command's error is read below
	}
	res, err := rerun(ctx, s.Redis, issueScript, issued, keys, args).Slice()
	rep := reply(res)
	if unit != nil && (err != nil || rep.str(0) != "OK" || rep.str(1) != string(SMS)) {
		s.unuseSMS(ctx, *unit)
		unit = nil
	}
	if err != nil {
		return Challenge{}, smsCount{}, fmt.Errorf("issue challenge: %w: %v", ErrUnavailable, err)
	}
	if rep.str(0) == "OK" {
		s.kick(k)
	}
	ch, err := issueAnswer(in, r, id, rep)
	if err != nil || unit == nil {
		return ch, smsCount{}, err
	}
	ok, err := s.useSMS(ctx, *unit)
	return ch, smsCount{over: !ok && err == nil, err: err, taken: true}, nil
}

// rerun returns cmd, or, if Redis did not know its script yet (NOSCRIPT:
// it did not run), the script run again with EVAL.
func rerun(ctx context.Context, rdb redis.Scripter, script *redis.Script, cmd *redis.Cmd, keys []string, args []any) *redis.Cmd {
	if cmd.Err() != nil && redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		return script.Run(ctx, rdb, keys, args...)
	}
	return cmd
}

// issueAnswer reads issue.lua's reply: a challenge or a refusal.
func issueAnswer(in issuing, r IssueRequest, id string, rep reply) (Challenge, error) {
	switch rep.str(0) {
	case "OK":
	case "LOCKED":
		until, forever := lockEnd(rep.int(1))
		return Challenge{}, &Refusal{Code: CodeLocked, Message: "too many failed attempts; two-factor is locked",
			LockedUntil: until, LockedIndefinitely: forever, Contact: in.set.Contact}
	case "RESEND_TOO_SOON":
		return Challenge{}, &Refusal{Code: CodeResendTooSoon, Message: "wait before asking for another code",
			RetryAfter: time.Duration(rep.int(1)) * time.Millisecond}
	case "RATE_LIMITED":
		return Challenge{}, &Refusal{Code: CodeRateLimited, Message: "too many codes asked for; try again later",
			RetryAfter: time.Duration(rep.int(1)) * time.Millisecond}
	case "CHANNEL_NOT_AVAILABLE":
		return Challenge{}, &Refusal{Code: CodeChannelNotAvailable, Message: "that channel is not available for this code",
			Available: available(in.mode, false)}
	default:
		return Challenge{}, fmt.Errorf("issue challenge: unexpected script reply %v", rep.str(0))
	}
	return Challenge{
		ID:                id,
		App:               r.App,
		Channel:           Channel(rep.str(1)),
		ExpiresAt:         time.UnixMilli(rep.int(2)).UTC(),
		ResendAvailableAt: time.UnixMilli(rep.int(3)).UTC(),
		AttemptsRemaining: int(rep.int(4)),
		AvailableChannels: available(in.mode, rep.str(5) == "1"),
		Status:            Pending,
	}, nil
}

// Reasons of CODE_DELIVERY_FAILED.
const (
	reasonSMSCap        = "SMS_CAP_REACHED"
	reasonSMSCapUnknown = "SMS_CAP_UNAVAILABLE"
	reasonTimeout       = "TIMEOUT"
	reasonProvider      = "PROVIDER_ERROR"
)

// deliver sends the code. CODE_SENT is in the outbox already (issue.lua);
// a failed delivery adds CODE_DELIVERY_FAILED, with the challenge killed
// and the email fallback opened, like any unsuccessful attempt. If that
// cannot be recorded, the client gets an error rather than an answer
// whose event could be lost.
func (s *Service) deliver(ctx context.Context, in issuing, ch Challenge, to, code string, sms smsCount) error {
	refusal, reason := s.send(ctx, in.caller.Company, ch, to, code, sms)
	if refusal == nil {
		return nil
	}
	uid, err := newUID()
	if err != nil {
		return fmt.Errorf("issue challenge: %w", err)
	}
	err = failedScript.Run(ctx, s.Redis,
		[]string{in.k.challenge(ch.ID), in.k.login(ch.App), in.k.outbox()},
		ch.ID, uid, s.Now().UnixMilli(), header(in.caller, in.userID, ch.App), in.user.DisplayName,
		string(ch.Channel), reason).Err()
	if err != nil {
		return fmt.Errorf("issue challenge: mark delivery failure: %w: %v", ErrUnavailable, err)
	}
	s.kick(in.k)
	refusal.Available = available(in.mode, true)
	return refusal
}

// send delivers the code, or says why not.
func (s *Service) send(ctx context.Context, company string, ch Challenge, to, code string, sms smsCount) (*Refusal, string) {
	if ch.Channel == SMS {
		over, err := sms.over, sms.err
		if !sms.taken {
			over, err = s.smsOverCap(ctx, company)
		}
		if err != nil {
			s.Logger.ErrorContext(ctx, "sms cap check failed", "company", company, "err", err)
			return &Refusal{Code: CodeDeliveryFailed, Message: "could not send the SMS"}, reasonSMSCapUnknown
		} else if over {
			// The counter is per clock hour: the next SMS may go when it turns.
			now := s.Now()
			s.Logger.WarnContext(ctx, "company sms cap reached", "company", company)
			return &Refusal{Code: CodeRateLimited, Message: "this company's SMS limit is reached; ask for the code by email",
				RetryAfter: time.Hour - now.Sub(now.Truncate(time.Hour))}, reasonSMSCap
		}
	}
	sender, msg := s.SMS, smsMessage(code, s.cfg.CodeTTL)
	if ch.Channel == Email {
		sender, msg = s.Email, emailMessage(code, s.cfg.CodeTTL)
	}
	msg.To = to
	sendCtx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	err := sender.Send(sendCtx, msg)
	cancel()
	if err == nil {
		return nil, ""
	}
	// A provider's error may quote the message back (an SMTP rejection
	// naming the subject, say); the code must not reach the log.
	s.Logger.ErrorContext(ctx, "code delivery failed", "company", company, "channel", string(ch.Channel),
		"destination", ch.Destination, "err", strings.ReplaceAll(err.Error(), code, "[code]"))
	reason := reasonProvider
	if errors.Is(err, context.DeadlineExceeded) {
		reason = reasonTimeout
	}
	return &Refusal{Code: CodeDeliveryFailed, Message: "the code could not be delivered; try again or use another channel"}, reason
}

// smsOverCap counts an SMS against the company's hourly cap, for an SMS
// the issue did not count already.
func (s *Service) smsOverCap(ctx context.Context, company string) (bool, error) {
	ok, err := s.useSMS(ctx, s.reserveSMS(ctx, nil, company))
	return !ok && err == nil, err
}
