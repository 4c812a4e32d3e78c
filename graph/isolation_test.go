package graph_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/testenv"
)

// companyB is a company full of data that other companies must not reach.
type companyB struct {
	id       string
	admin    *apptest.Client
	cursors  []string // its audit cursors, newest first
	userCur  string   // its users cursor at b-user
	eventIDs []string
	markers  []string // strings only B's data contains
}

func seedB(t *testing.T, s *apptest.Server) companyB {
	t.Helper()
	b := companyB{id: testenv.Company(t)}
	b.admin = adminNamed(t, s, b.id, "b-admin", "B Secret Admin")
	b.markers = []string{b.id, "secret-b", "B Secret", "B Shared", "b-admin", "+37129999999"}
	updateGeneral(t, b.admin, map[string]any{
		"deliveryMethod": "EMAIL_ONLY",
		"contactPerson":  map[string]any{"name": "B Secret Contact", "email": "secret-b-contact@example.com", "phone": "+37129999999"},
	})
	updateDefaults(t, b.admin, map[string]any{"web": true})
	createUser(t, b.admin, map[string]any{"id": "b-user", "email": "secret-b@example.com", "displayName": "B Secret User"})
	createUser(t, b.admin, map[string]any{"id": "shared", "displayName": "B Shared"})
	setTwoFactor(t, b.admin, "b-user", "MANAGER", true)
	page := auditPage(t, b.admin, map[string]any{"first": 100})
	for _, e := range page.Edges {
		b.cursors = append(b.cursors, e.Cursor)
		b.eventIDs = append(b.eventIDs, e.Node.ID)
	}
	for _, e := range listUsers(t, b.admin, nil).Edges {
		if e.Node.ID == "b-user" {
			b.userCur = e.Cursor
		}
	}
	if len(b.cursors) != 5 || b.userCur == "" {
		t.Fatalf("B has %d audit rows, want 5", len(b.cursors))
	}
	return b
}

// snapshot is everything B's admin can see.
func (b companyB) snapshot(t *testing.T) string {
	t.Helper()
	var out bytes.Buffer
	for _, q := range []struct {
		query string
		vars  map[string]any
	}{
		{qSettings, nil},
		{qUsers, map[string]any{"first": 100}},
		{qUser, map[string]any{"id": "b-user"}},
		{qUser, map[string]any{"id": "shared"}},
		{qAudit, map[string]any{"first": 100}},
	} {
		r := b.admin.Do(t, q.query, q.vars)
		if r.Status != 200 || len(r.Errors) > 0 {
			t.Fatalf("B snapshot: status %d errors %+v", r.Status, r.Errors)
		}
		out.Write(r.Data)
		out.WriteByte('\n')
	}
	return out.String()
}

// leaks fails the test if r shows any of B's data.
func (b companyB) leaks(t *testing.T, r apptest.Response) {
	t.Helper()
	text := string(r.Data)
	for _, e := range r.Errors {
		text += "\n" + e.Message
	}
	for _, m := range b.markers {
		if strings.Contains(text, m) {
			t.Errorf("response shows B's data %q: %s %+v", m, r.Data, r.Errors)
		}
	}
	var audit struct {
		AuditLog *eventConn `json:"auditLog"`
	}
	if json.Unmarshal(r.Data, &audit) == nil && audit.AuditLog != nil {
		for _, e := range audit.AuditLog.Edges {
			if slices.Contains(b.eventIDs, e.Node.ID) || slices.Contains(b.cursors, e.Cursor) {
				t.Errorf("audit log shows B's event %s", e.Node.ID)
			}
		}
	}
}

