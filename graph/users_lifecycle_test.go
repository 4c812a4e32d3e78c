package graph_test

import (
	"strings"
	"testing"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

const (
	mUpdateUser = `mutation($input: UpdateUserInput!) { updateUser(input: $input) { user { ` + userFields + ` } userErrors { field code message } } }`
	mDeleteUser = `mutation($input: DeleteUserInput!) { deleteUser(input: $input) { deletedUserId userErrors { field code message } } }`
	mUpsert     = `mutation($input: UpsertUsersInput!) { upsertUsers(input: $input) { results { status user { ` + userFields + ` } } userErrors { field code message } } }`
	mSwitchMany = `mutation($input: SetTwoFactorForUsersInput!) { setTwoFactorForUsers(input: $input) { changedCount userErrors { field code message } } }`
	qUsersF     = `query($filter: UsersFilter) { users(first: 100, filter: $filter) { edges { node { id } } pageInfo { hasNextPage endCursor } } }`
)

type upsertPayload struct {
	Results []struct {
		Status string `json:"status"`
		User   userT  `json:"user"`
	} `json:"results"`
	UserErrors []userError `json:"userErrors"`
}

type switchPayload struct {
	ChangedCount int         `json:"changedCount"`
	UserErrors   []userError `json:"userErrors"`
}

func filtered(t *testing.T, c *apptest.Client, filter map[string]any) []string {
	t.Helper()
	var out struct {
		Users userConn `json:"users"`
	}
	c.Must(t, qUsersF, map[string]any{"filter": filter}, &out)
	return out.Users.ids()
}

func countActions(t *testing.T, c *apptest.Client, action string) int {
	t.Helper()
	return len(allEvents(t, c, map[string]any{"actions": []string{action}}))
}

func TestUpdateUser(t *testing.T) {
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	admin := s.Admin(t, co)
	createUser(t, admin, map[string]any{"id": "u1", "email": "jane@example.com", "phone": "+37120000078", "displayName": "Jane"})
	cases := []struct {
		name      string
		input     map[string]any
		wantCode  string // a user error's code, or ""
		wantEmail *string
		wantName  *string
		audited   bool
	}{
		{"left out keeps", map[string]any{"id": "u1"}, "", ptr("jane@example.com"), ptr("Jane"), false},
		{"same values write nothing", map[string]any{"id": "u1", "displayName": "Jane"}, "", ptr("jane@example.com"), ptr("Jane"), false},
		{"set", map[string]any{"id": "u1", "displayName": "Jane D"}, "", ptr("jane@example.com"), ptr("Jane D"), true},
		{"null clears", map[string]any{"id": "u1", "email": nil}, "", nil, ptr("Jane D"), true},
		{"invalid email", map[string]any{"id": "u1", "email": "nope"}, "INVALID_EMAIL", nil, nil, false},
		{"unknown user", map[string]any{"id": "ghost", "displayName": "x"}, "NOT_FOUND", nil, nil, false},
	}
	for _, tc := range cases {
		before := countActions(t, admin, "USER_UPDATED")
		p := mutate[userPayload](t, admin, mUpdateUser, "updateUser", tc.input)
		if tc.wantCode != "" {
			if len(p.UserErrors) != 1 || p.UserErrors[0].Code != tc.wantCode {
				t.Errorf("%s: user errors %+v, want %s", tc.name, p.UserErrors, tc.wantCode)
			}
			continue
		}
		if p.User == nil || str(p.User.Email) != str(tc.wantEmail) || str(p.User.DisplayName) != str(tc.wantName) {
			t.Errorf("%s: user %+v, want email %v name %v", tc.name, p.User, str(tc.wantEmail), str(tc.wantName))
		}
		if got := countActions(t, admin, "USER_UPDATED") - before; got != map[bool]int{true: 1}[tc.audited] {
			t.Errorf("%s: %d USER_UPDATED rows, want audited=%v", tc.name, got, tc.audited)
		}
	}
}

func ptr(s string) *string { return &s }

// TestUpdateUserMasksAndVoidsCodes: a new phone is audited masked, and the
// code sent to the old phone answers EXPIRED.
func TestUpdateUserMasksAndVoidsCodes(t *testing.T) {
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "u1", uniquePhone(), uniqueEmail(), "WEB")
	ch := l.mustIssue(t, "")
	code := l.code(t, ch)
	newPhone := uniquePhone()
	p := mutate[userPayload](t, l.service, mUpdateUser, "updateUser", map[string]any{"id": "u1", "phone": newPhone})
	if p.User == nil || str(p.User.Phone) != newPhone {
		t.Fatalf("updateUser: %+v", p)
	}
	if v := l.verify(t, ch.ID, code); str(v.Status) != "EXPIRED" {
		t.Errorf("verify of the voided code = %+v, want EXPIRED", v)
	}
	ev := allEvents(t, l.admin, map[string]any{"actions": []string{"USER_UPDATED"}})
	if len(ev) != 1 {
		t.Fatalf("%d USER_UPDATED rows, want 1", len(ev))
	}
	d := string(ev[0].Details)
	if strings.Contains(d, newPhone) || strings.Contains(d, l.phone) || !strings.Contains(d, newPhone[:5]+"*") {
		t.Errorf("details %s: phones not masked", d)
	}
}

