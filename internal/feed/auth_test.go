package feed_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/testenv"
)

// A bad or missing token in connection_init closes the connection with
// 4403, before anything is subscribed.
func TestBadTokenCloses4403(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	other, err := auth.NewTokens([]byte("another-secret-another-secret-0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	sign := func(tokens *auth.Tokens, ttl time.Duration) string {
		tok, err := tokens.Sign(admin(co), ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, tc := range []struct {
		name    string
		payload map[string]any
	}{
		{"garbage", map[string]any{"Authorization": "Bearer not-a-token"}},
		{"other secret", map[string]any{"Authorization": "Bearer " + sign(other, time.Hour)}},
		{"expired an hour ago", map[string]any{"Authorization": "Bearer " + sign(s.Tokens, -time.Hour)}},
		{"no scheme", map[string]any{"Authorization": "Basic " + sign(s.Tokens, time.Hour)}},
		{"empty payload", nil},
		{"no Authorization", map[string]any{"token": sign(s.Tokens, time.Hour)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, proto := range []string{transportWS, legacyWS} {
				c := mustDial(t, s, wsOptions{proto: proto})
				c.send("connection_init", "", tc.payload)
				if code := c.closeStatus(); code != 4403 {
					t.Errorf("%s: closed with %d, want 4403", proto, code)
				}
			}
		})
	}
}

// No connection_init within the init timeout closes the connection with
// 4408.
func TestMissingInitCloses4408(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, func(o *app.Options) { o.Websocket.InitTimeout = 300 * time.Millisecond })
	for _, proto := range []string{transportWS, legacyWS} {
		c := mustDial(t, s, wsOptions{proto: proto})
		if code := c.closeStatus(); code != 4408 {
			t.Errorf("%s: closed with %d, want 4408", proto, code)
		}
	}
}

// Only admins may subscribe, to their own company's log.
func TestSubscriptionRefusals(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	createUsers(t, s, co, "u", 2)
	_, cursors := logIDs(t, s, co, nil)
	other := testenv.Company(t)
	last, err := s.App.Audit.LastID(context.Background(), co)
	if err != nil {
		t.Fatal(err)
	}
	userCursor := ""
	{
		var out struct {
			Users struct {
				Edges []struct {
					Cursor string `json:"cursor"`
				} `json:"edges"`
			} `json:"users"`
		}
		s.Admin(t, co).Must(t, `query { users(first: 1) { edges { cursor } } }`, nil, &out)
		userCursor = out.Users.Edges[0].Cursor
	}
	for _, tc := range []struct {
		name   string
		token  string
		after  string
		filter map[string]any
		code   string
	}{
		{"user role", s.Token(t, auth.Caller{UserID: "u-0", Company: co, Role: auth.RoleUser}), cursors[0], nil, "FORBIDDEN"},
		{"service role", s.Token(t, auth.Caller{UserID: "svc", Company: co, Role: auth.RoleService}), cursors[0], nil, "FORBIDDEN"},
		{"malformed after", s.Token(t, admin(co)), "not-a-cursor", nil, "BAD_CURSOR"},
		{"another kind of cursor", s.Token(t, admin(co)), userCursor, nil, "BAD_CURSOR"},
		{"cursor of id 0", s.Token(t, admin(co)), s.App.Audit.Cursor(audit.Event{ID: 0, Company: co}), nil, "BAD_CURSOR"},
		// Issue 8, finding 10: forged and foreign cursors are refused.
		{"forged cursor", s.Token(t, admin(co)), base64.RawURLEncoding.EncodeToString([]byte("audit:1")), nil, "BAD_CURSOR"},
		{"another company's cursor", s.Token(t, admin(co)), s.App.Audit.Cursor(audit.Event{ID: last, Company: other}), nil, "BAD_CURSOR"},
		{"an event id", s.Token(t, admin(co)), s.App.Audit.PublicID(audit.Event{ID: last, Company: co}), nil, "BAD_CURSOR"},
		{"bad filter", s.Token(t, admin(co)), cursors[0], map[string]any{"app": "DESKTOP"}, "GRAPHQL_VALIDATION_FAILED"},
		// Accepted at connection_init (the verifier allows for clock skew),
		// but already expired: nothing may be replayed to it.
		{"expired token", "", cursors[0], nil, "TOKEN_EXPIRED"}, // "": expiredToken
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, proto := range []string{transportWS, legacyWS} {
				token := tc.token
				if token == "" {
					token = expiredToken(t, s, co)
				}
				c := mustDial(t, s, wsOptions{proto: proto})
				c.init(map[string]any{"Authorization": "Bearer " + token})
				c.subscribe("1", tc.filter, tc.after)
				if got := c.failure("1", tc.code); len(got) > 0 {
					t.Errorf("%s: %d events before the error", proto, len(got))
				}
			}
		})
	}
}

