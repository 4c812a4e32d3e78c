package graph_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// TestForbiddenMutationKeepsEarlierResults: mutation fields are nullable,
// so a forbidden one is null with its error while the ones before and
// after it keep their (committed) results.
func TestForbiddenMutationKeepsEarlierResults(t *testing.T) {
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin, service := s.Admin(t, co), s.Service(t, co)
	cases := []struct {
		name      string
		query     string
		wantNull  []string // fields that fail with FORBIDDEN
		wantUsers []string // users that must exist afterwards
	}{
		{"create then change defaults",
			`mutation { createUser(input: {id: "p1"}) { user { id } userErrors { code } }
			  updateDefaultSettings(input: {web: true}) { settings { defaults { web } } userErrors { code } } }`,
			[]string{"updateDefaultSettings"}, []string{"p1"}},
		{"forbidden between two creates",
			`mutation { a: createUser(input: {id: "p2"}) { user { id } userErrors { code } }
			  setUserTwoFactor(input: {userId: "p2", app: WEB, enabled: true}) { user { id } userErrors { code } }
			  b: createUser(input: {id: "p3"}) { user { id } userErrors { code } } }`,
			[]string{"setUserTwoFactor"}, []string{"p2", "p3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := service.Do(t, tc.query, nil)
			if r.Status != 200 || len(r.Errors) != len(tc.wantNull) {
				t.Fatalf("status %d, errors %+v; want 200 and %d errors", r.Status, r.Errors, len(tc.wantNull))
			}
			var data map[string]json.RawMessage
			if err := json.Unmarshal(r.Data, &data); err != nil || data == nil {
				t.Fatalf("data = %s (%v), want an object", r.Data, err)
			}
			for i, field := range tc.wantNull {
				if e := r.Errors[i]; e.Code() != "FORBIDDEN" || fmt.Sprint(e.Path) != fmt.Sprint([]any{field}) {
					t.Errorf("error %d = %+v, want FORBIDDEN at [%s]", i, e, field)
				}
				if string(data[field]) != "null" {
					t.Errorf("data.%s = %s, want null", field, data[field])
				}
			}
			for alias, raw := range data {
				var p userPayload
				if slices.Contains(tc.wantNull, alias) || json.Unmarshal(raw, &p) != nil {
					continue
				}
				if p.User == nil || len(p.UserErrors) > 0 {
					t.Errorf("data.%s = %s, want the created user", alias, raw)
				}
			}
			for _, id := range tc.wantUsers {
				if u := getUser(t, admin, id); u == nil || u.TwoFactor.Web {
					t.Errorf("user %s = %+v, want created with web off", id, u)
				}
			}
		})
	}
	if got := getSettings(t, admin); got.Defaults.Web {
		t.Error("the forbidden defaults change was written")
	}
}

// TestExpectedUpdatedAt: both settings mutations write when
// expectedUpdatedAt is the updatedAt last read (or absent), and answer
// CONFLICT with the current settings, writing nothing, when it is stale.
func TestExpectedUpdatedAt(t *testing.T) {
	s := apptest.Start(t)
	mutations := []struct {
		name, query, field string
		input              map[string]any
	}{
		{"general", mUpdateGeneral, "updateGeneralSettings", map[string]any{"deliveryMethod": "EMAIL_ONLY"}},
		{"defaults", mUpdateDefaults, "updateDefaultSettings", map[string]any{"web": true}},
	}
	cases := []struct {
		name      string
		expected  func(read settingsT) any // nil: leave the field out
		wantWrite bool
	}{
		{"absent", nil, true},
		{"as read", func(r settingsT) any { return r.UpdatedAt }, true},
		{"stale", func(r settingsT) any { return shiftMillis(t, r.UpdatedAt, -1) }, false},
		{"in the future", func(r settingsT) any { return shiftMillis(t, r.UpdatedAt, 1) }, false},
	}
	for _, m := range mutations {
		for _, tc := range cases {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				admin := s.Admin(t, testenv.Company(t))
				before := getSettings(t, admin)
				input := map[string]any{}
				for k, v := range m.input {
					input[k] = v
				}
				if tc.expected != nil {
					input["expectedUpdatedAt"] = tc.expected(before)
				}
				p := mutate[settingsPayload](t, admin, m.query, m.field, input)
				after, events := getSettings(t, admin), len(allEvents(t, admin, nil))
				if tc.wantWrite {
					if len(p.UserErrors) > 0 || after == before || events != 1 {
						t.Errorf("payload %+v; settings %+v → %+v; %d audit rows; want one write", p, before, after, events)
					}
					return
				}
				want := userError{Field: []string{"input", "expectedUpdatedAt"}, Code: "CONFLICT"}
				if len(p.UserErrors) != 1 || fmt.Sprint(p.UserErrors[0].Field) != fmt.Sprint(want.Field) || p.UserErrors[0].Code != want.Code {
					t.Errorf("userErrors = %+v, want one CONFLICT at %v", p.UserErrors, want.Field)
				}
				if p.Settings == nil || *p.Settings != before {
					t.Errorf("payload settings = %+v, want the current %+v", p.Settings, before)
				}
				if after != before || events != 0 {
					t.Errorf("a conflict wrote: %+v → %+v, %d audit rows", before, after, events)
				}
			})
		}
	}
}

// shiftMillis moves a DateTime string by n milliseconds.
func shiftMillis(t *testing.T, at string, n int) string {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		t.Fatal(err)
	}
	return v.Add(time.Duration(n) * time.Millisecond).Format(time.RFC3339Nano)
}
