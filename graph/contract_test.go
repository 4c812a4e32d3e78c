package graph_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/testenv"
)

// dateTimeRE is the DateTime wire format: RFC 3339, UTC, milliseconds.
var dateTimeRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

func wantDateTime(t *testing.T, what, v string) {
	t.Helper()
	if !dateTimeRE.MatchString(v) {
		t.Errorf("%s = %q, want RFC 3339 UTC with 3 fractional digits", what, v)
	}
}

// wantJSON compares a JSON value with the JSON text want, ignoring layout
// and key order.
func wantJSON(t *testing.T, what string, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: not JSON: %s", what, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad expectation %s: %v", what, want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s = %s, want %s", what, got, want)
	}
}

func TestSettingsDefaultsOnFirstUse(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	got := getSettings(t, s.Admin(t, co))
	if got.General.DeliveryMethod != "SMS_WITH_EMAIL_BACKUP" {
		t.Errorf("deliveryMethod = %s, want SMS_WITH_EMAIL_BACKUP", got.General.DeliveryMethod)
	}
	if got.General.ContactPerson != nil {
		t.Errorf("contactPerson = %+v, want null", *got.General.ContactPerson)
	}
	if got.Defaults.Web || got.Defaults.Manager {
		t.Errorf("defaults = %+v, want both off", got.Defaults)
	}
	wantDateTime(t, "updatedAt", got.UpdatedAt)
	if again := getSettings(t, s.Admin(t, co)); !reflect.DeepEqual(again, got) {
		t.Errorf("second read = %+v, want %+v", again, got)
	}
	// Reading creates the row but is not a change: nothing is audited.
	if n := len(allEvents(t, s.Admin(t, co), nil)); n != 0 {
		t.Errorf("audit rows after first use = %d, want 0", n)
	}
}

func TestUpdateGeneralSettings(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)

	got := updateGeneral(t, admin, map[string]any{"deliveryMethod": "EMAIL_ONLY"})
	if got.General.DeliveryMethod != "EMAIL_ONLY" || got.General.ContactPerson != nil {
		t.Fatalf("after setting the method: %+v", got.General)
	}

	got = updateGeneral(t, admin, map[string]any{
		"contactPerson": map[string]any{"name": "Jane Doe", "email": "jane@example.com", "phone": "+37120000000"},
	})
	cp := got.General.ContactPerson
	if cp == nil || cp.Name != "Jane Doe" || str(cp.Email) != "jane@example.com" || str(cp.Phone) != "+37120000000" {
		t.Fatalf("contact after set = %+v", cp)
	}
	if got.General.DeliveryMethod != "EMAIL_ONLY" {
		t.Errorf("setting the contact changed the method to %s", got.General.DeliveryMethod)
	}

	// Leaving contactPerson out keeps it.
	got = updateGeneral(t, admin, map[string]any{"deliveryMethod": "SMS_WITH_EMAIL_BACKUP"})
	if got.General.DeliveryMethod != "SMS_WITH_EMAIL_BACKUP" {
		t.Errorf("method = %s, want SMS_WITH_EMAIL_BACKUP", got.General.DeliveryMethod)
	}
	if cp := got.General.ContactPerson; cp == nil || cp.Name != "Jane Doe" {
		t.Errorf("omitted contactPerson was not kept: %+v", cp)
	}

	// A contact with an email only has a null phone.
	got = updateGeneral(t, admin, map[string]any{"contactPerson": map[string]any{"name": "Help Desk", "email": "help@example.com"}})
	if cp := got.General.ContactPerson; cp == nil || cp.Name != "Help Desk" || str(cp.Email) != "help@example.com" || cp.Phone != nil {
		t.Errorf("email-only contact = %+v", cp)
	}

	// null clears it.
	got = updateGeneral(t, admin, map[string]any{"contactPerson": nil})
	if got.General.ContactPerson != nil {
		t.Errorf("contact after null = %+v, want null", *got.General.ContactPerson)
	}
	if got.General.DeliveryMethod != "SMS_WITH_EMAIL_BACKUP" {
		t.Errorf("clearing the contact changed the method to %s", got.General.DeliveryMethod)
	}

	// What the mutation returned is what a read returns.
	if read := getSettings(t, admin); !reflect.DeepEqual(read, got) {
		t.Errorf("read %+v, mutation returned %+v", read, got)
	}

	events := allEvents(t, admin, nil)
	if len(events) != 5 {
		t.Fatalf("audit rows = %d, want 5", len(events))
	}
	for _, e := range events {
		if e.Action != "GENERAL_SETTINGS_CHANGED" {
			t.Errorf("action = %s, want GENERAL_SETTINGS_CHANGED", e.Action)
		}
	}
	// Newest first.
	wantJSON(t, "clear details", events[0].Details,
		`{"before":{"contactPerson":{"name":"Help Desk","email":"help@example.com"}},"after":{"contactPerson":null}}`)
	wantJSON(t, "method details", events[2].Details,
		`{"before":{"deliveryMethod":"EMAIL_ONLY"},"after":{"deliveryMethod":"SMS_WITH_EMAIL_BACKUP"}}`)
	wantJSON(t, "set contact details", events[3].Details,
		`{"before":{"contactPerson":null},"after":{"contactPerson":{"name":"Jane Doe","email":"jane@example.com","phone":"+37120000000"}}}`)
	wantJSON(t, "first details", events[4].Details,
		`{"before":{"deliveryMethod":"SMS_WITH_EMAIL_BACKUP"},"after":{"deliveryMethod":"EMAIL_ONLY"}}`)
}

