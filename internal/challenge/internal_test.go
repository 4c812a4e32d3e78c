package challenge

import (
	"strings"
	"testing"
	"testing/quick"
	"time"

	"github.com/twofactor/service/internal/apps"
)

func TestIDRoundTrip(t *testing.T) {
	random := strings.Repeat("A", 22)
	for _, user := range []string{"u1", "jane.doe@example.com", "ünï", "a.b.c", "x/y+z=="} {
		for _, app := range apps.All() {
			id := makeID(random, app, user)
			gotApp, gotUser, ok := parseID(id)
			if !ok || gotApp != app || gotUser != user {
				t.Errorf("parseID(makeID(%s, %s)) = %s, %s, %v", app, user, gotApp, gotUser, ok)
			}
		}
	}
	for _, bad := range []string{
		"", "..", random + ".w.", random + ".x.dTE", random + "A.w.dTE", "short.w.dTE",
		random + ".w.dTE.x", random + ".w.!!!", random + ".w." + strings.Repeat("A", 400),
	} {
		if _, _, ok := parseID(bad); ok {
			t.Errorf("parseID(%q) accepted", bad)
		}
	}
}

func TestKeysShareOneHashTag(t *testing.T) {
	for _, tc := range []struct{ company, user string }{
		{"co1", "u1"}, {"a}b", "{x}"}, {"acme:u:jane", "x"}, {"*", "?[]"},
	} {
		k := keysFor(tc.company, tc.user)
		tag := hashTag(k.issued())
		if tag == "" {
			t.Fatalf("%q/%q: no hash tag in %s", tc.company, tc.user, k.issued())
		}
		for _, key := range []string{k.login(apps.Web), k.lock(apps.Manager), k.issued(), k.challenge("x.w.dTE"),
			k.failures(apps.Web), k.outbox(), k.kept()} {
			if hashTag(key) != tag || strings.Count(key, "{") != 1 || strings.Count(key, "}") != 1 {
				t.Errorf("key %s does not carry the user's hash tag %s alone", key, tag)
			}
		}
		if sms := smsKey(tc.company, 1); strings.Count(sms, "{") != 1 || strings.Count(sms, "}") != 1 {
			t.Errorf("SMS key %s: not exactly one hash tag", sms)
		}
	}
}

// hashTag is what Redis Cluster hashes: from the first { to the next }.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return ""
	}
	return key[i+1 : i+1+j]
}

// tenantKeys is every key name a (company, user) pair can touch, the
// company's SMS key last (checkUnique relies on it).
func tenantKeys(company, user string) []string {
	k := keysFor(company, user)
	var out []string
	for _, app := range apps.All() {
		out = append(out, k.login(app), k.lock(app), k.failures(app))
	}
	return append(out, k.issued(), k.challenge("AAAAAAAAAAAAAAAAAAAAAA.w.eA"), k.outbox(), k.kept(), smsKey(company, 1))
}

// TestRedisKeyCollisionsAcrossTenantsProperty is issue 8, finding 6: keys were
// "2fa:{c:"+company+":u:"+user+"}", so company "acme:u:jane" with user "x"
// shared every key with acme's user "jane:u:x". Now distinct pairs never
// share a key name or a hash tag.
func TestRedisKeyCollisionsAcrossTenantsProperty(t *testing.T) {
	if a, b := keysFor("acme:u:jane", "x"), keysFor("acme", "jane:u:x"); a.tag == b.tag {
		t.Fatalf("the reported pair shares the tag %s", a.tag)
	}
	// Every pair built from fragments that were separators, or are hash
	// tag and glob characters, against every other.
	frags := []string{"", "a", ":", "u", ":u:", "c:", "{", "}", "}:", "*", "2fa", "=", "/"}
	var parts []string
	for _, x := range frags {
		for _, y := range frags {
			parts = append(parts, x+y)
		}
	}
	seen := map[string][2]string{}
	for _, company := range parts {
		for _, user := range parts {
			checkUnique(t, seen, company, user)
		}
	}
	// And random byte strings, including invalid UTF-8.
	f := func(company, user []byte) bool { return checkUnique(t, seen, string(company), string(user)) }
	if err := quick.Check(f, &quick.Config{MaxCount: 20000}); err != nil {
		t.Error(err)
	}
}

// checkUnique records the pair's keys and fails if another pair had one.
// The SMS key is per company, so only other companies count for it.
func checkUnique(t *testing.T, seen map[string][2]string, company, user string) bool {
	t.Helper()
	pair := [2]string{company, user}
	ok := true
	keys := tenantKeys(company, user)
	for i, key := range keys {
		prev, dup := seen[key]
		sms := i == len(keys)-1
		if dup && prev != pair && (!sms || prev[0] != company) {
			t.Errorf("%q/%q and %q/%q share key %s", company, user, prev[0], prev[1], key)
			ok = false
		}
		seen[key] = pair
	}
	tag := "tag " + hashTag(tenantKeys(company, user)[0])
	if prev, dup := seen[tag]; dup && prev != pair {
		t.Errorf("%q/%q and %q/%q share a hash tag", company, user, prev[0], prev[1])
		ok = false
	}
	seen[tag] = pair
	return ok
}

func TestConfig(t *testing.T) {
	if err := (Config{}).withDefaults().Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	if (Config{}).withDefaults() != DefaultConfig {
		t.Errorf("withDefaults of zero = %+v, want %+v", (Config{}).withDefaults(), DefaultConfig)
	}
	for name, c := range map[string]Config{
		"ttl past window":  {CodeTTL: time.Hour, LoginWindow: time.Minute},
		"negative ttl":     {CodeTTL: -time.Second},
		"negative limit":   {MaxCodesPerWindow: -1},
		"negative lock":    {LockDuration: -time.Minute},
		"negative sms cap": {SMSPerCompanyPerHour: -5},
	} {
		if err := c.withDefaults().Validate(); err == nil {
			t.Errorf("%s: %+v validated", name, c)
		}
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * time.Minute: "5 minutes", time.Minute: "1 minute", 90 * time.Second: "1m30s",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}
