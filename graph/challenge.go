package graph

import (
	"errors"
	"math"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/settings"
)

func toChallenge(c challenge.Challenge) *model.Challenge {
	return &model.Challenge{
		ID:                c.ID,
		App:               toApp(c.App),
		Channel:           model.Channel(c.Channel),
		Destination:       c.Destination,
		ExpiresAt:         c.ExpiresAt,
		ResendAvailableAt: c.ResendAvailableAt,
		AvailableChannels: toChannels(c.AvailableChannels),
		AttemptsRemaining: c.AttemptsRemaining,
		Status:            model.ChallengeStatus(c.Status),
	}
}

func toChannels(cs []challenge.Channel) []model.Channel {
	out := make([]model.Channel, len(cs))
	for i, c := range cs {
		out[i] = model.Channel(c)
	}
	return out
}

func toContact(cp *settings.ContactPerson) *model.ContactPerson {
	if cp == nil {
		return nil
	}
	return &model.ContactPerson{Name: cp.Name, Email: optional(cp.Email), Phone: optional(cp.Phone)}
}

func asRefusal(err error) (*challenge.Refusal, bool) {
	var r *challenge.Refusal
	ok := errors.As(err, &r)
	return r, ok
}

// refusalField is the input field a refusal is about, if any.
func refusalField(r *challenge.Refusal, fallback string) []string {
	switch r.Code {
	case challenge.CodeChannelNotAvailable, challenge.CodeNoDeliveryAddress:
		return []string{"input", "channel"}
	case challenge.CodeInvalidCode, challenge.CodeAlreadyUsed:
		return []string{"input", "code"}
	case challenge.CodeNotEnabled:
		return []string{"input", "app"}
	}
	if fallback == "" {
		return nil
	}
	return []string{"input", fallback}
}

// issueRefusal turns a refused issue into its payload.
func issueRefusal(err error) (*model.IssueChallengePayload, bool) {
	r, ok := asRefusal(err)
	if !ok {
		return nil, false
	}
	field := refusalField(r, "")
	out := &model.IssueChallengePayload{
		UserErrors:    []model.UserError{{Field: field, Code: r.Code, Message: r.Message}},
		ContactPerson: toContact(r.Contact),
	}
	if r.RetryAfter > 0 {
		secs := int(math.Ceil(r.RetryAfter.Seconds()))
		out.RetryAfter = &secs
	}
	if !r.LockedUntil.IsZero() {
		out.LockedUntil = &r.LockedUntil
	}
	if r.Code == challenge.CodeLocked {
		out.LockedIndefinitely = &r.LockedIndefinitely
	}
	if r.Available != nil {
		out.AvailableChannels = toChannels(r.Available)
	}
	return out, true
}

func toVerifyPayload(v challenge.VerifyResult) *model.VerifyChallengePayload {
	out := &model.VerifyChallengePayload{UserErrors: []model.UserError{}, ContactPerson: toContact(v.Contact)}
	if v.Status != "" {
		st := model.ChallengeStatus(v.Status)
		out.Status = &st
		n := v.AttemptsRemaining
		out.AttemptsRemaining = &n
	}
	if v.Assertion != "" {
		out.Assertion = &v.Assertion
	}
	if !v.LockedUntil.IsZero() {
		out.LockedUntil = &v.LockedUntil
	}
	if v.Status == challenge.Locked {
		out.LockedIndefinitely = &v.LockedIndefinitely
	}
	return out
}