func TestUpdateDefaultSettings(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)

	steps := []struct {
		input        map[string]any
		web, manager bool
		details      string // "" when nothing changes
	}{
		{map[string]any{"web": true}, true, false, `{"before":{"web":false},"after":{"web":true}}`},
		{map[string]any{"manager": true}, true, true, `{"before":{"manager":false},"after":{"manager":true}}`},
		{map[string]any{"web": false, "manager": false}, false, false, `{"before":{"web":true,"manager":true},"after":{"web":false,"manager":false}}`},
		{map[string]any{}, false, false, ""},
		{map[string]any{"web": nil, "manager": true}, false, true, `{"before":{"manager":false},"after":{"manager":true}}`},
	}
	var want []string
	for i, st := range steps {
		got := updateDefaults(t, admin, st.input)
		if got.Defaults.Web != st.web || got.Defaults.Manager != st.manager {
			t.Errorf("step %d %v: defaults = %+v, want web=%v manager=%v", i, st.input, got.Defaults, st.web, st.manager)
		}
		if got.General.DeliveryMethod != "SMS_WITH_EMAIL_BACKUP" {
			t.Errorf("step %d changed the delivery method to %s", i, got.General.DeliveryMethod)
		}
		if st.details != "" {
			want = append([]string{st.details}, want...)
		}
	}
	events := allEvents(t, admin, nil)
	if len(events) != len(want) {
		t.Fatalf("audit rows = %d, want %d", len(events), len(want))
	}
	for i, e := range events {
		if e.Action != "DEFAULT_SETTINGS_CHANGED" {
			t.Errorf("action = %s", e.Action)
		}
		wantJSON(t, fmt.Sprintf("event %d details", i), e.Details, want[i])
	}
}

func TestCreateUserFollowsDefaultsAtCreation(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)

	u0 := createUser(t, admin, map[string]any{"id": "u0"})
	if u0.TwoFactor.Web || u0.TwoFactor.Manager {
		t.Errorf("u0 created under default settings has %+v, want both off", u0.TwoFactor)
	}
	if u0.Email != nil || u0.Phone != nil || u0.DisplayName != nil {
		t.Errorf("u0 optional fields = %s %s %s, want null", str(u0.Email), str(u0.Phone), str(u0.DisplayName))
	}
	wantDateTime(t, "createdAt", u0.CreatedAt)

	updateDefaults(t, admin, map[string]any{"web": true})
	u1 := createUser(t, admin, map[string]any{"id": "u1", "email": "u1@example.com", "phone": "+4915112345678", "displayName": "User One"})
	if !u1.TwoFactor.Web || u1.TwoFactor.Manager {
		t.Errorf("u1 = %+v, want web on, manager off", u1.TwoFactor)
	}
	if str(u1.Email) != "u1@example.com" || str(u1.Phone) != "+4915112345678" || str(u1.DisplayName) != "User One" {
		t.Errorf("u1 = %s %s %s", str(u1.Email), str(u1.Phone), str(u1.DisplayName))
	}

	updateDefaults(t, admin, map[string]any{"web": false, "manager": true})
	u2 := createUser(t, s.Service(t, co), map[string]any{"id": "u2"})
	if u2.TwoFactor.Web || !u2.TwoFactor.Manager {
		t.Errorf("u2 = %+v, want web off, manager on", u2.TwoFactor)
	}

	// Changing the defaults does not touch existing users.
	for id, want := range map[string][2]bool{"u0": {false, false}, "u1": {true, false}, "u2": {false, true}} {
		u := getUser(t, admin, id)
		if u == nil {
			t.Fatalf("user %s not found", id)
		}
		if got := [2]bool{u.TwoFactor.Web, u.TwoFactor.Manager}; got != want {
			t.Errorf("user %s twoFactor = %v, want %v", id, got, want)
		}
	}
	if got := getUser(t, admin, "u1"); !reflect.DeepEqual(*got, u1) {
		t.Errorf("read u1 = %+v, createUser returned %+v", *got, u1)
	}
}

func TestCreateUserDuplicate(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	createUser(t, admin, map[string]any{"id": "dup", "email": "first@example.com"})

	for _, c := range []*apptest.Client{admin, s.Service(t, co)} {
		p := mutate[userPayload](t, c, mCreateUser, "createUser", map[string]any{"id": "dup", "email": "second@example.com"})
		if p.User != nil {
			t.Errorf("duplicate returned a user: %+v", *p.User)
		}
		if len(p.UserErrors) != 1 || p.UserErrors[0].Code != "ALREADY_EXISTS" ||
			!slices.Equal(p.UserErrors[0].Field, []string{"input", "id"}) || p.UserErrors[0].Message == "" {
			t.Errorf("userErrors = %+v, want one ALREADY_EXISTS at [input id]", p.UserErrors)
		}
	}
	if u := getUser(t, admin, "dup"); u == nil || str(u.Email) != "first@example.com" {
		t.Errorf("the first user was changed: %+v", u)
	}
	if n := len(allEvents(t, admin, nil)); n != 1 {
		t.Errorf("audit rows = %d, want 1", n)
	}
}

