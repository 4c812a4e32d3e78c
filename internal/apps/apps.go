// Package apps is the one table of the frontends that have their own 2FA
// switch. Everything inside internal/ that depends on the set of apps
// iterates over All() and reads an app's fixed encodings from here, so
// adding an app means: the GraphQL enum, a row in table, and a migration
// adding its columns (see README, "Adding an app").
package apps

import "fmt"

// App is a frontend with its own 2FA switch. Its value is the name stored
// in audit rows (audit_events.app, at most 16 bytes) and used in details.
type App string

// Apps. Every constant needs a row in table (TestEveryConstantHasARow).
const (
	Web     App = "web"
	Manager App = "manager"
)

// info is one app's fixed encodings. None may ever change once released:
// live challenge ids, Redis keys and stored rows carry them.
type info struct {
	app App
	// code names the app in challenge ids (<random>.<code>.<user>). Chosen
	// by hand, never derived from the name: "mobile" and "manager" share a
	// first letter.
	code string
	// key names the app in Redis keys. Web and Manager keep the segments
	// keys had before this table, so locks, failure counts and pending
	// logins survive a deploy (and a rolling one, with old instances still
	// running); a new app may use its code.
	key string
	// column is the users column holding the per-user switch;
	// defaultColumn the company_settings column holding the default.
	column, defaultColumn string
}

// table is the list of apps, in the fixed order All returns.
var table = []info{
	{app: Web, code: "w", key: "web", column: "two_factor_web", defaultColumn: "default_web"},
	{app: Manager, code: "m", key: "manager", column: "two_factor_manager", defaultColumn: "default_manager"},
}

var (
	byApp  map[App]info
	byCode map[string]App
)

// A broken table would misroute codes silently; refuse to start instead.
func init() {
	var err error
	if byApp, byCode, err = index(table); err != nil {
		panic(err)
	}
}

// index checks a table and builds its lookups: every field set, codes,
// keys, names and columns unique, and each safe where it is used.
func index(t []info) (map[App]info, map[string]App, error) {
	apps, codes := make(map[App]info, len(t)), make(map[string]App, len(t))
	seen := map[string]App{}
	for _, r := range t {
		if r.app == "" || r.code == "" || r.key == "" || r.column == "" || r.defaultColumn == "" {
			return nil, nil, fmt.Errorf("apps: %q has an empty field", r.app)
		}
		if !safe(string(r.app)) || !safe(r.code) || !safe(r.key) {
			return nil, nil, fmt.Errorf("apps: %q: names, codes and keys are 1-16 of [a-z0-9_]", r.app)
		}
		// One namespace per kind: a code may equal a key, not another code.
		for _, kv := range [][2]string{{"name", string(r.app)}, {"code", r.code}, {"key", r.key},
			{"column", r.column}, {"column", r.defaultColumn}} {
			k := kv[0] + ":" + kv[1]
			if other, dup := seen[k]; dup {
				return nil, nil, fmt.Errorf("apps: %q and %q share the %s %q", other, r.app, kv[0], kv[1])
			}
			seen[k] = r.app
		}
		apps[r.app], codes[r.code] = r, r.app
	}
	return apps, codes, nil
}

// safe is the alphabet that cannot end an id part ('.') or a Redis key
// segment or hash tag (':', '{', '}'), nor act as a glob.
func safe(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// All returns every app in the table's fixed order. The slice is the
// caller's own.
func All() []App {
	out := make([]App, len(table))
	for i, r := range table {
		out[i] = r.app
	}
	return out
}

// Parse returns the app named s, as stored in audit rows.
func Parse(s string) (App, bool) {
	_, ok := byApp[App(s)]
	return App(s), ok
}

// FromCode returns the app whose challenge-id code is code.
func FromCode(code string) (App, bool) {
	a, ok := byCode[code]
	return a, ok
}

// Valid reports whether a is a known app.
func (a App) Valid() bool {
	_, ok := byApp[a]
	return ok
}

// Code is a's code in challenge ids; "" for an unknown app.
func (a App) Code() string { return byApp[a].code }

// Key is a's segment in Redis key names; "" for an unknown app.
func (a App) Key() string { return byApp[a].key }

// Column is the users column holding a's per-user switch.
func (a App) Column() string { return byApp[a].column }

// DefaultColumn is the company_settings column holding a's default for
// new users.
func (a App) DefaultColumn() string { return byApp[a].defaultColumn }
