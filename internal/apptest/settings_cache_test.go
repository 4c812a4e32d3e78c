package apptest_test

import (
	"testing"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/testenv"
)

const (
	qSettingsMethod = `{ twoFactorSettings { general { deliveryMethod contactPerson { name } } } }`
	mSetMethod      = `mutation($m: DeliveryMethod!) { updateGeneralSettings(input: {deliveryMethod: $m}) { userErrors { code } } }`
	mSetContact     = `mutation($n: String!) { updateGeneralSettings(input: {contactPerson: {name: $n, email: "help@example.com"}}) { userErrors { code } } }`
	// pollFor bounds how long a notice may take to arrive; no assertion
	// is timed by it, it only ends a test that would otherwise hang.
	pollFor = 20 * time.Second
)

func method(t testing.TB, c *apptest.Client) string {
	t.Helper()
	var out struct {
		TwoFactorSettings struct {
			General struct {
				DeliveryMethod string `json:"deliveryMethod"`
			} `json:"general"`
		} `json:"twoFactorSettings"`
	}
	c.Must(t, qSettingsMethod, nil, &out)
	return out.TwoFactorSettings.General.DeliveryMethod
}

func setMethod(t testing.TB, c *apptest.Client, m string) {
	t.Helper()
	var out struct {
		UpdateGeneralSettings struct {
			UserErrors []any `json:"userErrors"`
		} `json:"updateGeneralSettings"`
	}
	c.Must(t, mSetMethod, map[string]any{"m": m}, &out)
	if len(out.UpdateGeneralSettings.UserErrors) > 0 {
		t.Fatalf("set %s: %v", m, out.UpdateGeneralSettings.UserErrors)
	}
}