func TestSetUserTwoFactor(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	createUser(t, admin, map[string]any{"id": "u1", "displayName": "User One"})

	steps := []struct {
		app          string
		enabled      bool
		web, manager bool
	}{
		{"WEB", true, true, false},
		{"MANAGER", true, true, true},
		{"WEB", false, false, true},
		{"MANAGER", false, false, false},
	}
	for _, st := range steps {
		u := setTwoFactor(t, admin, "u1", st.app, st.enabled)
		if u.ID != "u1" || u.TwoFactor.Web != st.web || u.TwoFactor.Manager != st.manager {
			t.Errorf("after %s=%v: %+v, want web=%v manager=%v", st.app, st.enabled, u.TwoFactor, st.web, st.manager)
		}
		if r := getUser(t, admin, "u1"); r.TwoFactor != u.TwoFactor {
			t.Errorf("read %+v, mutation returned %+v", r.TwoFactor, u.TwoFactor)
		}
	}

	events := allEvents(t, admin, map[string]any{"actions": []string{"USER_TWO_FACTOR_ENABLED", "USER_TWO_FACTOR_DISABLED"}})
	if len(events) != len(steps) {
		t.Fatalf("audit rows = %d, want %d", len(events), len(steps))
	}
	for i, st := range steps {
		e := events[len(events)-1-i]
		wantAction := map[bool]string{true: "USER_TWO_FACTOR_ENABLED", false: "USER_TWO_FACTOR_DISABLED"}[st.enabled]
		if e.Action != wantAction || str(e.App) != st.app {
			t.Errorf("step %d: event %s app %s, want %s app %s", i, e.Action, str(e.App), wantAction, st.app)
		}
		if e.TargetUser == nil || e.TargetUser.ID != "u1" || str(e.TargetUser.DisplayName) != "User One" {
			t.Errorf("step %d: target %+v", i, e.TargetUser)
		}
		wantJSON(t, "details", e.Details, fmt.Sprintf(`{"before":{"enabled":%v},"after":{"enabled":%v}}`, !st.enabled, st.enabled))
	}

	// Unknown users are a user error, not a failure.
	p := mutate[userPayload](t, admin, mSetUserTwoFactor, "setUserTwoFactor",
		map[string]any{"userId": "ghost", "app": "WEB", "enabled": true})
	if p.User != nil || len(p.UserErrors) != 1 || p.UserErrors[0].Code != "NOT_FOUND" ||
		!slices.Equal(p.UserErrors[0].Field, []string{"input", "userId"}) {
		t.Errorf("unknown user: %+v", p)
	}
	if n := len(allEvents(t, admin, nil)); n != 1+len(steps) {
		t.Errorf("audit rows = %d, want %d", n, 1+len(steps))
	}
}

func TestUsersPagination(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	var want []string
	for i := range 25 {
		id := fmt.Sprintf("user-%02d", i)
		want = append(want, id)
		createUser(t, s.Service(t, co), map[string]any{"id": id})
	}

	// Default page size is 20.
	first := listUsers(t, admin, nil)
	if !slices.Equal(first.ids(), want[:20]) || !first.PageInfo.HasNextPage || first.PageInfo.HasPreviousPage {
		t.Errorf("default page: %v %+v", first.ids(), first.PageInfo)
	}

	for _, size := range []int{1, 7, 10, 25, 100} {
		t.Run(fmt.Sprintf("first=%d", size), func(t *testing.T) {
			var got []string
			vars := map[string]any{"first": size}
			for pages := 0; ; pages++ {
				if pages > 30 {
					t.Fatal("pagination does not end")
				}
				p := listUsers(t, s.Service(t, co), vars)
				got = append(got, p.ids()...)
				if p.PageInfo.HasPreviousPage != (pages > 0) {
					t.Errorf("page %d hasPreviousPage = %v", pages, p.PageInfo.HasPreviousPage)
				}
				if n := len(p.Edges); n > 0 {
					if str(p.PageInfo.StartCursor) != p.Edges[0].Cursor || str(p.PageInfo.EndCursor) != p.Edges[n-1].Cursor {
						t.Errorf("page %d cursors %+v do not match edges", pages, p.PageInfo)
					}
				}
				if !p.PageInfo.HasNextPage {
					break
				}
				vars["after"] = *p.PageInfo.EndCursor
			}
			if !slices.Equal(got, want) {
				t.Errorf("walk = %v, want %v", got, want)
			}
		})
	}

	// After the last user there is nothing.
	last := listUsers(t, admin, map[string]any{"first": 25})
	empty := listUsers(t, admin, map[string]any{"after": *last.PageInfo.EndCursor})
	if len(empty.Edges) != 0 || empty.PageInfo.HasNextPage || empty.PageInfo.StartCursor != nil || empty.PageInfo.EndCursor != nil {
		t.Errorf("page after the end = %+v", empty)
	}
	if z := listUsers(t, admin, map[string]any{"first": 0}); len(z.Edges) != 0 || !z.PageInfo.HasNextPage {
		t.Errorf("first: 0 = %v %+v", z.ids(), z.PageInfo)
	}
}

func TestUsersQuery(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	for _, in := range []map[string]any{
		{"id": "alice", "email": "Alice.Smith@Example.com", "displayName": "Alice Smith"},
		{"id": "bob", "email": "bob@corp.example.org", "displayName": "Robert MALICE"},
		{"id": "carol_1", "displayName": "Carol"},
		{"id": "carolX1", "displayName": "Carol X"},
		{"id": "dan", "displayName": "100% Dan"},
		{"id": "erin", "email": "erin@example.com"},
		{"id": "back\\slash"},
	} {
		createUser(t, admin, in)
	}
	cases := []struct {
		query string
		want  []string
	}{
		{"alice", []string{"alice", "bob"}},        // id, and display name "MALICE"
		{"ALICE", []string{"alice", "bob"}},        // case-insensitive
		{"example.COM", []string{"alice", "erin"}}, // email, mixed case
		{"robert", []string{"bob"}},                // display name only
		{"corp.EXAMPLE", []string{"bob"}},
		{"carol", []string{"carolX1", "carol_1"}},
		{"_", []string{"carol_1"}},      // _ is literal, not "any character"
		{"carol_", []string{"carol_1"}}, // not carolX1
		{"%", []string{"dan"}},          // % is literal, not "anything"
		{"100%", []string{"dan"}},       //
		{"%dan", nil},                   // no "%dan" anywhere
		{"\\", []string{"back\\slash"}}, // the escape character is literal too
		{"nobody", nil},
		{"", []string{"alice", "back\\slash", "bob", "carolX1", "carol_1", "dan", "erin"}},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			got := listUsers(t, admin, map[string]any{"query": tc.query, "first": 100}).ids()
			want := slices.Clone(tc.want)
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("users(query: %q) = %v, want %v", tc.query, got, want)
			}
		})
	}

	// The filter holds across pages.
	var got []string
	vars := map[string]any{"query": "carol", "first": 1}
	for range 5 {
		p := listUsers(t, admin, vars)
		got = append(got, p.ids()...)
		if !p.PageInfo.HasNextPage {
			break
		}
		vars["after"] = *p.PageInfo.EndCursor
	}
	if len(got) != 2 || !slices.Contains(got, "carol_1") || !slices.Contains(got, "carolX1") {
		t.Errorf("paged query = %v", got)
	}
}

