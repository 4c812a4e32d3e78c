package graph_test

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apptest"
)

// userKeys lists every Redis key under the user's hash tag,
// 2fa:v2:{c:<b64url(company)>:u:<b64url(user)>}, by a SCAN of the real
// Redis (or the in-process one). The tag's closing brace is in the
// pattern, so a user whose id extends this one's is not matched.
func userKeys(t *testing.T, s *apptest.Server, co, id string) []string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	pattern := "2fa:v2:{c:" + b64([]byte(co)) + ":u:" + b64([]byte(id)) + "}*"
	ctx := ctxT(t)
	var keys []string
	iter := s.Backends.Redis.Scan(ctx, 0, pattern, 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// keysGone polls until the user has no Redis key, and returns what is
// left at the deadline.
func keysGone(t *testing.T, s *apptest.Server, co, id string) []string {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for {
		left := userKeys(t, s, co, id)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lockApp sends wrong codes for the login's app until it locks.
func lockApp(t *testing.T, l *login) {
	t.Helper()
	ch := l.mustIssue(t, "")
	for range 10 {
		if v := l.verify(t, ch.ID, wrong(l.code(t, ch))); str(v.Status) == "LOCKED" {
			return
		}
	}
	t.Fatalf("%s: not locked after 10 wrong codes", l.id)
}

// TestDeleteUserLeavesNoRedisKey: whatever state a user has in Redis
// (pending codes in both apps, a used code, a lock, codes voided by a
// new phone), deleteUser leaves no key under their hash tag, and the
// keys of the user next to them stay.
func TestDeleteUserLeavesNoRedisKey(t *testing.T) {
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	cases := []struct {
		name  string
		setup func(t *testing.T, l *login)
	}{
		{"pending code", func(t *testing.T, l *login) { l.mustIssue(t, "") }},
		{"pending codes in both apps, resent", func(t *testing.T, l *login) {
			l.mustIssue(t, "")
			s.Clock.Advance(31 * time.Second) // past the resend cooldown
			l.mustIssue(t, "")
			l.app = "MANAGER"
			l.mustIssue(t, "")
		}},
		{"code used", func(t *testing.T, l *login) {
			ch := l.mustIssue(t, "")
			if v := l.verify(t, ch.ID, l.code(t, ch)); str(v.Status) != "APPROVED" {
				t.Fatalf("verify = %+v", v)
			}
		}},
		{"locked", lockApp},
		{"codes voided by a new phone", func(t *testing.T, l *login) {
			l.mustIssue(t, "")
			mutate[userPayload](t, l.service, mUpdateUser, "updateUser", map[string]any{"id": l.id, "phone": uniquePhone()})
		}},
	}
	for i, tc := range cases {
		id := "del" + string(rune('a'+i))
		l := newLogin(t, s, co, id, uniquePhone(), uniqueEmail(), "WEB", "MANAGER")
		neighbour := newLogin(t, s, co, id+"x", uniquePhone(), uniqueEmail(), "WEB")
		neighbour.mustIssue(t, "")
		tc.setup(t, l)
		if len(userKeys(t, s, co, id)) == 0 {
			t.Fatalf("%s: no Redis keys before the delete; the scan pattern is wrong", tc.name)
		}
		p := mutate[struct {
			DeletedUserID *string     `json:"deletedUserId"`
			UserErrors    []userError `json:"userErrors"`
		}](t, l.service, mDeleteUser, "deleteUser", map[string]any{"id": id})
		if str(p.DeletedUserID) != id {
			t.Fatalf("%s: deleteUser = %+v", tc.name, p)
		}
		// The outbox outlives the user until its sign-in events are in
		// the log; the mover then deletes it.
		if left := keysGone(t, s, co, id); len(left) > 0 {
			t.Errorf("%s: keys left after deleteUser: %q", tc.name, left)
		}
		if len(userKeys(t, s, co, id+"x")) == 0 {
			t.Errorf("%s: the neighbour %sx lost their keys", tc.name, id)
		}
	}
}
