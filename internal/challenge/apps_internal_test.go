package challenge

import (
	"strings"
	"testing"

	"github.com/twofactor/service/internal/apps"
)

// TestIDsUseTheAppsTable: every app's ids carry its table code, ids minted
// before the table (".w.", ".m.") still parse to the same app, and a code
// no app has is refused, so the id answers NOT_FOUND.
func TestIDsUseTheAppsTable(t *testing.T) {
	random, user := strings.Repeat("A", 22), "dTE" // base64url("u1")
	for _, app := range apps.All() {
		id := makeID(random, app, "u1")
		if want := random + "." + app.Code() + "." + user; id != want {
			t.Errorf("makeID(%s) = %q, want %q", app, id, want)
		}
	}
	for code, want := range map[string]apps.App{"w": apps.Web, "m": apps.Manager} {
		if app, u, ok := parseID(random + "." + code + "." + user); !ok || app != want || u != "u1" {
			t.Errorf("live id with %q = %s, %s, %v; want %s", code, app, u, ok, want)
		}
	}
	// Names, first letters of other words, upper case and empty codes are
	// not codes.
	for _, code := range []string{"x", "web", "manager", "W", "M", "mo", "", "w m"} {
		if _, _, ok := parseID(random + "." + code + "." + user); ok {
			t.Errorf("id with unknown app code %q accepted", code)
		}
	}
}

// TestRedisKeysPerAppDistinct: no two apps share a login or lock key, and
// Web and Manager keep the key names live state already has.
func TestRedisKeysPerAppDistinct(t *testing.T) {
	k := keysFor("acme", "u1")
	seen := map[string]apps.App{}
	for _, app := range apps.All() {
		for _, key := range []string{k.login(app), k.lock(app)} {
			if other, dup := seen[key]; dup {
				t.Errorf("%s and %s share the key %s", other, app, key)
			}
			seen[key] = app
			if !strings.Contains(key, ":"+app.Key()+":") {
				t.Errorf("%s key %s lacks its table segment %q", app, key, app.Key())
			}
		}
	}
	for _, want := range []string{k.tag + ":web:login", k.tag + ":manager:lock"} {
		if _, ok := seen[want]; !ok {
			t.Errorf("live key %s is no longer named", want)
		}
	}
}

// TestScriptsNameNoApp: the Lua scripts get every key from Go; a quoted
// app name, code or key segment in one would be a second table.
func TestScriptsNameNoApp(t *testing.T) {
	for name, src := range map[string]string{"issue": issueLua, "verify": verifyLua, "failed": failedLua} {
		for _, app := range apps.All() {
			for _, s := range []string{string(app), app.Code(), app.Key()} {
				if strings.Contains(src, "'"+s+"'") || strings.Contains(src, `"`+s+`"`) {
					t.Errorf("%s.lua has the literal %q of app %s", name, s, app)
				}
			}
		}
	}
}