func TestMe(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	createUser(t, admin, map[string]any{"id": "u1", "email": "u1@example.com", "displayName": "User One"})
	createUser(t, admin, map[string]any{"id": "u2"})
	setTwoFactor(t, admin, "u1", "MANAGER", true)

	me := func(c *apptest.Client) *userT {
		t.Helper()
		var out struct {
			Me *userT `json:"me"`
		}
		c.Must(t, qMe, nil, &out)
		return out.Me
	}
	if u := me(s.User(t, co, "u1")); u == nil || u.ID != "u1" || str(u.DisplayName) != "User One" || !u.TwoFactor.Manager || u.TwoFactor.Web {
		t.Errorf("me as u1 = %+v", u)
	}
	if u := me(s.User(t, co, "u2")); u == nil || u.ID != "u2" {
		t.Errorf("me as u2 = %+v", u)
	}
	if u := me(admin); u != nil {
		t.Errorf("me as an admin without a user row = %+v, want null", *u)
	}
	if u := me(s.Service(t, co)); u != nil {
		t.Errorf("me as a service = %+v, want null", *u)
	}
	if u := me(s.User(t, co, "nobody")); u != nil {
		t.Errorf("me as an unknown user = %+v, want null", *u)
	}
	// An admin who is also a user sees their record.
	adminU1 := s.As(t, auth.Caller{UserID: "u1", Company: co, Role: auth.RoleAdmin})
	if u := me(adminU1); u == nil || u.ID != "u1" {
		t.Errorf("me as admin u1 = %+v", u)
	}

	// A user reads themself through user(id) too.
	if u := getUser(t, s.User(t, co, "u1"), "u1"); u == nil || u.ID != "u1" {
		t.Errorf("user(u1) as u1 = %+v", u)
	}
}

func TestAuditLogContent(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	carol := adminNamed(t, s, co, "carol", "Carol Admin")

	createUser(t, carol, map[string]any{"id": "dave", "email": "dave@example.com", "displayName": "Dave D"})
	createUser(t, s.Service(t, co), map[string]any{"id": "erin"})
	setTwoFactor(t, carol, "dave", "WEB", true)
	updateDefaults(t, carol, map[string]any{"manager": true})
	updateGeneral(t, carol, map[string]any{"deliveryMethod": "EMAIL_ONLY"})

	// Snapshots: later renames of the actor or target do not rewrite
	// earlier rows.
	if err := s.Backends.DB.Exec("UPDATE users SET display_name = ? WHERE company_id = ? AND id = ?",
		"Dave Renamed", co, "dave").Error; err != nil {
		t.Fatal(err)
	}
	carol2 := adminNamed(t, s, co, "carol", "Carol Renamed")
	setTwoFactor(t, carol2, "dave", "MANAGER", true)
	setTwoFactor(t, carol2, "dave", "WEB", false)

	events := allEvents(t, carol, nil)
	type want struct {
		action, actorID, actorName, role string
		target, targetName, app          string // "" for null
		details                          string
	}
	wants := []want{ // newest first
		{"USER_TWO_FACTOR_DISABLED", "carol", "Carol Renamed", "ADMIN", "dave", "Dave Renamed", "WEB", `{"before":{"enabled":true},"after":{"enabled":false}}`},
		{"USER_TWO_FACTOR_ENABLED", "carol", "Carol Renamed", "ADMIN", "dave", "Dave Renamed", "MANAGER", `{"before":{"enabled":false},"after":{"enabled":true}}`},
		{"GENERAL_SETTINGS_CHANGED", "carol", "Carol Admin", "ADMIN", "", "", "", `{"before":{"deliveryMethod":"SMS_WITH_EMAIL_BACKUP"},"after":{"deliveryMethod":"EMAIL_ONLY"}}`},
		{"DEFAULT_SETTINGS_CHANGED", "carol", "Carol Admin", "ADMIN", "", "", "", `{"before":{"manager":false},"after":{"manager":true}}`},
		{"USER_TWO_FACTOR_ENABLED", "carol", "Carol Admin", "ADMIN", "dave", "Dave D", "WEB", `{"before":{"enabled":false},"after":{"enabled":true}}`},
		{"USER_CREATED", "svc-" + co, "", "SERVICE", "erin", "", "", `{"before":{},"after":{"twoFactor":{"web":false,"manager":false}}}`},
		{"USER_CREATED", "carol", "Carol Admin", "ADMIN", "dave", "Dave D", "", `{"before":{},"after":{"email":"dave@example.com","displayName":"Dave D","twoFactor":{"web":false,"manager":false}}}`},
	}
	if len(events) != len(wants) {
		t.Fatalf("audit rows = %d, want %d: %+v", len(events), len(wants), events)
	}
	opt := func(s string) string {
		if s == "" {
			return "<nil>"
		}
		return s
	}
	for i, w := range wants {
		e := events[i]
		t.Run(fmt.Sprintf("%d_%s", i, w.action), func(t *testing.T) {
			if e.Action != w.action {
				t.Errorf("action = %s, want %s", e.Action, w.action)
			}
			if e.Actor.ID != w.actorID || str(e.Actor.DisplayName) != opt(w.actorName) || str(e.Actor.Role) != w.role {
				t.Errorf("actor = %s %s %s, want %s %s %s", e.Actor.ID, str(e.Actor.DisplayName), str(e.Actor.Role), w.actorID, opt(w.actorName), w.role)
			}
			switch {
			case w.target == "" && e.TargetUser != nil:
				t.Errorf("targetUser = %+v, want null", *e.TargetUser)
			case w.target != "" && (e.TargetUser == nil || e.TargetUser.ID != w.target || str(e.TargetUser.DisplayName) != opt(w.targetName)):
				t.Errorf("targetUser = %+v, want %s %s", e.TargetUser, w.target, opt(w.targetName))
			}
			if str(e.App) != opt(w.app) {
				t.Errorf("app = %s, want %s", str(e.App), opt(w.app))
			}
			wantJSON(t, "details", e.Details, w.details)
			wantDateTime(t, "createdAt", e.CreatedAt)
			if e.ID == "" {
				t.Error("empty id")
			}
		})
	}
	for i := 1; i < len(events); i++ {
		if events[i].CreatedAt > events[i-1].CreatedAt {
			t.Errorf("event %d (%s) is newer than event %d (%s)", i, events[i].CreatedAt, i-1, events[i-1].CreatedAt)
		}
		if events[i].ID == events[i-1].ID {
			t.Errorf("duplicate id %s", events[i].ID)
		}
	}
}

