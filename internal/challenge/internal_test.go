package challenge

import (
	"strings"
	"testing"
	"time"
)

func TestMask(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"+37120000078", "+3712*****78"},
		{"+4915112345678", "+4915*******78"},
		{"+37120000", "+3*****00"},
		{"+1234567", "+1****67"},
		{"+12345678901", "+1234*****01"},
		{"+123456789012345", "+1234*********45"},
		{"+12", "+**"},
		{"", ""},
	} {
		if got := maskPhone0(tc.in); got != tc.want {
			t.Errorf("maskPhone0(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"jane@example.com", "j***@example.com"},
		{"j@example.com", "j***@example.com"},
		{"a.b+c@sub.example.org", "a***@sub.example.org"},
		{"we@ird@example.com", "w***@example.com"},
		{"@example.com", "***"},
		{"noat", "***"},
		{"", ""},
	} {
		if got := maskEmail0(tc.in); got != tc.want {
			t.Errorf("maskEmail0(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestIDRoundTrip(t *testing.T) {
	random := strings.Repeat("A", 22)
	for _, user := range []string{"u1", "jane.doe@example.com", "ünï", "a.b.c", "x/y+z=="} {
		for _, app := range []string{"web", "manager"} {
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
	k := keysFor("co1", "u1")
	tag := "{c:co1:u:u1}"
	for _, key := range []string{k.login("web"), k.lock("manager"), k.issued(), k.challenge("x.w.dTE")} {
		if !strings.Contains(key, tag) || strings.Count(key, "{") != 1 {
			t.Errorf("key %s does not carry the hash tag %s", key, tag)
		}
	}
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