// TestTenantIsolation runs every query and mutation, as every role of a
// company A, against company B's ids and cursors. Each is denied or shows
// only A's data, and B is unchanged afterwards.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	b := seedB(t, s)
	baseline := b.snapshot(t)

	type cell struct {
		role string // admin, service or user
		a    string // company A
		r    apptest.Response
	}
	// expect checks one response beyond "shows nothing of B".
	type op struct {
		name   string
		query  string
		vars   map[string]any
		expect func(t *testing.T, c cell)
	}
	only := func(role string, yes func(*testing.T, cell), no string) func(*testing.T, cell) {
		return func(t *testing.T, c cell) {
			t.Helper()
			if c.role == role || (role == "admin+service" && c.role != "user") {
				yes(t, c)
				return
			}
			wantCode(t, c.r, no)
		}
	}
	succeeds := func(check func(*testing.T, cell)) func(*testing.T, cell) {
		return func(t *testing.T, c cell) {
			t.Helper()
			if c.r.Status != 200 || len(c.r.Errors) > 0 {
				t.Fatalf("status %d errors %+v", c.r.Status, c.r.Errors)
			}
			if check != nil {
				check(t, c)
			}
		}
	}
	freshSettings := succeeds(func(t *testing.T, c cell) {
		var out map[string]json.RawMessage
		c.r.Decode(t, &out)
		for _, raw := range out {
			var st struct {
				settingsT
				Settings *settingsT `json:"settings"`
			}
			if err := json.Unmarshal(raw, &st); err != nil {
				t.Fatal(err)
			}
			got := st.settingsT
			if st.Settings != nil {
				got = *st.Settings
			}
			if got.General.ContactPerson != nil || got.Defaults.Web {
				t.Errorf("A sees settings it never set: %s", raw)
			}
		}
	})
	onlyA := func(wantUsers []string) func(*testing.T, cell) {
		return succeeds(func(t *testing.T, c cell) {
			var out struct {
				Users    *userConn  `json:"users"`
				AuditLog *eventConn `json:"auditLog"`
			}
			c.r.Decode(t, &out)
			if out.Users != nil && !slices.Equal(out.Users.ids(), wantUsers) {
				t.Errorf("users = %v, want %v", out.Users.ids(), wantUsers)
			}
			if out.AuditLog != nil {
				for _, e := range out.AuditLog.nodes() {
					if e.Actor.ID != "a-admin" {
						t.Errorf("audit event %s by %s is not A's", e.ID, e.Actor.ID)
					}
				}
			}
		})
	}
	notFound := func(t *testing.T, c cell) { t.Helper(); wantCode(t, c.r, "NOT_FOUND") }
	// A cursor is bound to its company (issue 8, finding 10).
	badCursor := func(t *testing.T, c cell) { t.Helper(); wantCode(t, c.r, "BAD_CURSOR") }

	ops := []op{
		{"twoFactorSettings", qSettings, nil, only("admin", freshSettings, "FORBIDDEN")},
		{"user(B's user)", qUser, map[string]any{"id": "b-user"}, notFound},
		{"user(B's other user)", qUser, map[string]any{"id": "shared"}, notFound},
		{"users", qUsers, map[string]any{"first": 100}, only("admin+service", onlyA([]string{"a-only"}), "FORBIDDEN")},
		{"users(query)", qUsers, map[string]any{"query": "secret"}, only("admin+service", onlyA(nil), "FORBIDDEN")},
		{"users(after B's id)", qUsers, map[string]any{"after": b.userCur}, only("admin+service", badCursor, "FORBIDDEN")},
		{"me", qMe, nil, succeeds(func(t *testing.T, c cell) {
			if string(c.r.Data) != `{"me":null}` {
				t.Errorf("me = %s, want null", c.r.Data)
			}
		})},
		{"auditLog", qAudit, nil, only("admin", onlyA(nil), "FORBIDDEN")},
		{"auditLog(after B's cursor)", qAudit, map[string]any{"after": b.cursors[0]}, only("admin", badCursor, "FORBIDDEN")},
		{"auditLog(before B's cursor)", qAudit, map[string]any{"before": b.cursors[len(b.cursors)-1], "last": 100}, only("admin", badCursor, "FORBIDDEN")},
		{"auditLog(filter B's user)", qAudit, map[string]any{"filter": map[string]any{"userId": "b-user"}}, only("admin", onlyA(nil), "FORBIDDEN")},
		{"auditLog(filter B's admin)", qAudit, map[string]any{"filter": map[string]any{"userId": "b-admin"}}, only("admin", onlyA(nil), "FORBIDDEN")},
		{"updateGeneralSettings", mUpdateGeneral, map[string]any{"input": map[string]any{"deliveryMethod": "SMS_WITH_EMAIL_BACKUP", "contactPerson": nil}},
			only("admin", freshSettings, "FORBIDDEN")},
		{"updateDefaultSettings", mUpdateDefaults, map[string]any{"input": map[string]any{"web": false, "manager": true}},
			only("admin", freshSettings, "FORBIDDEN")},
		{"createUser(B's id)", mCreateUser, map[string]any{"input": map[string]any{"id": "b-user", "email": "a@example.com"}},
			only("admin+service", succeeds(func(t *testing.T, c cell) {
				var out struct{ CreateUser userPayload }
				c.r.Decode(t, &out)
				if u := out.CreateUser.User; u == nil || u.ID != "b-user" || str(u.Email) != "a@example.com" || u.TwoFactor.Web || u.TwoFactor.Manager {
					t.Errorf("A's new user = %+v (errors %+v), want A's own b-user on A's defaults", u, out.CreateUser.UserErrors)
				}
			}), "FORBIDDEN")},
		{"setUserTwoFactor(B's user)", mSetUserTwoFactor, map[string]any{"input": map[string]any{"userId": "b-user", "app": "MANAGER", "enabled": false}},
			only("admin", succeeds(func(t *testing.T, c cell) {
				var out struct{ SetUserTwoFactor userPayload }
				c.r.Decode(t, &out)
				p := out.SetUserTwoFactor
				if p.User != nil || len(p.UserErrors) != 1 || p.UserErrors[0].Code != "NOT_FOUND" {
					t.Errorf("payload = %+v, want a NOT_FOUND user error", p)
				}
			}), "FORBIDDEN")},
	}
	roles := []struct {
		name   string
		client func(a string) *apptest.Client
	}{
		{"admin", func(a string) *apptest.Client {
			return s.As(t, auth.Caller{UserID: "a-admin", Company: a, Role: auth.RoleAdmin, Name: "A Admin"})
		}},
		{"service", func(a string) *apptest.Client { return s.Service(t, a) }},
		// A's user carries the id of B's user.
		{"user", func(a string) *apptest.Client { return s.User(t, a, "b-user") }},
	}
	for _, o := range ops {
		for _, role := range roles {
			t.Run(o.name+"/"+role.name, func(t *testing.T) {
				a := testenv.Company(t)
				aAdmin := s.As(t, auth.Caller{UserID: "a-admin", Company: a, Role: auth.RoleAdmin})
				createUser(t, aAdmin, map[string]any{"id": "a-only"})

				r := role.client(a).Do(t, o.query, o.vars)
				b.leaks(t, r)
				o.expect(t, cell{role: role.name, a: a, r: r})
				if got := b.snapshot(t); got != baseline {
					t.Fatalf("B changed:\nbefore %s\nafter  %s", baseline, got)
				}
			})
		}
	}
}

