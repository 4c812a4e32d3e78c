package feed_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

// noPoll leaves live delivery to Redis pub/sub alone, so a test sees what
// the notices do and not what the safety-net poll would mend.
func noPoll(o *app.Options) { o.Feed.Poll = time.Hour }

const mCreateUser = `mutation($input: CreateUserInput!) { createUser(input: $input) { user { id } userErrors { code } } }`

// Two instances share one database and one Redis: a change made through B
// reaches a subscriber on A through pub/sub, and only the subscriber of
// that company.
func TestChangeThroughOneInstanceReachesSubscribersOnAnother(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t, noPoll)
	b := apptest.StartPeer(t, a)
	x, y := testenv.Company(t), testenv.Company(t)

	subX := connect(t, a, admin(x), wsOptions{})
	subX.primed(a, x, "x")
	subY := connect(t, a, admin(y), wsOptions{})
	subY.primed(a, y, "y")

	// Y's change first, through B; once A delivered it, anything of Y's
	// that leaked into X's stream would already be queued there.
	b.Admin(t, y).Must(t, mCreateUser, map[string]any{"input": map[string]any{"id": "y-user"}}, nil)
	if got, want := subY.edges("y", 1)[0].Node.ID, lastID(t, a, y); got != want {
		t.Fatalf("Y's subscriber got event %s, want %s", got, want)
	}
	for i := range 3 {
		b.Admin(t, x).Must(t, mCreateUser, map[string]any{"input": map[string]any{"id": fmt.Sprintf("x-user-%d", i)}}, nil)
		got := subX.edges("x", 1)[0]
		if want := lastID(t, a, x); got.Node.ID != want {
			t.Fatalf("change %d: X's subscriber got event %s (%s), want %s", i, got.Node.ID, got.Node.Action, want)
		}
		if got.Node.TargetUser == nil || got.Node.TargetUser.ID != fmt.Sprintf("x-user-%d", i) {
			t.Fatalf("change %d: event about %+v, want x-user-%d", i, got.Node.TargetUser, i)
		}
	}
}

// makeUsers is createUsers for goroutines: it reports instead of failing.
func makeUsers(s *apptest.Server, company, prefix string, n int) error {
	for i := range n {
		if _, err := s.App.Users.Create(context.Background(), admin(company), users.NewUser{ID: fmt.Sprintf("%s-%d", prefix, i)}); err != nil {
			return err
		}
	}
	return nil
}

// A client that drops its connection resumes from its last cursor while
// the log keeps growing: it gets every event exactly once, in order, across
// the seam between replay and live delivery.
func TestResumeAcrossTheSeam(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		proto string
	}{
		{"graphql-transport-ws", transportWS},
		{"graphql-ws", legacyWS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := apptest.Start(t)
			co := testenv.Company(t)

			c := connect(t, s, admin(co), wsOptions{proto: tc.proto})
			cursor := c.primed(s, co, "live")
			c.close()

			createUsers(t, s, co, "gap", 50)
			done := make(chan error, 1)
			go func() { done <- makeUsers(s, co, "during", 50) }()
			r := connect(t, s, admin(co), wsOptions{proto: tc.proto})
			r.subscribe("resume", nil, cursor)
			got := r.edges("resume", 100)
			if err := <-done; err != nil {
				t.Fatalf("concurrent changes: %v", err)
			}

			all, _ := logIDs(t, s, co, nil)
			want := after(all, got[0].Node.ID)
			want = append([]string{got[0].Node.ID}, want...)
			if !slices.Equal(ids(got), want) {
				t.Fatalf("resumed stream\n got %v\nwant %v (auditLog after the cursor)", ids(got), want)
			}
			if len(want) != 100 {
				t.Fatalf("auditLog has %d events after the cursor, want 100", len(want))
			}
			// Nothing else is queued: the next thing the stream carries is
			// the next change.
			createUsers(t, s, co, "sentinel", 1)
			if next := r.edges("resume", 1)[0].Node.ID; next != lastID(t, s, co) {
				t.Fatalf("after the 100 the stream carried %s, want the sentinel %s", next, lastID(t, s, co))
			}
		})
	}
}

