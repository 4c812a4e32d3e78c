package challenge

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
)

// TestDecodeOutboxEntry: an entry decodes to its event; one that claims
// another tenant than its key, an unknown version or a non-sign-in action
// is refused (and so left in Redis by the mover).
func TestDecodeOutboxEntry(t *testing.T) {
	c := auth.Caller{UserID: "jane", Company: "acme", Role: auth.RoleUser}
	k := keysFor("acme", "jane")
	at := time.UnixMilli(1700000000123).UTC()
	good := func() map[string]any { // as Redis returns it: strings
		return map[string]any{"v": "1", "uid": "u1", "at": fmt.Sprint(at.UnixMilli()), "action": string(audit.CodeRejected),
			"hdr": header(c, "jane", apps.Web), "tn": "Jane",
			"i:attempt": "2", "s:channel": "SMS", "t:lockedUntil": "", "b:lockedIndefinitely": "1"}
	}
	e, err := DecodeOutboxEntry(k.outbox(), good())
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	_ = json.Unmarshal(e.Details, &d)
	if e.Company != "acme" || e.Action != audit.CodeRejected || e.UID != "u1" || !e.CreatedAt.Equal(at) ||
		e.Actor.Name != "Jane" || e.Target.ID != "jane" || e.App != string(apps.Web) ||
		d["attempt"] != float64(2) || d["channel"] != "SMS" || d["lockedUntil"] != nil || d["lockedIndefinitely"] != true {
		t.Errorf("decoded %+v details %v", e, d)
	}
	for name, change := range map[string]func(map[string]any){
		"another tenant's key": func(v map[string]any) { v["hdr"] = header(auth.Caller{UserID: "x", Company: "evil"}, "jane", apps.Web) },
		"newer version":        func(v map[string]any) { v["v"] = "2" },
		"settings action":      func(v map[string]any) { v["action"] = string(audit.UserDeleted) },
		"no uid":               func(v map[string]any) { delete(v, "uid") },
		"bad number":           func(v map[string]any) { v["i:attempt"] = "two" },
		"unknown detail kind":  func(v map[string]any) { v["x:y"] = "1" },
		"value and group":      func(v map[string]any) { v["s:channel.x"] = "1" },
		"empty nested name":    func(v map[string]any) { v["s:a..b"] = "1" },
		"nested too deep":      func(v map[string]any) { v["s:a.b.c.d"] = "1" },
	} {
		v := good()
		change(v)
		if _, err := DecodeOutboxEntry(k.outbox(), v); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestDecodeUnlockEntry: unlock.lua's entry, an admin's action with nested
// before and after details, decodes to the row the unlock used to write.
func TestDecodeUnlockEntry(t *testing.T) {
	admin := auth.Caller{UserID: "boss", Name: "The Boss", Company: "acme", Role: auth.RoleAdmin}
	until := time.UnixMilli(1700000900000).UTC()
	e, err := DecodeOutboxEntry(keysFor("acme", "jane").outbox(), map[string]any{
		"v": "1", "uid": "u2", "at": "1700000000000", "action": string(audit.UserTwoFactorUnlocked),
		"hdr": header(admin, "jane", apps.Web), "tn": "Jane",
		"t:before.lockedUntil": fmt.Sprint(until.UnixMilli()), "t:after.lockedUntil": "",
		"i:before.consecutiveFailures": "3", "i:after.consecutiveFailures": "0",
	})
	if err != nil {
		t.Fatal(err)
	}
	var d audit.Change
	if err := json.Unmarshal(e.Details, &d); err != nil {
		t.Fatal(err)
	}
	if e.Action != audit.UserTwoFactorUnlocked || e.Actor != (audit.Party{ID: "boss", Name: "The Boss", Role: auth.RoleAdmin}) ||
		e.Target.ID != "jane" || e.Target.Name != "Jane" ||
		d.Before["lockedUntil"] != until.Format(time.RFC3339) || d.Before["consecutiveFailures"] != float64(3) ||
		d.After["lockedUntil"] != nil || d.After["consecutiveFailures"] != float64(0) || len(d.After) != 2 {
		t.Errorf("decoded %+v details %+v", e, d)
	}
}