func TestAuditLogFilters(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	carol := adminNamed(t, s, co, "carol", "Carol")
	// A pause between changes gives them distinct timestamps, so the
	// time windows below split the log; the assertions hold either way.
	pause := func() { time.Sleep(3 * time.Millisecond) }

	createUser(t, carol, map[string]any{"id": "dave"})
	pause()
	createUser(t, s.Service(t, co), map[string]any{"id": "erin"})
	pause()
	setTwoFactor(t, carol, "dave", "WEB", true)
	pause()
	setTwoFactor(t, carol, "erin", "MANAGER", true)
	pause()
	setTwoFactor(t, carol, "dave", "WEB", false)
	pause()
	updateDefaults(t, adminNamed(t, s, co, "dave", "Dave as admin"), map[string]any{"web": true})
	pause()
	updateGeneral(t, carol, map[string]any{"deliveryMethod": "EMAIL_ONLY"})

	all := allEvents(t, carol, nil)
	if len(all) != 7 {
		t.Fatalf("audit rows = %d, want 7", len(all))
	}
	target := func(e eventT) string {
		if e.TargetUser == nil {
			return ""
		}
		return e.TargetUser.ID
	}
	mid := all[3].CreatedAt
	midTime, err := time.Parse(time.RFC3339Nano, mid)
	if err != nil {
		t.Fatal(err)
	}
	upper := all[1].CreatedAt
	cases := []struct {
		name   string
		filter map[string]any
		match  func(eventT) bool
		count  int // expected number of rows, or -1 when timing decides
	}{
		{"no filter", map[string]any{}, func(eventT) bool { return true }, 7},
		{"one action", map[string]any{"actions": []string{"USER_CREATED"}},
			func(e eventT) bool { return e.Action == "USER_CREATED" }, 2},
		{"two actions", map[string]any{"actions": []string{"USER_TWO_FACTOR_ENABLED", "USER_TWO_FACTOR_DISABLED"}},
			func(e eventT) bool {
				return e.Action == "USER_TWO_FACTOR_ENABLED" || e.Action == "USER_TWO_FACTOR_DISABLED"
			}, 3},
		{"unused action", map[string]any{"actions": []string{"FAILED_ATTEMPTS_LIMIT_REACHED"}},
			func(eventT) bool { return false }, 0},
		{"user as actor or target", map[string]any{"userId": "dave"},
			func(e eventT) bool { return e.Actor.ID == "dave" || target(e) == "dave" }, 4},
		{"user as target", map[string]any{"userId": "erin"},
			func(e eventT) bool { return target(e) == "erin" }, 2},
		{"user as actor", map[string]any{"userId": "carol"},
			func(e eventT) bool { return e.Actor.ID == "carol" }, 5},
		{"service actor", map[string]any{"userId": "svc-" + co},
			func(e eventT) bool { return e.Actor.ID == "svc-"+co }, 1},
		{"unknown user", map[string]any{"userId": "nobody"}, func(eventT) bool { return false }, 0},
		{"app web", map[string]any{"app": "WEB"}, func(e eventT) bool { return str(e.App) == "WEB" }, 2},
		{"app manager", map[string]any{"app": "MANAGER"}, func(e eventT) bool { return str(e.App) == "MANAGER" }, 1},
		{"action and app", map[string]any{"actions": []string{"USER_TWO_FACTOR_ENABLED"}, "app": "WEB"},
			func(e eventT) bool { return e.Action == "USER_TWO_FACTOR_ENABLED" && str(e.App) == "WEB" }, 1},
		{"user and app", map[string]any{"userId": "erin", "app": "WEB"}, func(eventT) bool { return false }, 0},
		{"from", map[string]any{"from": mid}, func(e eventT) bool { return e.CreatedAt >= mid }, -1},
		{"from in another zone", map[string]any{"from": midTime.In(time.FixedZone("", 2*3600)).Format(time.RFC3339Nano)},
			func(e eventT) bool { return e.CreatedAt >= mid }, -1},
		{"to", map[string]any{"to": mid}, func(e eventT) bool { return e.CreatedAt < mid }, -1},
		{"from and to", map[string]any{"from": mid, "to": upper},
			func(e eventT) bool { return e.CreatedAt >= mid && e.CreatedAt < upper }, -1},
		{"from with action", map[string]any{"from": mid, "actions": []string{"USER_CREATED"}},
			func(e eventT) bool { return e.CreatedAt >= mid && e.Action == "USER_CREATED" }, -1},
		{"empty window", map[string]any{"from": mid, "to": mid}, func(eventT) bool { return false }, 0},
		{"far future", map[string]any{"from": "2999-01-01T00:00:00Z"}, func(eventT) bool { return false }, 0},
		{"far past", map[string]any{"to": "2000-01-01T00:00:00.000Z"}, func(eventT) bool { return false }, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var want []eventT
			for _, e := range all {
				if tc.match(e) {
					want = append(want, e)
				}
			}
			if tc.count >= 0 && len(want) != tc.count {
				t.Fatalf("test data: %d rows match, want %d", len(want), tc.count)
			}
			// Page by 2 so the filter is applied across pages too.
			var got []eventT
			vars := map[string]any{"first": 2, "filter": tc.filter}
			for range 10 {
				p := auditPage(t, carol, vars)
				got = append(got, p.nodes()...)
				if !p.PageInfo.HasNextPage {
					break
				}
				vars["after"] = *p.PageInfo.EndCursor
			}
			if !reflect.DeepEqual(ids(got), ids(want)) {
				t.Errorf("filter %v = %v, want %v", tc.filter, ids(got), ids(want))
			}
		})
	}
	// The mid event itself is inside the inclusive lower bound.
	from := allEvents(t, carol, map[string]any{"from": mid})
	if !slices.Contains(ids(from), all[3].ID) {
		t.Errorf("from %s excludes the event created at %s", mid, mid)
	}
}