// Filters apply the same way to replayed and to live events.
func TestFilters(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	ctx := context.Background()
	adminA := admin(co)
	adminB := auth.Caller{UserID: "other-admin-" + co, Company: co, Role: auth.RoleAdmin}
	svc := auth.Caller{UserID: "svc-" + co, Company: co, Role: auth.RoleService}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	off := false
	must(s.App.Settings.UpdateDefaults(ctx, adminA, settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Manager: off, apps.Web: off}}))
	must(s.App.Users.Create(ctx, adminA, users.NewUser{ID: "u1"}))
	must(s.App.Users.Create(ctx, adminA, users.NewUser{ID: "u2"}))
	start := cursorOf(t, s, co, lastID(t, s, co))
	set := func(c auth.Caller, user string, a users.App, on bool) func() {
		return func() { must(s.App.Users.SetTwoFactor(ctx, c, user, a, on)) }
	}

	type event struct{ action, actor, target, app string }
	cases := []struct {
		name   string
		filter map[string]any
		match  func(e event) bool
	}{
		{"none", nil, func(event) bool { return true }},
		{"actions", map[string]any{"actions": []string{"USER_CREATED", "USER_TWO_FACTOR_ENABLED"}},
			func(e event) bool { return e.action == "USER_CREATED" || e.action == "USER_TWO_FACTOR_ENABLED" }},
		{"one action", map[string]any{"actions": []string{"USER_TWO_FACTOR_ENABLED"}},
			func(e event) bool { return e.action == "USER_TWO_FACTOR_ENABLED" }},
		{"user as target", map[string]any{"userId": "u1"},
			func(e event) bool { return e.actor == "u1" || e.target == "u1" }},
		{"user as actor", map[string]any{"userId": adminA.UserID},
			func(e event) bool { return e.actor == adminA.UserID || e.target == adminA.UserID }},
		{"app", map[string]any{"app": "WEB"}, func(e event) bool { return e.app == "WEB" }},
		{"all three", map[string]any{"actions": []string{"USER_TWO_FACTOR_ENABLED"}, "userId": "u1", "app": "WEB"},
			func(e event) bool { return e.action == "USER_TWO_FACTOR_ENABLED" && e.target == "u1" && e.app == "WEB" }},
	}

	// Live: every case on one connection, resuming from start. The barrier
	// matches every filter; once each stream has it, the rest comes live.
	live := connect(t, s, adminA, wsOptions{})
	for _, tc := range cases {
		live.subscribe("live "+tc.name, tc.filter, start)
	}
	set(adminA, "u1", users.Web, true)() // the barrier
	for _, tc := range cases {
		live.edges("live "+tc.name, 1)
	}

	// Actors, targets, actions and apps vary; the last event matches every
	// filter, so an event a filter should drop cannot hide at the end.
	for _, change := range []func(){
		func() { must(s.App.Users.Create(ctx, svc, users.NewUser{ID: "u3"})) },
		func() { must(s.App.Users.Create(ctx, adminA, users.NewUser{ID: "u4"})) },
		set(adminB, "u1", users.Web, false),
		set(adminA, "u2", users.Manager, true),
		func() {
			m := settings.EmailOnly
			must(s.App.Settings.UpdateGeneral(ctx, adminB, settings.GeneralUpdate{DeliveryMethod: &m}))
		},
		set(adminA, "u1", users.Manager, true),
		set(adminB, "u2", users.Web, true),
		set(adminB, "u2", users.Manager, false),
		set(adminA, "u1", users.Web, true),
	} {
		change()
	}

	// Replay: the same cases, subscribed after everything was written.
	replay := connect(t, s, adminA, wsOptions{})
	for _, tc := range cases {
		replay.subscribe("replay "+tc.name, tc.filter, start)
	}

	all, _ := logIDs(t, s, co, nil)
	all = after(all, idOf(t, s, co, start))
	everything := replay.edges("replay none", len(all))
	if !slices.Equal(ids(everything), all) {
		t.Fatalf("unfiltered replay %v, want auditLog %v", ids(everything), all)
	}
	for _, tc := range cases {
		var want []string
		for _, e := range everything {
			ev := event{action: e.Node.Action, actor: e.Node.Actor.ID}
			if e.Node.TargetUser != nil {
				ev.target = e.Node.TargetUser.ID
			}
			if e.Node.App != nil {
				ev.app = *e.Node.App
			}
			if tc.match(ev) {
				want = append(want, e.Node.ID)
			}
		}
		if tc.filter != nil && (len(want) < 2 || len(want) == len(all)) {
			t.Fatalf("%s: the log gives the filter nothing to do (%d of %d match)", tc.name, len(want), len(all))
		}
		replayed := everything
		if tc.filter != nil {
			replayed = replay.edges("replay "+tc.name, len(want))
		}
		if got := ids(replayed); !slices.Equal(got, want) {
			t.Errorf("%s: replayed %v, want %v", tc.name, got, want)
		}
		// The live stream already had the barrier, the first match.
		if got := ids(live.edges("live "+tc.name, len(want)-1)); !slices.Equal(got, want[1:]) {
			t.Errorf("%s: live %v, want %v", tc.name, got, want[1:])
		}
	}
}

// Events whose notice never reached Redis are still delivered: to a client
// that resumes, from the table; to live subscribers, by the hub's poll.
func TestEventsWithoutNotice(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		poll time.Duration
		live bool // whether live subscribers get them (by polling)
	}{
		{"resume alone", time.Hour, false},
		{"poll", 100 * time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := apptest.Start(t, func(o *app.Options) { o.Feed.Poll = tc.poll })
			co := testenv.Company(t)
			gone := connect(t, s, admin(co), wsOptions{})
			cursor := gone.primed(s, co, "gone")
			gone.close()
			stay := connect(t, s, admin(co), wsOptions{})
			stay.primed(s, co, "stay")

			lost := writeRaw(t, s, co, 5, 10, false)
			if tc.live {
				if got := ids(stay.edges("stay", len(lost))); !slices.Equal(got, lost) {
					t.Fatalf("live subscriber got %v, want %v", got, lost)
				}
			}
			back := connect(t, s, admin(co), wsOptions{})
			back.subscribe("back", nil, cursor)
			all, _ := logIDs(t, s, co, nil)
			want := after(all, idOf(t, s, co, cursor))
			if got := ids(back.edges("back", len(want))); !slices.Equal(got, want) || !slices.Equal(want[len(want)-len(lost):], lost) {
				t.Fatalf("resumed client got %v, want %v, ending with the unannounced %v", got, want, lost)
			}
			// Announced events still flow to both after the lost ones.
			announced := writeRaw(t, s, co, 1, 10, true)
			if !tc.live {
				// Without the poll, the live subscriber catches up on the
				// lost events when the next notice makes the hub read.
				announced = append(lost, announced...)
			}
			if got := ids(stay.edges("stay", len(announced))); !slices.Equal(got, announced) {
				t.Fatalf("live subscriber got %v, want %v", got, announced)
			}
		})
	}
}