// TestDeleteUser: the user and their challenges are gone, one audit row is
// written, and a user created again with the id starts unlocked.
func TestDeleteUser(t *testing.T) {
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "u1", uniquePhone(), uniqueEmail(), "WEB")
	ch := l.mustIssue(t, "")
	for i := 0; i < 10; i++ { // lock the user
		if v := l.verify(t, ch.ID, wrong(l.code(t, ch))); str(v.Status) == "LOCKED" {
			break
		}
	}
	if got := filtered(t, l.admin, map[string]any{"locked": true}); len(got) != 1 {
		t.Fatalf("locked users = %v, want [u1]", got)
	}
	p := mutate[struct {
		DeletedUserID *string     `json:"deletedUserId"`
		UserErrors    []userError `json:"userErrors"`
	}](t, l.service, mDeleteUser, "deleteUser", map[string]any{"id": "u1"})
	if str(p.DeletedUserID) != "u1" {
		t.Fatalf("deleteUser = %+v", p)
	}
	wantCode(t, l.admin.Do(t, qUser, map[string]any{"id": "u1"}), "NOT_FOUND") // user(u1) is null
	wantCode(t, l.service.Do(t, `query($id: ID!) { challenge(id: $id) { id } }`, map[string]any{"id": ch.ID}), "NOT_FOUND")
	if n := countActions(t, l.admin, "USER_DELETED"); n != 1 {
		t.Errorf("%d USER_DELETED rows, want 1", n)
	}
	createUser(t, l.admin, map[string]any{"id": "u1", "phone": l.phone})
	if got := filtered(t, l.admin, map[string]any{"locked": true}); len(got) != 0 {
		t.Errorf("locked after recreate = %v, want none", got)
	}
}

func TestUpsertUsers(t *testing.T) {
	s := apptest.Start(t)
	co := testenv.Company(t)
	svc := s.Service(t, co)
	admin := s.Admin(t, co)
	updateDefaults(t, admin, map[string]any{"web": true})
	createUser(t, admin, map[string]any{"id": "a", "displayName": "A"})
	createUser(t, admin, map[string]any{"id": "b", "displayName": "B"})
	p := mutate[upsertPayload](t, svc, mUpsert, "upsertUsers", map[string]any{"users": []map[string]any{
		{"id": "a", "displayName": "A"}, {"id": "b", "displayName": "B2"}, {"id": "c", "email": "c@example.com"},
	}})
	want := []string{"UNCHANGED", "UPDATED", "CREATED"}
	for i, r := range p.Results {
		if r.Status != want[i] {
			t.Errorf("result %d = %s, want %s", i, r.Status, want[i])
		}
	}
	if len(p.Results) != 3 || !p.Results[2].User.TwoFactor.Web {
		t.Errorf("results %+v: want 3, the new user with the web default", p.Results)
	}
	if u, c := countActions(t, admin, "USER_UPDATED"), countActions(t, admin, "USER_CREATED"); u != 1 || c != 3 {
		t.Errorf("USER_UPDATED %d, USER_CREATED %d; want 1, 3", u, c)
	}
	bad := []struct {
		name  string
		users []map[string]any
		field string
	}{
		{"invalid email", []map[string]any{{"id": "d"}, {"id": "e", "email": "x"}}, "input.users.1.email"},
		{"duplicate id", []map[string]any{{"id": "d"}, {"id": "d"}}, "input.users.1.id"},
		{"too many", make([]map[string]any, 501), "input.users"},
	}
	for i := range bad[2].users {
		bad[2].users[i] = map[string]any{"id": "x" + strings.Repeat("y", i%3) + string(rune('a'+i%26)) + string(rune('a'+i/26%26))}
	}
	for _, tc := range bad {
		p := mutate[upsertPayload](t, svc, mUpsert, "upsertUsers", map[string]any{"users": tc.users})
		if len(p.UserErrors) == 0 || strings.Join(p.UserErrors[0].Field, ".") != tc.field || len(p.Results) != 0 {
			t.Errorf("%s: %+v, want a user error on %s", tc.name, p, tc.field)
		}
		wantCode(t, admin.Do(t, qUser, map[string]any{"id": "d"}), "NOT_FOUND") // nothing written
	}
}