// pollMethod reads c's settings until they show want.
func pollMethod(t testing.TB, c *apptest.Client, want string) {
	t.Helper()
	deadline := time.Now().Add(pollFor)
	for method(t, c) != want {
		if time.Now().After(deadline) {
			t.Fatalf("settings never showed %s", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSettingsCacheAcrossInstances: B serves settings from memory (no
// SQL), A reads its own change at once, and once B has received the
// change's notice its very next read shows the change, and so do all
// after it.
func TestSettingsCacheAcrossInstances(t *testing.T) {
	a := apptest.Start(t)
	sql := testenv.Statements(t, a.Backends.DB)
	b := apptest.StartPeer(t, a)
	co := testenv.Company(t)
	adminA, adminB := a.Admin(t, co), b.Admin(t, co)
	for _, c := range []*apptest.Client{adminA, adminB} {
		if got := method(t, c); got != "SMS_WITH_EMAIL_BACKUP" {
			t.Fatalf("default method %s", got)
		}
	}
	before := sql.Load()
	for range 5 {
		method(t, adminB)
		method(t, adminA)
	}
	if n := sql.Load() - before; n != 0 {
		t.Fatalf("10 cached reads ran %d SQL statements, want 0", n)
	}

	// The test's own watch on B runs after the cache's (same notice, in
	// the order registered): once it has the notice, B's cache has it too.
	notices := make(chan audit.Notice, 16)
	stop := b.Feed.Watch(co, func(n audit.Notice) {
		if n.SettingsChanged {
			notices <- n
		}
	})
	defer stop()
	for _, m := range []string{"EMAIL_ONLY", "SMS_WITH_EMAIL_BACKUP", "EMAIL_ONLY"} {
		setMethod(t, adminA, m)
		if got := method(t, adminA); got != m {
			t.Fatalf("A right after its own change: %s, want %s", got, m)
		}
		select {
		case <-notices:
		case <-time.After(pollFor):
			t.Fatalf("B never received the notice of %s", m)
		}
		for i := range 5 {
			if got := method(t, adminB); got != m {
				t.Fatalf("B read %d after the notice: %s, want %s", i, got, m)
			}
		}
	}
	before = sql.Load()
	method(t, adminB)
	if n := sql.Load() - before; n != 0 {
		t.Fatalf("a read after the reload ran %d SQL statements, want 0", n)
	}
}

// TestSettingsCacheWithRedisAway: while B's Redis is cut, B cannot hear
// of A's changes, so it reads from the database and is still right; once
// Redis is back, notices keep it right again.
func TestSettingsCacheWithRedisAway(t *testing.T) {
	a := apptest.Start(t)
	var proxy *apptest.Proxy
	b := apptest.StartPeer(t, a, apptest.RedisThroughProxy(t, &proxy))
	co := testenv.Company(t)
	adminA, adminB := a.Admin(t, co), b.Admin(t, co)
	method(t, adminB) // cached on B

	proxy.Cut()
	setMethod(t, adminA, "EMAIL_ONLY")
	pollMethod(t, adminB, "EMAIL_ONLY")
	setMethod(t, adminA, "SMS_WITH_EMAIL_BACKUP")
	pollMethod(t, adminB, "SMS_WITH_EMAIL_BACKUP")

	proxy.Restore()
	for _, m := range []string{"EMAIL_ONLY", "SMS_WITH_EMAIL_BACKUP"} {
		setMethod(t, adminA, m)
		pollMethod(t, adminB, m)
	}
}

// TestLockedAnswerRunsNoSQL: a verify answered LOCKED carries the contact
// person from the settings cache, and the contact changed on another
// instance reaches it.
func TestLockedAnswerRunsNoSQL(t *testing.T) {
	a := apptest.Start(t, func(o *app.Options) {
		o.Challenge = challenge.Config{MaxFailedAttempts: 1}
		o.AuditOutbox.Manual = true // its moves to the log are SQL too, but not the answer's
	})
	sql := testenv.Statements(t, a.Backends.DB)
	co := testenv.Company(t)
	admin := a.Admin(t, co)
	admin.Must(t, mSetContact, map[string]any{"n": "Help Desk"}, nil)
	admin.Must(t, `mutation { createUser(input: {id: "u1", phone: "+37120000001"}) { userErrors { code } } }`, nil, nil)
	admin.Must(t, `mutation { setUserTwoFactor(input: {userId: "u1", app: WEB, enabled: true}) { userErrors { code } } }`, nil, nil)
	user := a.User(t, co, "u1")
	var issued struct {
		IssueChallenge struct {
			Challenge struct {
				ID string `json:"id"`
			} `json:"challenge"`
		} `json:"issueChallenge"`
	}
	user.Must(t, `mutation { issueChallenge(input: {app: WEB}) { challenge { id } } }`, nil, &issued)
	id := issued.IssueChallenge.Challenge.ID
	wrong := "000000"
	if a.Outbox.LastCode(t, "+37120000001") == wrong {
		wrong = "111111"
	}
	verify := func() (status, contact string) {
		t.Helper()
		var out struct {
			VerifyChallenge struct {
				Status        string `json:"status"`
				ContactPerson *struct {
					Name string `json:"name"`
				} `json:"contactPerson"`
			} `json:"verifyChallenge"`
		}
		user.Must(t, `mutation($id: ID!, $code: String!) { verifyChallenge(input: {challengeId: $id, code: $code}) { status contactPerson { name } } }`,
			map[string]any{"id": id, "code": wrong}, &out)
		if cp := out.VerifyChallenge.ContactPerson; cp != nil {
			contact = cp.Name
		}
		return out.VerifyChallenge.Status, contact
	}
	if status, _ := verify(); status != "LOCKED" { // one wrong code locks
		t.Fatalf("the wrong code: %s, want LOCKED", status)
	}
	before := sql.Load()
	for i := range 5 {
		status, contact := verify()
		if status != "LOCKED" || contact != "Help Desk" {
			t.Fatalf("verify %d: %s with contact %q, want LOCKED with Help Desk", i, status, contact)
		}
	}
	if n := sql.Load() - before; n != 0 {
		t.Fatalf("5 LOCKED answers ran %d SQL statements, want 0", n)
	}
	peer := apptest.StartPeer(t, a)
	peer.Admin(t, co).Must(t, mSetContact, map[string]any{"n": "Night Desk"}, nil)
	deadline := time.Now().Add(pollFor)
	for _, contact := verify(); contact != "Night Desk"; _, contact = verify() {
		if time.Now().After(deadline) {
			t.Fatalf("the contact changed on the peer never reached this instance (still %q)", contact)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
