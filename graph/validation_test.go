package graph_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/models"
)

// fe is an expected user error: the field path and the code.
type fe struct {
	field string // dot-separated
	code  string
}

func (e fe) String() string { return e.field + ":" + e.code }

func gotErrors(ue []userError) []fe {
	out := make([]fe, len(ue))
	for i, u := range ue {
		out[i] = fe{strings.Join(u.Field, "."), u.Code}
	}
	return out
}

// rowCount counts a company's rows of model m, straight from the database.
func rowCount(t *testing.T, s *apptest.Server, m any, company string) int64 {
	t.Helper()
	var n int64
	if err := s.Backends.DB.Model(m).Where("company_id = ?", company).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

var (
	longEmail  = strings.Repeat("a", 250) + "@x.com"                                                                                              // 256 characters
	maxEmail   = strings.Repeat("a", 64) + "@" + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 63) + ".com" // 254
	maxName    = strings.Repeat("é", 200)
	longName   = strings.Repeat("é", 201)
	maxID      = strings.Repeat("i", 128)
	longID     = strings.Repeat("i", 129)
	badPhones  = []string{"37120000000", "+0123456789", "+1 555 0100", "+1234567890123456", "+123456", "+1-555-0100", "++37120000000", "+3712000000a"}
	badEmails  = []string{"not-an-email", "Jane <jane@example.com>", "jane@localhost", "jane@example.com.", "@example.com", "jane@", "jane@@example.com", "jane doe@example.com", " jane@example.com"}
	goodEmails = []string{"jane@example.com", "jane.doe+2fa@mail.example.co.uk", maxEmail}
	goodPhones = []string{"+37120000000", "+1234567", "+123456789012345"}
)

func TestCreateUserValidation(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	type tc struct {
		name  string
		input map[string]any
		want  []fe
	}
	cases := []tc{
		{"empty id", map[string]any{"id": ""}, []fe{{"input.id", "REQUIRED"}}},
		{"long id", map[string]any{"id": longID}, []fe{{"input.id", "TOO_LONG"}}},
		{"id with space", map[string]any{"id": "a b"}, []fe{{"input.id", "INVALID_FORMAT"}}},
		{"id with tab", map[string]any{"id": "a\tb"}, []fe{{"input.id", "INVALID_FORMAT"}}},
		{"id with NUL", map[string]any{"id": "a\x00b"}, []fe{{"input.id", "INVALID_FORMAT"}}},
		{"id with DEL", map[string]any{"id": "a\x7fb"}, []fe{{"input.id", "INVALID_FORMAT"}}},
		{"long email", map[string]any{"id": "u", "email": longEmail}, []fe{{"input.email", "TOO_LONG"}}},
		{"blank display name", map[string]any{"id": "u", "displayName": "   "}, []fe{{"input.displayName", "REQUIRED"}}},
		{"long display name", map[string]any{"id": "u", "displayName": longName}, []fe{{"input.displayName", "TOO_LONG"}}},
		{"display name with newline", map[string]any{"id": "u", "displayName": "a\nb"}, []fe{{"input.displayName", "INVALID_FORMAT"}}},
		{"display name with escape", map[string]any{"id": "u", "displayName": "a\x1b[31mb"}, []fe{{"input.displayName", "INVALID_FORMAT"}}},
		{"everything wrong", map[string]any{"id": "", "email": "x", "phone": "y", "displayName": " "},
			[]fe{{"input.id", "REQUIRED"}, {"input.email", "INVALID_EMAIL"}, {"input.phone", "INVALID_PHONE"}, {"input.displayName", "REQUIRED"}}},
	}
	for _, e := range badEmails {
		cases = append(cases, tc{"email " + e, map[string]any{"id": "u", "email": e}, []fe{{"input.email", "INVALID_EMAIL"}}})
	}
	for _, p := range badPhones {
		cases = append(cases, tc{"phone " + p, map[string]any{"id": "u", "phone": p}, []fe{{"input.phone", "INVALID_PHONE"}}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			co := testenv.Company(t)
			admin := s.Admin(t, co)
			p := mutate[userPayload](t, admin, mCreateUser, "createUser", c.input)
			if got := gotErrors(p.UserErrors); !reflect.DeepEqual(got, c.want) {
				t.Errorf("userErrors = %v, want %v", got, c.want)
			}
			for _, u := range p.UserErrors {
				if u.Message == "" {
					t.Errorf("%v has no message", u.Field)
				}
			}
			if p.User != nil {
				t.Errorf("user = %+v, want null", *p.User)
			}
			if n := rowCount(t, s, &models.User{}, co); n != 0 {
				t.Errorf("%d users written", n)
			}
			if n := rowCount(t, s, &models.AuditEvent{}, co); n != 0 {
				t.Errorf("%d audit rows written", n)
			}
		})
	}

	// The bounds themselves are allowed.
	valid := []map[string]any{
		{"id": maxID},
		{"id": "u", "displayName": maxName},
		{"id": "u", "email": "", "phone": "", "displayName": ""}, // empty means absent
		{"id": "ünïcode-ид"},
	}
	for _, e := range goodEmails {
		valid = append(valid, map[string]any{"id": "u", "email": e})
	}
	for _, p := range goodPhones {
		valid = append(valid, map[string]any{"id": "u", "phone": p})
	}
	for i, in := range valid {
		t.Run(fmt.Sprintf("valid %d", i), func(t *testing.T) {
			co := testenv.Company(t)
			u := createUser(t, s.Admin(t, co), in)
			if u.ID != in["id"] {
				t.Errorf("id = %q", u.ID)
			}
			for k, v := range in {
				var got *string
				switch k {
				case "email":
					got = u.Email
				case "phone":
					got = u.Phone
				case "displayName":
					got = u.DisplayName
				default:
					continue
				}
				if v == "" && got != nil || v != "" && str(got) != v {
					t.Errorf("%s = %s, want %q", k, str(got), v)
				}
			}
			if n := rowCount(t, s, &models.AuditEvent{}, co); n != 1 {
				t.Errorf("%d audit rows, want 1", n)
			}
		})
	}
}