// TestIsolationSameUserID: user ids are unique per company only, so A's
// user with the id of B's is a different person.
func TestIsolationSameUserID(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	b := seedB(t, s)
	baseline := b.snapshot(t)
	a := testenv.Company(t)
	aAdmin := s.Admin(t, a)

	u := createUser(t, aAdmin, map[string]any{"id": "b-user", "displayName": "A Person"})
	if str(u.DisplayName) != "A Person" || u.TwoFactor.Web || u.TwoFactor.Manager {
		t.Errorf("A's b-user = %+v", u)
	}
	// Duplicate within A is refused; B's row never counted.
	p := mutate[userPayload](t, aAdmin, mCreateUser, "createUser", map[string]any{"id": "b-user"})
	if len(p.UserErrors) != 1 || p.UserErrors[0].Code != "ALREADY_EXISTS" {
		t.Errorf("second create in A: %+v", p)
	}
	setTwoFactor(t, aAdmin, "b-user", "WEB", true)
	setTwoFactor(t, aAdmin, "b-user", "MANAGER", true)
	setTwoFactor(t, aAdmin, "b-user", "MANAGER", false)

	var me struct {
		Me *userT `json:"me"`
	}
	r := s.User(t, a, "b-user").Do(t, qMe, nil)
	b.leaks(t, r)
	r.Decode(t, &me)
	if me.Me == nil || str(me.Me.DisplayName) != "A Person" || !me.Me.TwoFactor.Web || me.Me.TwoFactor.Manager {
		t.Errorf("me as A's b-user = %+v", me.Me)
	}
	for _, c := range []*apptest.Client{aAdmin, s.Service(t, a)} {
		r := c.Do(t, qUsers, nil)
		b.leaks(t, r)
		var out struct{ Users userConn }
		r.Decode(t, &out)
		if !slices.Equal(out.Users.ids(), []string{"b-user"}) || str(out.Users.Edges[0].Node.DisplayName) != "A Person" {
			t.Errorf("A's users = %+v", out.Users)
		}
	}
	events := allEvents(t, aAdmin, nil)
	if len(events) != 4 {
		t.Errorf("A's audit rows = %d, want 4", len(events))
	}
	for _, e := range events {
		if slices.Contains(b.eventIDs, e.ID) || e.TargetUser == nil || str(e.TargetUser.DisplayName) != "A Person" {
			t.Errorf("A's log holds %+v", e)
		}
	}
	// B sees its own b-user, untouched, and a log without A's rows.
	if got := b.snapshot(t); got != baseline {
		t.Fatalf("B changed:\nbefore %s\nafter  %s", baseline, got)
	}
	bu := getUser(t, b.admin, "b-user")
	if str(bu.DisplayName) != "B Secret User" || bu.TwoFactor.Web != true || bu.TwoFactor.Manager != true {
		t.Errorf("B's b-user = %+v", bu)
	}
}
