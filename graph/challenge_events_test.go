package graph_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/outbox"
	"github.com/twofactor/service/internal/testenv"
)

// eventWait bounds each poll for events that the outbox mover copies to
// the log asynchronously; nothing is asserted about time.
const eventWait = 20 * time.Second

// waitEvents polls the log until filter matches at least n rows, and
// returns them (newest first). Sign-in events reach the log a moment after
// the answer, through the Redis outbox.
func waitEvents(t *testing.T, c *apptest.Client, filter map[string]any, n int) []eventT {
	t.Helper()
	deadline := time.Now().Add(eventWait)
	for {
		rows := allEvents(t, c, filter)
		if len(rows) >= n || time.Now().After(deadline) {
			return rows
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// actions lists rows' actions, oldest first.
func actions(rows []eventT) []string {
	out := make([]string, len(rows))
	for i, e := range rows {
		out[len(rows)-1-i] = e.Action
	}
	return out
}

func details(t *testing.T, e eventT) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(e.Details, &d); err != nil {
		t.Fatalf("%s details %s: %v", e.Action, e.Details, err)
	}
	return d
}

// wantDetails asserts that e's details hold want (numbers as JSON numbers).
func wantDetails(t *testing.T, e eventT, want map[string]any) {
	t.Helper()
	got := details(t, e)
	for k, v := range want {
		if fmt.Sprint(got[k]) != fmt.Sprint(v) {
			t.Errorf("%s details[%s] = %v, want %v (all: %v)", e.Action, k, got[k], v, got)
		}
	}
}

// TestAuthenticationEventDetails: every sign-in step leaves a row with the
// caller as actor, the user as target, the app, and its details; the
// category filter separates them from settings rows.
func TestAuthenticationEventDetails(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "steps", uniquePhone(), uniqueEmail(), "WEB")
	auth := map[string]any{"category": "AUTHENTICATION", "userId": "steps"}

	// Delivery fails (the code was issued and handed to delivery: CODE_SENT,
	// then CODE_DELIVERY_FAILED), then a code is sent by email, and superseded.
	s.Outbox.SetFail("sms", true)
	failed := l.issue(t, "")
	wantUserError(t, "sms down", failed.UserErrors, "DELIVERY_FAILED")
	s.Outbox.SetFail("sms", false)
	first := l.mustIssue(t, "EMAIL")
	s.Clock.Advance(31 * time.Second)
	second := l.mustIssue(t, "")
	wantStatus(t, "superseded", l.verify(t, first.ID, l.code(t, first)), "EXPIRED", 3)
	// A wrong code, then the right one; then a code left to expire.
	wantStatus(t, "wrong", l.verify(t, second.ID, wrong(l.code(t, second))), "REJECTED", 2)
	wantStatus(t, "right", l.verify(t, second.ID, l.code(t, second)), "APPROVED", 2)
	s.Clock.Advance(31 * time.Second)
	third := l.mustIssue(t, "")
	s.Clock.Advance(6 * time.Minute)
	wantStatus(t, "expired", l.verify(t, third.ID, l.code(t, third)), "EXPIRED", 3)

	want := []string{"CODE_SENT", "CODE_DELIVERY_FAILED", "CODE_SENT", "CODE_SENT", "CODE_EXPIRED", "CODE_REJECTED",
		"CODE_VERIFIED", "CODE_SENT", "CODE_EXPIRED"}
	rows := waitEvents(t, l.admin, auth, len(want))
	if got := actions(rows); !slices.Equal(got, want) {
		t.Fatalf("authentication rows %v, want %v", got, want)
	}
	for _, e := range rows {
		if e.Actor.ID != "steps" || str(e.Actor.Role) != "USER" || str(e.Actor.DisplayName) != "User steps" ||
			e.TargetUser == nil || e.TargetUser.ID != "steps" || str(e.TargetUser.DisplayName) != "User steps" || str(e.App) != "WEB" {
			t.Errorf("%s: actor %+v target %+v app %s, want the user on WEB", e.Action, e.Actor, e.TargetUser, str(e.App))
		}
	}
	slices.Reverse(rows)                                                                         // oldest first, as want
	wantDetails(t, rows[0], map[string]any{"channel": "SMS", "destination": second.Destination}) // the same phone
	wantDetails(t, rows[1], map[string]any{"channel": "SMS", "reason": "PROVIDER_ERROR", "challengeId": details(t, rows[0])["challengeId"]})
	wantDetails(t, rows[2], map[string]any{"channel": "EMAIL", "destination": first.Destination, "challengeId": first.ID})
	wantDetails(t, rows[4], map[string]any{"reason": "superseded", "challengeId": first.ID, "channel": "EMAIL"})
	wantDetails(t, rows[5], map[string]any{"attempt": 1, "maxAttempts": 3, "consecutiveFailures": 1, "challengeId": second.ID})
	wantDetails(t, rows[6], map[string]any{"channel": "SMS", "challengeId": second.ID})
	wantDetails(t, rows[8], map[string]any{"reason": "expired", "challengeId": third.ID})
	if id, _ := details(t, rows[1])["challengeId"].(string); id == "" {
		t.Errorf("CODE_DELIVERY_FAILED without a challengeId: %s", rows[1].Details)
	}

	// The settings rows are apart, and the actions filter still works.
	for _, e := range allEvents(t, l.admin, map[string]any{"category": "SETTINGS", "userId": "steps"}) {
		if slices.Contains(want, e.Action) {
			t.Errorf("settings category holds %s", e.Action)
		}
	}
	if n := len(allEvents(t, l.admin, map[string]any{"actions": []string{"CODE_SENT"}, "userId": "steps"})); n != 4 {
		t.Errorf("CODE_SENT rows %d, want 4", n)
	}
}

// TestAuthenticationEventsLive: sign-in events reach auditEventAdded
// subscribers filtered by category.
func TestAuthenticationEventsLive(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "live", uniquePhone(), uniqueEmail(), "WEB")
	// Subscribe from the newest row so far: the feed catches up from there,
	// whether the events land before or after the subscription starts.
	page := auditPage(t, l.admin, map[string]any{"first": 1})
	if len(page.Edges) != 1 {
		t.Fatalf("no row to start from: %+v", page)
	}
	ws := dialWS(t, s, l.admin.Token)
	ws.send(t, map[string]any{"type": "subscribe", "id": "auth", "payload": map[string]any{
		"query":     `subscription($after: String) { auditEventAdded(after: $after, filter: {category: AUTHENTICATION}) { node { action targetUser { id } } } }`,
		"variables": map[string]any{"after": page.Edges[0].Cursor},
	}})
	ch := l.mustIssue(t, "")
	wantStatus(t, "right", l.verify(t, ch.ID, l.code(t, ch)), "APPROVED", 3)
	for _, want := range []string{"CODE_SENT", "CODE_VERIFIED"} {
		m := ws.read(t)
		var p struct {
			Data struct {
				AuditEventAdded struct {
					Node struct {
						Action     string `json:"action"`
						TargetUser struct {
							ID string `json:"id"`
						} `json:"targetUser"`
					} `json:"node"`
				} `json:"auditEventAdded"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Payload, &p); err != nil || m.Type != "next" {
			t.Fatalf("message %s %s, want next", m.Type, m.Payload)
		}
		if n := p.Data.AuditEventAdded.Node; n.Action != want || n.TargetUser.ID != "live" {
			t.Fatalf("live event %+v, want %s for live", n, want)
		}
	}
}

// TestLockedWhileDatabaseDown: the database fails while the third wrong
// code locks. The client still gets LOCKED, with the contact person from
// this instance's settings cache (issue 12: a LOCKED answer reads no SQL),
// the lock holds, and the row appears once the database is back.
func TestLockedWhileDatabaseDown(t *testing.T) {
	t.Parallel()
	var db *apptest.DatabaseSwitch
	s := apptest.Start(t, apptest.DatabaseOutage(t, &db))
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "outage", uniquePhone(), uniqueEmail(), "WEB")
	ch := l.mustIssue(t, "")
	bad := wrong(l.code(t, ch))
	wantStatus(t, "wrong 1", l.verify(t, ch.ID, bad), "REJECTED", 2)
	wantStatus(t, "wrong 2", l.verify(t, ch.ID, bad), "REJECTED", 1)

	db.Down()
	v := l.verify(t, ch.ID, bad)
	wantStatus(t, "wrong 3 with the database down", v, "LOCKED", 0)
	if v.LockedUntil == nil || v.ContactPerson == nil || v.ContactPerson.Name != "Help Desk" {
		t.Errorf("LOCKED without the database: lockedUntil %v contact %+v, want a time and the cached contact", v.LockedUntil, v.ContactPerson)
	}
	again := l.verify(t, ch.ID, l.code(t, ch))
	wantStatus(t, "right code while locked, database down", again, "LOCKED", 0)
	db.Up()

	rows := waitEvents(t, l.admin, map[string]any{"actions": []string{"FAILED_ATTEMPTS_LIMIT_REACHED"}, "userId": "outage"}, 1)
	if len(rows) != 1 {
		t.Fatalf("FAILED_ATTEMPTS_LIMIT_REACHED rows after the outage: %d, want 1", len(rows))
	}
	wantDetails(t, rows[0], map[string]any{"failedAttempts": 3, "lockedIndefinitely": false,
		"lockedUntil": parseTime(t, "lockedUntil", *v.LockedUntil).Truncate(time.Second).Format(time.RFC3339)})
	if web, _ := l.lockedUntil(t); str(web) != str(v.LockedUntil) {
		t.Errorf("lock after the outage: %s, want %s", str(web), str(v.LockedUntil))
	}
	rejected := waitEvents(t, l.admin, map[string]any{"actions": []string{"CODE_REJECTED"}, "userId": "outage"}, 3)
	if len(rejected) != 3 {
		t.Errorf("CODE_REJECTED rows %d, want 3", len(rejected))
	}
}

// TestKilledInstanceEventsArriveThroughPeer: an instance that answers and
// dies before moving its events (its mover never runs) leaves them in
// Redis; another instance's sweeper moves them, once each.
func TestKilledInstanceEventsArriveThroughPeer(t *testing.T) {
	t.Parallel()
	co := testenv.Company(t)
	dead := apptest.Start(t, func(o *app.Options) { o.AuditOutbox.Manual = true })
	updateGeneral(t, dead.Admin(t, co), map[string]any{"deliveryMethod": "SMS_WITH_EMAIL_BACKUP", "contactPerson": helpDesk})
	l := newLogin(t, dead, co, "orphan", uniquePhone(), uniqueEmail(), "WEB")
	ch := l.mustIssue(t, "")
	wantStatus(t, "wrong", l.verify(t, ch.ID, wrong(l.code(t, ch))), "REJECTED", 2)
	wantStatus(t, "right", l.verify(t, ch.ID, l.code(t, ch)), "APPROVED", 2)
	if n := len(allEvents(t, l.admin, map[string]any{"category": "AUTHENTICATION"})); n != 0 {
		t.Fatalf("%d authentication rows before any mover ran, want 0", n)
	}

	apptest.StartPeer(t, dead, func(o *app.Options) {
		o.AuditOutbox = outboxSweeping(co)
	})
	want := []string{"CODE_SENT", "CODE_REJECTED", "CODE_VERIFIED"}
	rows := waitEvents(t, l.admin, map[string]any{"category": "AUTHENTICATION"}, len(want))
	if got := actions(rows); !slices.Equal(got, want) {
		t.Fatalf("rows moved by the peer %v, want %v", got, want)
	}
}

// TestLockoutSchedule follows NIST SP 800-63B 5.2.2: wrong codes count
// across locks; each lock lasts twice the one before up to the cap; after
// MaxConsecutiveFailures only an admin unlocks; a right code or an unlock
// starts over.
func TestLockoutSchedule(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, func(o *app.Options) {
		o.Challenge = challenge.Config{MaxFailedAttempts: 3, LockDuration: 15 * time.Minute,
			MaxLockDuration: 45 * time.Minute, MaxConsecutiveFailures: 14, MaxCodesPerWindow: 100}
	})
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "nist", uniquePhone(), uniqueEmail(), "WEB")
	// Locks 1 to 4: 15m, 30m, 45m (the cap), 45m; each after 3 wrong codes.
	for i, want := range []time.Duration{15 * time.Minute, 30 * time.Minute, 45 * time.Minute, 45 * time.Minute} {
		v := l.wrongUntilLocked(t, 3)
		until := parseTime(t, "lockedUntil", str(v.LockedUntil))
		if d := until.Sub(s.Clock.Now()); d <= want-time.Minute || d > want {
			t.Errorf("lock %d lasts %v, want %v", i+1, d, want)
		}
		if v.LockedIndefinitely == nil || *v.LockedIndefinitely {
			t.Errorf("lock %d: lockedIndefinitely %v, want false", i+1, v.LockedIndefinitely)
		}
		s.Clock.Advance(want)
	}
	// Two more wrong codes reach 14: only an admin unlocks now.
	v := l.wrongUntilLocked(t, 2)
	if v.LockedUntil != nil || v.LockedIndefinitely == nil || !*v.LockedIndefinitely {
		t.Fatalf("at MaxConsecutiveFailures: lockedUntil %v indefinitely %v, want null and true", str(v.LockedUntil), v.LockedIndefinitely)
	}
	s.Clock.Advance(365 * 24 * time.Hour)
	p := mutate[lockIssuePayload](t, l.user, mIssueLock, "issueChallenge", map[string]any{"app": "WEB"})
	wantUserError(t, "issue a year later", p.UserErrors, "LOCKED")
	if p.LockedUntil != nil || p.LockedIndefinitely == nil || !*p.LockedIndefinitely {
		t.Errorf("issue while locked for good: lockedUntil %v indefinitely %v", str(p.LockedUntil), p.LockedIndefinitely)
	}
	if web, indefinite := l.lockState(t); web != nil || !indefinite {
		t.Errorf("user lock state: lockedUntil %v lockedIndefinitely %v, want null and true", str(web), indefinite)
	}
	rows := waitEvents(t, l.admin, map[string]any{"actions": []string{"FAILED_ATTEMPTS_LIMIT_REACHED"}}, 5)
	if len(rows) != 5 {
		t.Fatalf("lock rows %d, want 5", len(rows))
	}
	wantDetails(t, rows[0], map[string]any{"failedAttempts": 14, "lockedUntil": nil, "lockedIndefinitely": true})

	// The admin unlocks: the lock and the count are gone, and it is recorded.
	l.admin.Must(t, mUnlock, map[string]any{"input": map[string]any{"userId": "nist", "app": "WEB"}}, nil)
	unlocked := waitEvents(t, l.admin, map[string]any{"actions": []string{"USER_TWO_FACTOR_UNLOCKED"}}, 1)
	if len(unlocked) != 1 {
		t.Fatalf("unlock rows %d, want 1", len(unlocked))
	}
	wantDetails(t, unlocked[0], map[string]any{
		"before": map[string]any{"lockedIndefinitely": true, "consecutiveFailures": 14},
		"after":  map[string]any{"lockedIndefinitely": false, "consecutiveFailures": 0},
	})
	if web, indefinite := l.lockState(t); web != nil || indefinite {
		t.Errorf("after unlock: lockedUntil %v lockedIndefinitely %v", str(web), indefinite)
	}
	// A fresh start: the next lock is the first again (15m).
	v = l.wrongUntilLocked(t, 3)
	if d := parseTime(t, "lockedUntil", str(v.LockedUntil)).Sub(s.Clock.Now()); d > 15*time.Minute || d <= 14*time.Minute {
		t.Errorf("first lock after unlock lasts %v, want 15m", d)
	}
	s.Clock.Advance(15 * time.Minute)

	// A right code resets the count: two wrong, right, then three wrong
	// lock for 15m again (not 30m).
	ch := l.mustIssue(t, "")
	if ch.AttemptsRemaining != 3 {
		t.Errorf("after a lock ends: %d attempts, want 3", ch.AttemptsRemaining)
	}
	wantStatus(t, "wrong", l.verify(t, ch.ID, wrong(l.code(t, ch))), "REJECTED", 2)
	wantStatus(t, "right", l.verify(t, ch.ID, l.code(t, ch)), "APPROVED", 2)
	v = l.wrongUntilLocked(t, 3)
	if d := parseTime(t, "lockedUntil", str(v.LockedUntil)).Sub(s.Clock.Now()); d > 15*time.Minute || d <= 14*time.Minute {
		t.Errorf("lock after a right code lasts %v, want 15m", d)
	}
	if n := len(waitEvents(t, l.admin, map[string]any{"actions": []string{"FAILED_ATTEMPTS_LIMIT_REACHED"}}, 7)); n != 7 {
		t.Errorf("lock rows %d, want 7", n)
	}
}

// lockIssuePayload is issuePayload with lockedIndefinitely.
type lockIssuePayload struct {
	issuePayload
	LockedIndefinitely *bool `json:"lockedIndefinitely"`
}

const mIssueLock = `mutation($input: IssueChallengeInput!) { issueChallenge(input: $input) { challenge { id } lockedUntil lockedIndefinitely ` + contactFields + ` userErrors { field code message } } }`

// lockVerifyPayload is verifyPayload with lockedIndefinitely.
type lockVerifyPayload struct {
	verifyPayload
	LockedIndefinitely *bool `json:"lockedIndefinitely"`
}

const mVerifyLock = `mutation($input: VerifyChallengeInput!) { verifyChallenge(input: $input) { status attemptsRemaining assertion lockedUntil lockedIndefinitely ` + contactFields + ` userErrors { field code message } } }`

// wrongUntilLocked issues a code and sends n wrong codes; the last must
// lock.
func (l *login) wrongUntilLocked(t *testing.T, n int) lockVerifyPayload {
	t.Helper()
	ch := l.mustIssue(t, "")
	if ch.AttemptsRemaining != n {
		t.Fatalf("before the next lock: %d attempts, want %d", ch.AttemptsRemaining, n)
	}
	var v lockVerifyPayload
	for i := range n {
		v = mutate[lockVerifyPayload](t, l.user, mVerifyLock, "verifyChallenge",
			map[string]any{"challengeId": ch.ID, "code": wrong(l.code(t, ch))})
		want, left := "REJECTED", n-1-i
		if i == n-1 {
			want = "LOCKED"
		}
		wantStatus(t, fmt.Sprintf("wrong code %d of %d", i+1, n), v.verifyPayload, want, left)
	}
	return v
}

// lockState reads the user's WEB lock as the admin.
func (l *login) lockState(t *testing.T) (until *string, indefinitely bool) {
	t.Helper()
	var out struct {
		User *struct {
			TwoFactor struct {
				LockedUntil struct {
					Web *string `json:"web"`
				} `json:"lockedUntil"`
				LockedIndefinitely struct {
					Web bool `json:"web"`
				} `json:"lockedIndefinitely"`
			} `json:"twoFactor"`
		} `json:"user"`
	}
	l.admin.Must(t, `query($id: ID!) { user(id: $id) { twoFactor { lockedUntil { web } lockedIndefinitely { web manager } } } }`,
		map[string]any{"id": l.id}, &out)
	if out.User == nil {
		t.Fatalf("user %s not found", l.id)
	}
	return out.User.TwoFactor.LockedUntil.Web, out.User.TwoFactor.LockedIndefinitely.Web
}

// outboxSweeping is a mover whose sweeper looks at co's outboxes only,
// often: tests share one Redis.
func outboxSweeping(co string) outbox.Options {
	return outbox.Options{Match: challenge.OutboxMatch(co), SweepEvery: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}
}
