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
	good := func() map[string]any {
		out := map[string]any{}
		vals := entry{uid: "u1", action: string(audit.CodeRejected), hdr: header(c, "jane", apps.Web), targetName: "Jane", at: at,
			details: []any{"i:attempt", "2", "s:channel", "SMS", "t:lockedUntil", "", "b:lockedIndefinitely", "1"}}.values()
		for i := 0; i < len(vals); i += 2 {
			out[vals[i].(string)] = fmt.Sprint(vals[i+1]) // as Redis returns it
		}
		return out
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
	} {
		v := good()
		change(v)
		if _, err := DecodeOutboxEntry(k.outbox(), v); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}