func ids(events []eventT) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func TestAuditLogPaging(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	for i := range 25 {
		createUser(t, admin, map[string]any{"id": fmt.Sprintf("u%02d", i)})
	}
	all := allEvents(t, admin, nil)
	if len(all) != 25 {
		t.Fatalf("audit rows = %d, want 25", len(all))
	}
	for i, e := range all { // newest first
		if want := fmt.Sprintf("u%02d", 24-i); e.TargetUser == nil || e.TargetUser.ID != want {
			t.Fatalf("event %d targets %+v, want %s", i, e.TargetUser, want)
		}
	}

	def := auditPage(t, admin, nil)
	if len(def.Edges) != 20 || !def.PageInfo.HasNextPage || def.PageInfo.HasPreviousPage {
		t.Errorf("default page: %d edges, %+v", len(def.Edges), def.PageInfo)
	}
	if defLast := auditPage(t, admin, map[string]any{"last": nil, "before": nil}); len(defLast.Edges) != 20 {
		t.Errorf("default page with null arguments: %d edges", len(defLast.Edges))
	}

	// Forward by 10: 10, 10, 5.
	var fwd []eventT
	vars := map[string]any{"first": 10}
	for page := 0; ; page++ {
		p := auditPage(t, admin, vars)
		fwd = append(fwd, p.nodes()...)
		if p.PageInfo.HasPreviousPage != (page > 0) || p.PageInfo.HasNextPage != (page < 2) {
			t.Errorf("forward page %d: %+v", page, p.PageInfo)
		}
		if str(p.PageInfo.StartCursor) != p.Edges[0].Cursor || str(p.PageInfo.EndCursor) != p.Edges[len(p.Edges)-1].Cursor {
			t.Errorf("forward page %d: cursors do not match edges", page)
		}
		if !p.PageInfo.HasNextPage {
			break
		}
		vars["after"] = *p.PageInfo.EndCursor
	}
	if !slices.Equal(ids(fwd), ids(all)) {
		t.Errorf("forward walk = %v, want %v", ids(fwd), ids(all))
	}

	// Backward by 10 from the end: the oldest 10 first, still newest first
	// within the page.
	var back []eventT
	vars = map[string]any{"last": 10}
	for page := 0; ; page++ {
		p := auditPage(t, admin, vars)
		back = append(p.nodes(), back...)
		if p.PageInfo.HasNextPage != (page > 0) || p.PageInfo.HasPreviousPage != (page < 2) {
			t.Errorf("backward page %d: %+v", page, p.PageInfo)
		}
		if !p.PageInfo.HasPreviousPage {
			break
		}
		vars["before"] = *p.PageInfo.StartCursor
	}
	if !slices.Equal(ids(back), ids(all)) {
		t.Errorf("backward walk = %v, want %v", ids(back), ids(all))
	}

	// first/after and last/before around one cursor are each other's
	// complement.
	pivot := def.Edges[4].Cursor
	after := auditPage(t, admin, map[string]any{"first": 100, "after": pivot})
	before := auditPage(t, admin, map[string]any{"last": 100, "before": pivot})
	if !slices.Equal(ids(after.nodes()), ids(all[5:])) || !slices.Equal(ids(before.nodes()), ids(all[:4])) {
		t.Errorf("around the 5th event: after %v, before %v", ids(after.nodes()), ids(before.nodes()))
	}
	if !after.PageInfo.HasPreviousPage || after.PageInfo.HasNextPage || !before.PageInfo.HasNextPage || before.PageInfo.HasPreviousPage {
		t.Errorf("around the 5th event: after %+v, before %+v", after.PageInfo, before.PageInfo)
	}
	// before: the newest cursor leaves nothing; after: the oldest likewise.
	if p := auditPage(t, admin, map[string]any{"last": 5, "before": def.Edges[0].Cursor}); len(p.Edges) != 0 || p.PageInfo.HasPreviousPage || !p.PageInfo.HasNextPage {
		t.Errorf("before the newest: %v %+v", ids(p.nodes()), p.PageInfo)
	}
	if p := auditPage(t, admin, map[string]any{"first": 5, "after": *auditPage(t, admin, map[string]any{"last": 1}).PageInfo.EndCursor}); len(p.Edges) != 0 || p.PageInfo.HasNextPage || !p.PageInfo.HasPreviousPage {
		t.Errorf("after the oldest: %v %+v", ids(p.nodes()), p.PageInfo)
	}
}

