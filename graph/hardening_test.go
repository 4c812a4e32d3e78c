package graph_test

// Regression tests for issue 8's findings 7, 8 and 12, end to end on the
// test backends. Each test is named after its finding.

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/models"
)

// hiddenChars are characters ids and names refuse, one per class.
var hiddenChars = map[string]string{
	"U+0000 NUL (Cc)":                 "\x00",
	"U+001B escape (Cc)":              "\x1b",
	"U+0085 next line (Cc)":           "\u0085",
	"U+200B zero-width space (Cf)":    "\u200b",
	"U+FEFF byte order mark (Cf)":     "\ufeff",
	"U+202E right-to-left override":   "\u202e",
	"U+2067 right-to-left isolate":    "\u2067",
	"U+200F right-to-left mark":       "\u200f",
	"U+2028 line separator (Zl)":      "\u2028",
	"U+2029 paragraph separator (Zp)": "\u2029",
	"U+FDD0 non-character":            "\ufdd0",
	"U+FFFF non-character":            "\uffff",
	"U+10FFFE non-character":          "\U0010fffe",
}

// TestLookAlikeText is issue 8, finding 8: ids and display names took
// U+200B, U+202E, U+0085 and U+2028. Each class is refused in user ids,
// display names and contact person names with INVALID_FORMAT, nothing is
// written, and accepted names are stored in NFC.
func TestLookAlikeText(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	for class, c := range hiddenChars {
		t.Run(class, func(t *testing.T) {
			for _, tc := range []struct {
				field string
				input map[string]any
			}{
				{"input.id", map[string]any{"id": "ja" + c + "ne"}},
				{"input.displayName", map[string]any{"id": "jane", "displayName": "Ja" + c + "ne"}},
			} {
				p := mutate[userPayload](t, admin, mCreateUser, "createUser", tc.input)
				if got, want := gotErrors(p.UserErrors), []fe{{tc.field, "INVALID_FORMAT"}}; !reflect.DeepEqual(got, want) {
					t.Errorf("createUser %q: userErrors %v, want %v", tc.input, got, want)
				}
			}
			p := mutate[settingsPayload](t, admin, mUpdateGeneral, "updateGeneralSettings",
				map[string]any{"contactPerson": map[string]any{"name": "IT" + c + " desk", "email": "it@example.com"}})
			if got, want := gotErrors(p.UserErrors), []fe{{"input.contactPerson.name", "INVALID_FORMAT"}}; !reflect.DeepEqual(got, want) {
				t.Errorf("contact person name: userErrors %v, want %v", got, want)
			}
		})
	}
	if n := rowCount(t, s, &models.User{}, co); n != 0 {
		t.Fatalf("refused createUsers wrote %d users", n)
	}

	u := createUser(t, admin, map[string]any{"id": "jose", "displayName": "Jose\u0301"})
	if str(u.DisplayName) != "Jos\u00e9" {
		t.Errorf("displayName %q, want the NFC %q", str(u.DisplayName), "Jos\u00e9")
	}
	set := updateGeneral(t, admin, map[string]any{"contactPerson": map[string]any{"name": "\u212bsa", "email": "it@example.com"}})
	if cp := set.General.ContactPerson; cp == nil || cp.Name != "\u00c5sa" {
		t.Errorf("contact person %+v, want the name in NFC", cp)
	}
}

