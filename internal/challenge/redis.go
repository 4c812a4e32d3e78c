package challenge

import (
	_ "embed"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/apps"
)

var (
	//go:embed issue.lua
	issueLua    string
	issueScript = redis.NewScript(issueLua)

	//go:embed verify.lua
	verifyLua    string
	verifyScript = redis.NewScript(verifyLua)

	//go:embed failed.lua
	failedLua    string
	failedScript = redis.NewScript(failedLua)

	//go:embed unlock.lua
	unlockLua    string
	unlockScript = redis.NewScript(unlockLua)
)

// Every script that changes state keeps its reply under the request's
// uid: go-redis sends a command again when the connection drops after
// Redis ran it, and the second run then answers with the first one's
// reply instead of counting a wrong code twice or calling a right one
// ALREADY_USED. Issue, verify and a failed delivery keep it in the
// challenge's hash (it lives as long as the code); unlock and void, which
// have no challenge, in the user's kept hash for keptReplyTTL. Retries
// come within one request's timeouts, far under that.
const keptReplyTTL = time.Minute

// keys names one user's Redis keys. They share the hash tag
// {c:<company>:u:<user>}, so every script runs in one Redis Cluster slot.
// Company and user are base64url, whose alphabet has no ':', '{' or '}':
// company "acme:u:jane" with user "x" and company "acme" with user
// "jane:u:x" get different keys, and no id can end the hash tag early or
// act as a SCAN pattern. The "v2" keeps these apart from the unescaped
// keys of earlier versions, which simply expire.
type keys struct{ tag string }

const keyPrefix = "2fa:v2:"

func keysFor(company, user string) keys {
	return keys{tag: keyPrefix + "{c:" + keyPart(company) + ":u:" + keyPart(user) + "}"}
}

func keyPart(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// login and lock carry the app's fixed segment from the apps table
// (apps.App.Key), not its name.
func (k keys) login(app apps.App) string  { return k.tag + ":" + app.Key() + ":login" }
func (k keys) lock(app apps.App) string   { return k.tag + ":" + app.Key() + ":lock" }
func (k keys) issued() string             { return k.tag + ":issued" }
func (k keys) challenge(id string) string { return k.tag + ":ch:" + id }

// kept is the user's hash of recent unlock and void replies, by request
// uid, for a retried call.
func (k keys) kept() string { return k.tag + ":kept" }

// failures counts the app's consecutive wrong codes. It is not part of the
// login hash, which a lock deletes: only a right code or an unlock resets
// it (NIST SP 800-63B 5.2.2).
func (k keys) failures(app apps.App) string { return k.tag + ":" + app.Key() + ":failures" }

// outbox is the user's stream of authentication events waiting to be
// moved to the audit table (internal/outbox).
func (k keys) outbox() string { return k.tag + outboxSuffix }

const outboxSuffix = ":outbox"

// OutboxMatch is the SCAN MATCH pattern of the outbox keys of company, or
// of every company when company is "". Base64url has no glob characters,
// so a company's pattern matches its own keys only.
func OutboxMatch(company string) string {
	c := "*"
	if company != "" {
		c = keyPart(company)
	}
	return keyPrefix + "{c:" + c + ":u:*}" + outboxSuffix
}

// smsKey is the company's hourly SMS counter, in the company's own slot.
func smsKey(company string, hour int64) string {
	return fmt.Sprintf("%s{c:%s}:sms:%d", keyPrefix, keyPart(company), hour)
}

// A challenge id carries the app and the user it belongs to, so verify can
// name the user's keys without a lookup: <random>.<code>.<base64url(user)>,
// the code from the apps table (Web "w", Manager "m"), never the name's
// first letter, which two apps may share. The company is never in it; it
// always comes from the caller's token.
func makeID(random string, app apps.App, user string) string {
	return random + "." + app.Code() + "." + base64.RawURLEncoding.EncodeToString([]byte(user))
}

func parseID(id string) (app apps.App, user string, ok bool) {
	parts := strings.Split(id, ".")
	if len(id) > 400 || len(parts) != 3 || len(parts[0]) != 22 {
		return "", "", false
	}
	// The random part goes into a key name too: base64url only.
	if _, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil {
		return "", "", false
	}
	if app, ok = apps.FromCode(parts[1]); !ok {
		return "", "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(b) == 0 {
		return "", "", false
	}
	return app, string(b), true
}

// reply reads a script's array reply.
type reply []any

func (r reply) str(i int) string {
	if i >= len(r) {
		return ""
	}
	s, _ := r[i].(string)
	return s
}

// int reads an integer, sent as one or, in a kept reply, as a string.
func (r reply) int(i int) int64 {
	if i >= len(r) {
		return 0
	}
	switch v := r[i].(type) {
	case int64:
		return v
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}
