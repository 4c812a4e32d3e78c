package challenge

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
)

// Authentication events are written to the user's outbox stream in the
// same step as the Redis change they describe (inside the Lua scripts),
// so no answer reaches a client while its event could still be lost; the
// outbox mover (internal/outbox) copies them to the audit table.
//
// An entry's fields:
//
//	v       format version ("1")
//	uid     the event's unique id (audit.Event.UID)
//	at      when, in Unix ms of the service's clock
//	action  an authentication audit.Action
//	hdr     JSON eventHeader: company, app, actor, target id
//	tn      the target's display name, as at issue time
//	s:NAME  a string detail, i:NAME an integer, b:NAME a boolean ("1"),
//	t:NAME  a time in Unix ms ("" for null); a NAME with dots nests:
//	        i:before.consecutiveFailures is details.before.consecutiveFailures
const entryVersion = "1"

// outboxAction tells the actions the scripts write: the sign-in steps and
// an admin's unlock (unlock.lua). Any other action in an outbox is refused.
func outboxAction(a audit.Action) bool {
	return audit.CategoryOf(a) == audit.Authentication || a == audit.UserTwoFactorUnlocked
}

// maxDetailDepth bounds a nested detail name.
const maxDetailDepth = 3

// eventHeader is what Go knows of an event before a script runs it.
type eventHeader struct {
	Company string     `json:"company"`
	App     string     `json:"app"`
	Actor   headerUser `json:"actor"`
	Target  string     `json:"target"`
}

type headerUser struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	Role string `json:"role,omitempty"`
}

// header encodes the caller (the actor) and the user (the target).
func header(c auth.Caller, userID string, app apps.App) string {
	b, err := json.Marshal(eventHeader{
		Company: c.Company, App: string(app), Target: userID,
		Actor: headerUser{ID: c.UserID, Name: c.Name, Role: string(c.Role)},
	})
	if err != nil {
		panic(fmt.Sprintf("event header: %v", err)) // plain strings only
	}
	return string(b)
}

// newUID is a random event id: 128 bits, base64url.
func newUID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("event uid: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// kick tells the outbox mover that k's outbox has new entries.
func (s *Service) kick(k keys) {
	if s.Outbox != nil {
		s.Outbox.Kick(k.outbox())
	}
}

// DecodeOutboxEntry turns an outbox entry of key back into an audit event.
// It refuses entries of another format version (a newer instance's, left
// for it to move) and entries whose company and user are not the key's.
func DecodeOutboxEntry(key string, values map[string]any) (*audit.Event, error) {
	field := func(name string) string { s, _ := values[name].(string); return s }
	if v := field("v"); v != entryVersion {
		return nil, fmt.Errorf("outbox entry: format version %q", v)
	}
	var h eventHeader
	if err := json.Unmarshal([]byte(field("hdr")), &h); err != nil {
		return nil, fmt.Errorf("outbox entry: header: %w", err)
	}
	if keysFor(h.Company, h.Target).outbox() != key {
		return nil, errors.New("outbox entry: company and user are not the key's")
	}
	action := audit.Action(field("action"))
	if !outboxAction(action) {
		return nil, fmt.Errorf("outbox entry: action %q", action)
	}
	at, err := strconv.ParseInt(field("at"), 10, 64)
	if err != nil || field("uid") == "" {
		return nil, errors.New("outbox entry: no time or uid")
	}
	details, err := entryDetails(values)
	if err != nil {
		return nil, err
	}
	e := &audit.Event{
		Company:   h.Company,
		Action:    action,
		Actor:     audit.Party{ID: h.Actor.ID, Name: h.Actor.Name, Role: auth.Role(h.Actor.Role)},
		Target:    &audit.Party{ID: h.Target, Name: field("tn")},
		App:       h.App,
		Details:   audit.Details(details),
		CreatedAt: time.UnixMilli(at).UTC(),
		UID:       field("uid"),
	}
	if e.Actor.ID == h.Target && e.Actor.Role == auth.RoleUser && e.Actor.Name == "" {
		e.Actor.Name = e.Target.Name // the user themself, as the users table names them
	}
	return e, nil
}

// entryDetails reads the typed detail fields.
func entryDetails(values map[string]any) (map[string]any, error) {
	out := map[string]any{}
	for name, raw := range values {
		kind, key, ok := strings.Cut(name, ":")
		if !ok {
			continue
		}
		s, _ := raw.(string)
		v, err := detailValue(kind, s)
		if err != nil {
			return nil, fmt.Errorf("outbox entry: detail %s: %w", name, err)
		}
		if err := setDetail(out, key, v); err != nil {
			return nil, fmt.Errorf("outbox entry: detail %s: %w", name, err)
		}
	}
	return out, nil
}

// detailValue reads one detail of kind (s, b, i or t).
func detailValue(kind, v string) (any, error) {
	switch kind {
	case "s":
		return v, nil
	case "b":
		return v == "1", nil
	case "i", "t":
		if kind == "t" && v == "" {
			return nil, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, err
		}
		if kind == "t" {
			return time.UnixMilli(n).UTC().Format(time.RFC3339), nil
		}
		return n, nil
	}
	return nil, errors.New("unknown kind")
}

// setDetail sets out[a][b]... for the dotted name "a.b...".
func setDetail(out map[string]any, name string, v any) error {
	path := strings.Split(name, ".")
	if len(path) > maxDetailDepth || slices.Contains(path, "") {
		return errors.New("nested too deep, or an empty name")
	}
	for _, p := range path[:len(path)-1] {
		next, ok := out[p].(map[string]any)
		if !ok {
			if _, taken := out[p]; taken {
				return errors.New("both a value and a group")
			}
			next = map[string]any{}
			out[p] = next
		}
		out = next
	}
	last := path[len(path)-1]
	if _, taken := out[last]; taken {
		return errors.New("both a value and a group")
	}
	out[last] = v
	return nil
}