// TestClaimsNotChecked is issue 8, finding 7: sub, company and name were
// taken from tokens verbatim ("ja\u202Ene\u0000\n\u001b[31m" became an
// audit actor id), and exp could be any distance ahead. Such tokens now
// get 401 UNAUTHENTICATED with a message that does not repeat the claim;
// a name that passes is normalised before it reaches the audit log.
func TestClaimsNotChecked(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	now := time.Now()
	hs256 := func(kv ...any) string {
		c := jwt.MapClaims{"sub": "alice", "company": co, "role": "admin", "exp": now.Add(time.Hour).Unix()}
		for i := 0; i < len(kv); i += 2 {
			c[kv[i].(string)] = kv[i+1]
		}
		return sign(t, jwt.SigningMethodHS256, apptest.Secret, c)
	}
	evil := "ja\u202ene\u0000\n\u001b[31m"
	cases := map[string]struct {
		token, claim string
	}{
		"sub from the report":         {hs256("sub", evil), evil},
		"company from the report":     {hs256("company", co+evil), co + evil},
		"name from the report":        {hs256("name", evil), evil},
		"sub with zero-width space":   {hs256("sub", "ali\u200bce"), "ali\u200bce"},
		"name with U+2028":            {hs256("name", "Ali\u2028ce"), "Ali\u2028ce"},
		"company with a space":        {hs256("company", co+" x"), co + " x"},
		"exp as a string":             {hs256("exp", fmt.Sprint(now.Add(time.Hour).Unix())), ""},
		"exp past AUTH_MAX_TOKEN_TTL": {hs256("exp", now.Add(721*time.Hour).Unix()), ""},
		"exp in the year 3000":        {hs256("exp", 32503680000), ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := postQuery(t, s, "Bearer "+tc.token)
			r := h.gql(t)
			if r.Status != http.StatusUnauthorized || len(r.Errors) != 1 || r.Errors[0].Code() != "UNAUTHENTICATED" {
				t.Fatalf("status %d, body %s; want 401 UNAUTHENTICATED", r.Status, h.Body)
			}
			if tc.claim != "" && strings.Contains(r.Errors[0].Message, tc.claim) {
				t.Errorf("message %q repeats the claim", r.Errors[0].Message)
			}
		})
	}

	// A name in NFD reaches the audit log in NFC.
	named := &apptest.Client{URL: s.URL + "/query", Token: hs256("name", "Jose\u0301")}
	updateDefaults(t, named, map[string]any{"web": true})
	rows := allEvents(t, s.Admin(t, co), nil)
	if len(rows) != 1 || rows[0].Actor.ID != "alice" || str(rows[0].Actor.DisplayName) != "Jos\u00e9" {
		t.Errorf("audit rows %+v, want one by alice named in NFC", rows)
	}
}

// TestAttribution is issue 8, finding 12: a lock caused by a service's
// verify was recorded with the user as the actor. The actor is now the
// caller whose verify locked, the target always the user.
func TestAttribution(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	for _, tc := range []struct {
		name, user, wantActor, wantRole string
		byService                       bool
	}{
		{"service verifies", "svc-locked", "svc-" + co, "SERVICE", true},
		{"user verifies", "self-locked", "self-locked", "USER", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLogin(t, s, co, tc.user, uniquePhone(), uniqueEmail(), "WEB")
			caller := l.user
			if tc.byService {
				caller = l.service
			}
			var v verifyPayload
			for range 3 {
				ch := l.mustIssue(t, "")
				v = verifyAs(t, caller, ch.ID, wrong(l.code(t, ch)))
			}
			wantStatus(t, "third wrong code", v, "LOCKED", 0)
			rows := waitEvents(t, l.admin, map[string]any{"actions": []string{"FAILED_ATTEMPTS_LIMIT_REACHED"}, "userId": tc.user}, 1)
			if len(rows) != 1 {
				t.Fatalf("FAILED_ATTEMPTS_LIMIT_REACHED rows: %d, want 1", len(rows))
			}
			e := rows[0]
			if e.Actor.ID != tc.wantActor || str(e.Actor.Role) != tc.wantRole {
				t.Errorf("actor %s (%s), want %s (%s)", e.Actor.ID, str(e.Actor.Role), tc.wantActor, tc.wantRole)
			}
			if e.TargetUser == nil || e.TargetUser.ID != tc.user || str(e.TargetUser.DisplayName) != "User "+tc.user {
				t.Errorf("target %+v, want the user %s", e.TargetUser, tc.user)
			}
		})
	}
}