// The upgrade's Authorization header is accepted in place of the token in
// connection_init; a bad one there is refused before the upgrade.
func TestTokenInUpgradeHeader(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	header := http.Header{"Authorization": {"Bearer " + s.Token(t, admin(co))}}
	for _, proto := range []string{transportWS, legacyWS} {
		c := mustDial(t, s, wsOptions{proto: proto, header: header})
		c.init(nil)
		c.primed(s, co, "1")
	}
	_, resp, err := dial(t, s.URL, wsOptions{header: http.Header{"Authorization": {"Bearer nope"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad header token: err %v, response %v; want 401", err, resp)
	}
}

// When the token expires, its subscriptions end with TOKEN_EXPIRED.
func TestTokenExpiryEndsTheStream(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	for _, proto := range []string{transportWS, legacyWS} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			co := testenv.Company(t)
			// Two seconds at most: expiry is in whole seconds.
			tok, err := s.Tokens.Sign(admin(co), 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c := mustDial(t, s, wsOptions{proto: proto})
			c.init(map[string]any{"Authorization": "Bearer " + tok})
			c.primed(s, co, "1")
			c.failure("1", "TOKEN_EXPIRED")
			// The protocol's message for an operation that failed, which
			// the npm client hands to the sink's error callback.
			if c.ended != "error" {
				t.Fatalf("stream ended with a %s message, want error", c.ended)
			}
		})
	}
}

// Browser origins are checked on the upgrade.
func TestOrigins(t *testing.T) {
	t.Parallel()
	allowed := "https://app.example.com"
	for _, tc := range []struct {
		name     string
		embedded bool
		origin   string // "self" for the server's own origin
		ok       bool
	}{
		{"no origin (not a browser)", false, "", true},
		{"allowed", false, allowed, true},
		{"allowed, other case", false, "HTTPS://APP.example.com", true},
		{"not allowed", false, "https://evil.example.com", false},
		{"allowed host, other scheme", false, "http://app.example.com", false},
		{"same origin", false, "self", true},
		{"localhost", false, "http://localhost:3000", false},
		{"localhost, embedded", true, "http://localhost:3000", true},
		{"127.0.0.1, embedded", true, "http://127.0.0.1:5173", true},
		{"not allowed, embedded", true, "https://evil.example.com", false},
		{"malformed", false, "::", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := apptest.Start(t, func(o *app.Options) {
				o.AllowedOrigins = []string{allowed}
				o.Embedded = tc.embedded
			})
			header := http.Header{}
			switch tc.origin {
			case "":
			case "self":
				header.Set("Origin", s.URL)
			default:
				header.Set("Origin", tc.origin)
			}
			c, resp, err := dial(t, s.URL, wsOptions{header: header})
			if !tc.ok {
				if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("origin %q: err %v, response %v; want 403", tc.origin, err, resp)
				}
				return
			}
			if err != nil {
				t.Fatalf("origin %q refused: %v", tc.origin, err)
			}
			co := testenv.Company(t)
			c.init(map[string]any{"Authorization": "Bearer " + s.Token(t, admin(co))})
			c.primed(s, co, "1")
		})
	}
}