func TestPagingArgumentErrors(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	createUser(t, admin, map[string]any{"id": "u1"})
	createUser(t, admin, map[string]any{"id": "u2"})
	userCursor := listUsers(t, admin, nil).Edges[0].Cursor
	auditCursor := auditPage(t, admin, nil).Edges[0].Cursor
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

	cases := []struct {
		name  string
		query string
		vars  map[string]any
		code  string
	}{
		{"audit first 101", qAudit, map[string]any{"first": 101}, "BAD_USER_INPUT"},
		{"audit last 101", qAudit, map[string]any{"last": 101}, "BAD_USER_INPUT"},
		{"audit first negative", qAudit, map[string]any{"first": -1}, "BAD_USER_INPUT"},
		{"audit last negative", qAudit, map[string]any{"last": -1}, "BAD_USER_INPUT"},
		{"audit first and last", qAudit, map[string]any{"first": 1, "last": 1}, "BAD_USER_INPUT"},
		{"users first 101", qUsers, map[string]any{"first": 101}, "BAD_USER_INPUT"},
		{"users first negative", qUsers, map[string]any{"first": -1}, "BAD_USER_INPUT"},
		{"audit after garbage", qAudit, map[string]any{"after": "not a cursor!"}, "BAD_CURSOR"},
		{"audit before garbage", qAudit, map[string]any{"before": "%%%"}, "BAD_CURSOR"},
		{"audit after users cursor", qAudit, map[string]any{"after": userCursor}, "BAD_CURSOR"},
		{"audit before users cursor", qAudit, map[string]any{"before": userCursor}, "BAD_CURSOR"},
		{"audit after non-numeric", qAudit, map[string]any{"after": enc("audit:abc")}, "BAD_CURSOR"},
		{"audit after zero", qAudit, map[string]any{"after": enc("audit:0")}, "BAD_CURSOR"},
		{"audit after negative", qAudit, map[string]any{"after": enc("audit:-5")}, "BAD_CURSOR"},
		{"audit after empty position", qAudit, map[string]any{"after": enc("audit:")}, "BAD_CURSOR"},
		{"audit after padded base64", qAudit, map[string]any{"after": base64.StdEncoding.EncodeToString([]byte("audit:1"))}, "BAD_CURSOR"},
		{"users after garbage", qUsers, map[string]any{"after": "***"}, "BAD_CURSOR"},
		{"users after audit cursor", qUsers, map[string]any{"after": auditCursor}, "BAD_CURSOR"},
		{"users after empty position", qUsers, map[string]any{"after": enc("user:")}, "BAD_CURSOR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := admin.Do(t, tc.query, tc.vars)
			wantCode(t, r, tc.code)
			if r.Errors[0].Message == "" {
				t.Error("empty error message")
			}
		})
	}
	// The largest page size is allowed.
	for _, q := range []string{qAudit, qUsers} {
		if r := admin.Do(t, q, map[string]any{"first": 100}); len(r.Errors) > 0 {
			t.Errorf("first: 100 failed: %+v", r.Errors)
		}
	}
	if r := admin.Do(t, qAudit, map[string]any{"last": 100}); len(r.Errors) > 0 {
		t.Errorf("last: 100 failed: %+v", r.Errors)
	}
}

func TestSameValueWritesNothing(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	createUser(t, admin, map[string]any{"id": "u1"})
	updateGeneral(t, admin, map[string]any{
		"deliveryMethod": "EMAIL_ONLY",
		"contactPerson":  map[string]any{"name": "Jane", "email": "jane@example.com"},
	})
	updateDefaults(t, admin, map[string]any{"web": true})
	setTwoFactor(t, admin, "u1", "MANAGER", true)
	before := getSettings(t, admin)
	beforeUser := getUser(t, admin, "u1")
	beforeLog := allEvents(t, admin, nil)
	// Let the clock move past the stored millisecond, so a write would
	// show in updatedAt.
	time.Sleep(5 * time.Millisecond)

	cases := []struct {
		name  string
		query string
		input map[string]any
	}{
		{"same method", mUpdateGeneral, map[string]any{"deliveryMethod": "EMAIL_ONLY"}},
		{"same contact", mUpdateGeneral, map[string]any{"contactPerson": map[string]any{"name": "Jane", "email": "jane@example.com"}}},
		{"same contact, null phone", mUpdateGeneral, map[string]any{"contactPerson": map[string]any{"name": "Jane", "email": "jane@example.com", "phone": nil}}},
		{"same method and contact", mUpdateGeneral, map[string]any{"deliveryMethod": "EMAIL_ONLY", "contactPerson": map[string]any{"name": "Jane", "email": "jane@example.com"}}},
		{"empty general", mUpdateGeneral, map[string]any{}},
		{"same defaults", mUpdateDefaults, map[string]any{"web": true, "manager": false}},
		{"empty defaults", mUpdateDefaults, map[string]any{}},
		{"same switch", mSetUserTwoFactor, map[string]any{"userId": "u1", "app": "MANAGER", "enabled": true}},
		{"same other switch", mSetUserTwoFactor, map[string]any{"userId": "u1", "app": "WEB", "enabled": false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := admin.Do(t, tc.query, map[string]any{"input": tc.input})
			if len(r.Errors) > 0 || r.Status != 200 {
				t.Fatalf("status %d errors %+v", r.Status, r.Errors)
			}
			var out map[string]struct {
				Settings   *settingsT  `json:"settings"`
				User       *userT      `json:"user"`
				UserErrors []userError `json:"userErrors"`
			}
			r.Decode(t, &out)
			for _, p := range out {
				if len(p.UserErrors) > 0 {
					t.Fatalf("user errors %+v", p.UserErrors)
				}
				if p.Settings != nil && !reflect.DeepEqual(*p.Settings, before) {
					t.Errorf("payload settings = %+v, want %+v", *p.Settings, before)
				}
				if p.User != nil && !reflect.DeepEqual(*p.User, *beforeUser) {
					t.Errorf("payload user = %+v, want %+v", *p.User, *beforeUser)
				}
			}
		})
	}
	if got := getSettings(t, admin); !reflect.DeepEqual(got, before) {
		t.Errorf("settings = %+v, want unchanged %+v", got, before)
	}
	if got := getUser(t, admin, "u1"); !reflect.DeepEqual(*got, *beforeUser) {
		t.Errorf("user = %+v, want unchanged %+v", *got, *beforeUser)
	}
	if got := allEvents(t, admin, nil); !slices.Equal(ids(got), ids(beforeLog)) {
		t.Errorf("audit log = %v, want unchanged %v", ids(got), ids(beforeLog))
	}
}