func TestUpdateGeneralSettingsValidation(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	type tc struct {
		name    string
		contact map[string]any
		want    []fe
	}
	cp := func(name string, more ...string) map[string]any {
		m := map[string]any{"name": name}
		for i := 0; i+1 < len(more); i += 2 {
			m[more[i]] = more[i+1]
		}
		return m
	}
	cases := []tc{
		{"empty name", cp("", "email", "a@example.com"), []fe{{"input.contactPerson.name", "REQUIRED"}}},
		{"blank name", cp(" \t ", "email", "a@example.com"), []fe{{"input.contactPerson.name", "REQUIRED"}}},
		{"long name", cp(longName, "email", "a@example.com"), []fe{{"input.contactPerson.name", "TOO_LONG"}}},
		{"name with control", cp("a\x01b", "email", "a@example.com"), []fe{{"input.contactPerson.name", "INVALID_FORMAT"}}},
		{"long email", cp("Jane", "email", longEmail), []fe{{"input.contactPerson.email", "TOO_LONG"}}},
		{"no way to reach", cp("Jane"), []fe{{"input.contactPerson", "REQUIRED"}}},
		{"empty ways to reach", cp("Jane", "email", "", "phone", ""), []fe{{"input.contactPerson", "REQUIRED"}}},
		{"nothing at all", cp(""), []fe{{"input.contactPerson.name", "REQUIRED"}, {"input.contactPerson", "REQUIRED"}}},
		{"everything wrong", cp("", "email", "x", "phone", "y"),
			[]fe{{"input.contactPerson.name", "REQUIRED"}, {"input.contactPerson.email", "INVALID_EMAIL"}, {"input.contactPerson.phone", "INVALID_PHONE"}}},
		{"good email, bad phone", cp("Jane", "email", "a@example.com", "phone", "12345"), []fe{{"input.contactPerson.phone", "INVALID_PHONE"}}},
	}
	for _, e := range badEmails {
		cases = append(cases, tc{"email " + e, cp("Jane", "email", e), []fe{{"input.contactPerson.email", "INVALID_EMAIL"}}})
	}
	for _, p := range badPhones {
		cases = append(cases, tc{"phone " + p, cp("Jane", "phone", p), []fe{{"input.contactPerson.phone", "INVALID_PHONE"}}})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			co := testenv.Company(t)
			admin := s.Admin(t, co)
			before := updateGeneral(t, admin, map[string]any{
				"deliveryMethod": "EMAIL_ONLY",
				"contactPerson":  cp("Old Contact", "email", "old@example.com"),
			})
			// The valid method change in the same input is refused too.
			p := mutate[settingsPayload](t, admin, mUpdateGeneral, "updateGeneralSettings",
				map[string]any{"deliveryMethod": "SMS_WITH_EMAIL_BACKUP", "contactPerson": c.contact})
			if got := gotErrors(p.UserErrors); !reflect.DeepEqual(got, c.want) {
				t.Errorf("userErrors = %v, want %v", got, c.want)
			}
			for _, u := range p.UserErrors {
				if u.Message == "" {
					t.Errorf("%v has no message", u.Field)
				}
			}
			if p.Settings != nil {
				t.Errorf("settings = %+v, want null", *p.Settings)
			}
			if got := getSettings(t, admin); !reflect.DeepEqual(got, before) {
				t.Errorf("settings changed to %+v", got)
			}
			if n := rowCount(t, s, &models.AuditEvent{}, co); n != 1 {
				t.Errorf("%d audit rows, want only the setup's 1", n)
			}
		})
	}

	t.Run("bounds are allowed", func(t *testing.T) {
		co := testenv.Company(t)
		admin := s.Admin(t, co)
		var inputs []map[string]any
		for _, e := range goodEmails {
			inputs = append(inputs, cp(maxName, "email", e))
		}
		for _, p := range goodPhones {
			inputs = append(inputs, cp("Jane", "phone", p))
		}
		for _, in := range inputs {
			got := updateGeneral(t, admin, map[string]any{"contactPerson": in})
			c := got.General.ContactPerson
			if c == nil || c.Name != in["name"] || (in["email"] != nil && str(c.Email) != in["email"]) || (in["phone"] != nil && str(c.Phone) != in["phone"]) {
				t.Errorf("contact = %+v, want %v", c, in)
			}
		}
	})

	t.Run("unknown delivery method", func(t *testing.T) {
		co := testenv.Company(t)
		admin := s.Admin(t, co)
		r := admin.Do(t, mUpdateGeneral, map[string]any{"input": map[string]any{"deliveryMethod": "CARRIER_PIGEON"}})
		if len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Message, "CARRIER_PIGEON") {
			t.Errorf("errors = %+v, want one naming the value", r.Errors)
		}
		if n := rowCount(t, s, &models.AuditEvent{}, co); n != 0 {
			t.Errorf("%d audit rows written", n)
		}
		if got := getSettings(t, admin); got.General.DeliveryMethod != "SMS_WITH_EMAIL_BACKUP" {
			t.Errorf("method = %s", got.General.DeliveryMethod)
		}
	})
}