// An admin sees their own company's events and never another's, even when
// the other company's events are written through the same instance while
// the stream runs, and when the cursor points into the other company.
func TestAnotherCompanysEventsNeverAppear(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	mine, theirs := testenv.Company(t), testenv.Company(t)
	createUsers(t, s, theirs, "theirs", 3)
	_, theirCursors := logIDs(t, s, theirs, nil)

	c := connect(t, s, admin(mine), wsOptions{})
	c.primed(s, mine, "mine")
	// The other company's cursor is refused before anything is replayed
	// (issue 8, finding 10: a cursor is bound to its company).
	c.subscribe("from theirs", nil, theirCursors[0])
	if got := c.failure("from theirs", "BAD_CURSOR"); len(got) > 0 {
		t.Fatalf("%d events before the error", len(got))
	}
	watcher := connect(t, s, admin(theirs), wsOptions{})
	watcher.primed(s, theirs, "theirs")

	createUsers(t, s, theirs, "more", 3)
	watcher.edges("theirs", 3) // delivered on this instance by now
	createUsers(t, s, mine, "mine", 1)

	want, _ := logIDs(t, s, mine, nil)
	if got := ids(c.edges("mine", 1)); !slices.Equal(got, want[len(want)-1:]) {
		t.Fatalf("live stream got %v, want only %v", got, want[len(want)-1:])
	}
}

// The websocket also carries queries and mutations; once the token it was
// opened with has expired, it runs none of them.
func TestExpiredWebsocketRunsNothing(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	for _, tc := range []struct {
		name  string
		token string
		code  string // "" for success
	}{
		{"valid token", s.Token(t, admin(co)), ""},
		{"expired token", "", "TOKEN_EXPIRED"}, // "": expiredToken
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, proto := range []string{transportWS, legacyWS} {
				token := tc.token
				if token == "" {
					token = expiredToken(t, s, co)
				}
				c := mustDial(t, s, wsOptions{proto: proto})
				c.init(map[string]any{"Authorization": "Bearer " + token})
				user := fmt.Sprintf("ws-%s-%s", strings.ReplaceAll(tc.name, " ", "-"), proto)
				typ := "subscribe"
				if proto == legacyWS {
					typ = "start"
				}
				for i, op := range []map[string]any{
					{"query": `{ twoFactorSettings { defaults { web } } }`},
					{"query": mCreateUser, "variables": map[string]any{"input": map[string]any{"id": user}}},
				} {
					id := strconv.Itoa(i)
					c.send(typ, id, op)
					m := c.nextFor(id)
					var r result
					if m.Type != "next" && m.Type != "data" || json.Unmarshal(m.Payload, &r) != nil {
						t.Fatalf("%s %s: got %s %s", proto, op["query"], m.Type, m.Payload)
					}
					if got := codes(r.Errors); tc.code == "" && len(got) > 0 || tc.code != "" && !slices.Equal(got, []string{tc.code}) {
						t.Fatalf("%s %s: errors %+v, want %q", proto, op["query"], r.Errors, tc.code)
					}
				}
				_, err := s.App.Users.Get(context.Background(), admin(co), user)
				if created := err == nil; created != (tc.code == "") {
					t.Fatalf("%s: user created: %v (%v)", proto, created, err)
				}
			}
		})
	}
}

// expiredToken is an admin token of co that expired 5 s ago: within the
// verifier's 30 s leeway, so accepted at connection_init. Sign it when
// the connection follows at once: parallel subtests of a loaded -race
// run may start long after their table is built.
func expiredToken(t *testing.T, s *apptest.Server, co string) string {
	t.Helper()
	tok, err := s.Tokens.Sign(admin(co), -5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