// TestRoles checks what each role may do inside its own company.
func TestRoles(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	createUser(t, admin, map[string]any{"id": "u1", "displayName": "User One"})
	createUser(t, admin, map[string]any{"id": "u2", "displayName": "User Two"})
	baseSettings := getSettings(t, admin)
	baseLog := allEvents(t, admin, nil)

	type op struct {
		name  string
		query string
		vars  map[string]any
	}
	ops := []op{
		{"twoFactorSettings", qSettings, nil},
		{"updateGeneralSettings", mUpdateGeneral, map[string]any{"input": map[string]any{"deliveryMethod": "EMAIL_ONLY"}}},
		{"updateDefaultSettings", mUpdateDefaults, map[string]any{"input": map[string]any{"web": true}}},
		{"setUserTwoFactor", mSetUserTwoFactor, map[string]any{"input": map[string]any{"userId": "u2", "app": "WEB", "enabled": true}}},
		{"auditLog", qAudit, nil},
		{"createUser", mCreateUser, map[string]any{"input": map[string]any{"id": "new"}}},
		{"user(other)", qUser, map[string]any{"id": "u2"}},
		{"user(self)", qUser, map[string]any{"id": "u1"}},
		{"users", qUsers, nil},
		{"me", qMe, nil},
	}
	const ok = ""
	cases := []struct {
		role   string
		client *apptest.Client
		want   map[string]string // op name -> code, ok for success
	}{
		{"service", s.Service(t, co), map[string]string{
			"twoFactorSettings": "FORBIDDEN", "updateGeneralSettings": "FORBIDDEN", "updateDefaultSettings": "FORBIDDEN",
			"setUserTwoFactor": "FORBIDDEN", "auditLog": "FORBIDDEN",
			"createUser": ok, "user(other)": ok, "user(self)": ok, "users": ok, "me": ok,
		}},
		{"user", s.User(t, co, "u1"), map[string]string{
			"twoFactorSettings": "FORBIDDEN", "updateGeneralSettings": "FORBIDDEN", "updateDefaultSettings": "FORBIDDEN",
			"setUserTwoFactor": "FORBIDDEN", "auditLog": "FORBIDDEN", "createUser": "FORBIDDEN", "users": "FORBIDDEN",
			"user(other)": "NOT_FOUND", "user(self)": ok, "me": ok,
		}},
	}
	for _, tc := range cases {
		for _, o := range ops {
			t.Run(tc.role+"/"+o.name, func(t *testing.T) {
				want, known := tc.want[o.name]
				if !known {
					t.Fatalf("no expectation for %s", o.name)
				}
				vars := o.vars
				if o.name == "createUser" {
					vars = map[string]any{"input": map[string]any{"id": "new-by-" + tc.role}}
				}
				r := tc.client.Do(t, o.query, vars)
				if want == ok {
					if r.Status != 200 || len(r.Errors) > 0 {
						t.Fatalf("status %d errors %+v, want success", r.Status, r.Errors)
					}
					if string(r.Data) == "null" || len(r.Data) == 0 {
						t.Fatal("no data")
					}
					return
				}
				wantCode(t, r, want)
				if msg := r.Errors[0].Message; msg == "" {
					t.Error("empty message")
				}
			})
		}
	}

	// Nothing the denied calls tried has happened.
	if got := getSettings(t, admin); got != baseSettings {
		t.Errorf("settings changed: %+v, want %+v", got, baseSettings)
	}
	if u := getUser(t, admin, "u2"); u.TwoFactor.Web {
		t.Error("u2's web switch was turned on")
	}
	if r := admin.Do(t, qUser, map[string]any{"id": "new-by-user"}); !slices.Equal(r.Codes(), []string{"NOT_FOUND"}) {
		t.Errorf("user role created a user: %s %+v", r.Data, r.Errors)
	}
	log := allEvents(t, admin, nil)
	if len(log) != len(baseLog)+1 || log[0].Action != "USER_CREATED" || log[0].TargetUser.ID != "new-by-service" {
		t.Errorf("audit log after the role checks: %+v", log)
	}

	// The admin may do all of it.
	for _, o := range ops {
		t.Run("admin/"+o.name, func(t *testing.T) {
			r := admin.Do(t, o.query, o.vars)
			if r.Status != 200 || len(r.Errors) > 0 {
				t.Fatalf("status %d errors %+v", r.Status, r.Errors)
			}
		})
	}
	if got := getSettings(t, admin); got.General.DeliveryMethod != "EMAIL_ONLY" || !got.Defaults.Web {
		t.Errorf("admin changes did not land: %+v", got)
	}
}