// TestQueryArgumentValidation: query-side input errors are BAD_USER_INPUT
// with the same field detail as a payload's user errors.
func TestQueryArgumentValidation(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	admin := s.Admin(t, testenv.Company(t))
	r := admin.Do(t, qUsers, map[string]any{"query": strings.Repeat("q", 201)})
	wantCode(t, r, "BAD_USER_INPUT")
	ue, _ := r.Errors[0].Extensions["userErrors"].([]any)
	if len(ue) != 1 || !strings.Contains(fmt.Sprint(ue[0]), "TOO_LONG") || !strings.Contains(fmt.Sprint(ue[0]), "query") {
		t.Errorf("extensions.userErrors = %v", r.Errors[0].Extensions["userErrors"])
	}
	if r := admin.Do(t, qUsers, map[string]any{"query": strings.Repeat("q", 200)}); len(r.Errors) > 0 {
		t.Errorf("a 200-character query failed: %+v", r.Errors)
	}
	r = admin.Do(t, qAudit, map[string]any{"first": 101})
	wantCode(t, r, "BAD_USER_INPUT")
	if ue, _ := r.Errors[0].Extensions["userErrors"].([]any); len(ue) != 1 || !strings.Contains(fmt.Sprint(ue[0]), "first") {
		t.Errorf("extensions.userErrors = %v", r.Errors[0].Extensions["userErrors"])
	}
}