func TestUsersFilterAndBulkSwitch(t *testing.T) {
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	for _, id := range []string{"a", "b", "c", "d"} {
		createUser(t, admin, map[string]any{"id": id})
	}
	setTwoFactor(t, admin, "a", "WEB", true)
	off := map[string]any{"twoFactor": map[string]any{"app": "WEB", "enabled": false}}
	if got := filtered(t, admin, off); strings.Join(got, ",") != "b,c,d" {
		t.Errorf("2FA off in WEB = %v, want b,c,d", got)
	}
	cases := []struct {
		name  string
		input map[string]any
		want  int
	}{
		{"by ids", map[string]any{"app": "WEB", "enabled": true, "userIds": []string{"a", "b"}}, 1},
		{"by filter", map[string]any{"app": "MANAGER", "enabled": true, "filter": map[string]any{"twoFactor": map[string]any{"app": "WEB", "enabled": true}}}, 2},
		{"all", map[string]any{"app": "WEB", "enabled": true}, 2},
		{"all again changes nothing", map[string]any{"app": "WEB", "enabled": true}, 0},
	}
	for _, tc := range cases {
		p := mutate[switchPayload](t, admin, mSwitchMany, "setTwoFactorForUsers", tc.input)
		if p.ChangedCount != tc.want || len(p.UserErrors) > 0 {
			t.Errorf("%s: %+v, want %d changed", tc.name, p, tc.want)
		}
	}
	if n := countActions(t, admin, "USER_TWO_FACTOR_ENABLED"); n != 1+1+2+2 {
		t.Errorf("%d USER_TWO_FACTOR_ENABLED rows, want 6", n)
	}
}

// TestLifecycleRolesAndTenants: users may do none of the new mutations,
// and another company's ids are not found and not touched.
func TestLifecycleRolesAndTenants(t *testing.T) {
	s := apptest.Start(t)
	co, other := testenv.Company(t), testenv.Company(t)
	createUser(t, s.Admin(t, other), map[string]any{"id": "u1", "displayName": "Theirs"})
	createUser(t, s.Admin(t, co), map[string]any{"id": "me"})
	muts := []struct {
		query string
		input map[string]any
	}{
		{mUpdateUser, map[string]any{"id": "u1", "displayName": "x"}},
		{mDeleteUser, map[string]any{"id": "u1"}},
		{mUpsert, map[string]any{"users": []map[string]any{{"id": "u2"}}}},
		{mSwitchMany, map[string]any{"app": "WEB", "enabled": true}},
	}
	for _, m := range muts {
		wantCode(t, s.User(t, co, "me").Do(t, m.query, map[string]any{"input": m.input}), "FORBIDDEN")
	}
	wantCode(t, s.Service(t, co).Do(t, mSwitchMany, map[string]any{"input": muts[3].input}), "FORBIDDEN")
	for _, m := range muts[:2] {
		r := s.Admin(t, co).Do(t, m.query, map[string]any{"input": m.input})
		if !strings.Contains(string(r.Data), "NOT_FOUND") {
			t.Errorf("another company's user: %s", r.Data)
		}
	}
	p := mutate[switchPayload](t, s.Admin(t, co), mSwitchMany, "setTwoFactorForUsers",
		map[string]any{"app": "WEB", "enabled": true, "userIds": []string{"u1"}})
	if p.ChangedCount != 0 {
		t.Errorf("switched another company's user: %+v", p)
	}
	if u := getUser(t, s.Admin(t, other), "u1"); u == nil || str(u.DisplayName) != "Theirs" || u.TwoFactor.Web {
		t.Errorf("another company's user changed: %+v", u)
	}
}
