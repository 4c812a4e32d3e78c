package users_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/models"
)

// TestSwitchesAreGenericOverApps names no app: for every app in the table,
// its default, a new user's switch, SetTwoFactor, the filter and the bulk
// switch each touch that app alone, and the audit rows carry it by name.
// An app added to the table without its column mapping fails here.
func TestSwitchesAreGenericOverApps(t *testing.T) {
	ctx := context.Background()
	for _, a := range apps.All() {
		t.Run(string(a), func(t *testing.T) {
			e := newEnv(t)
			if _, err := e.settings.UpdateDefaults(ctx, e.admin, settings.DefaultsUpdate{Defaults: map[apps.App]bool{a: true}}); err != nil {
				t.Fatal(err)
			}
			ch := lastChange(t, e, audit.DefaultSettingsChanged)
			if len(ch.After) != 1 || ch.After[string(a)] != true || ch.Before[string(a)] != false {
				t.Errorf("defaults audit = %+v, want %s false -> true alone", ch, a)
			}
			u, err := e.svc.Create(ctx, e.admin, users.NewUser{ID: "u1"})
			if err != nil {
				t.Fatal(err)
			}
			wantOnly(t, "created", u, a, true)
			created, _ := lastChange(t, e, audit.UserCreated).After["twoFactor"].(map[string]any)
			for _, b := range apps.All() {
				if created[string(b)] != (a == b) {
					t.Errorf("created audit twoFactor = %v, want only %s on", created, a)
				}
			}
			if len(created) != len(apps.All()) {
				t.Errorf("created audit twoFactor = %v, want one key per app", created)
			}
			if u, err = e.svc.SetTwoFactor(ctx, e.admin, "u1", a, false); err != nil {
				t.Fatal(err)
			}
			wantOnly(t, "switched off", u, a, false)
			switched := lastChange(t, e, audit.UserTwoFactorDisabled)
			if switched.Before["enabled"] != true || switched.After["enabled"] != false || lastApp(t, e) != string(a) {
				t.Errorf("switch audit = %+v app %q, want %s true -> false", switched, lastApp(t, e), a)
			}
			checkFilterAndBulk(t, e, a)
		})
	}
}

// checkFilterAndBulk: the filter on a's switch finds u1 by that switch
// alone, and the bulk switch turns a on for u1 and nothing else.
func checkFilterAndBulk(t *testing.T, e env, a apps.App) {
	t.Helper()
	ctx := context.Background()
	for _, on := range []bool{true, false} {
		page, err := e.svc.List(ctx, e.admin, users.ListRequest{
			Filter: &users.Filter{TwoFactor: &users.TwoFactorFilter{App: a, Enabled: on}}})
		if err != nil {
			t.Fatal(err)
		}
		if found := len(page.Users) == 1; found == on {
			t.Errorf("filter %s=%v found %d users; u1 has every switch off", a, on, len(page.Users))
		}
	}
	n, err := e.svc.SetTwoFactorFor(ctx, e.admin, users.Switch{App: a, Enabled: true, IDs: []string{"u1"}})
	if err != nil || n != 1 {
		t.Fatalf("bulk switch: %d, %v; want 1", n, err)
	}
	u, err := e.svc.ByID(ctx, e.co, "u1")
	if err != nil {
		t.Fatal(err)
	}
	wantOnly(t, "bulk switched on", u, a, true)
	if lastApp(t, e) != string(a) {
		t.Errorf("bulk audit app %q, want %q", lastApp(t, e), a)
	}
}

// wantOnly checks that u's switch for a is on and every other app's off,
// or, with on false, that every switch is off.
func wantOnly(t *testing.T, what string, u users.User, a apps.App, on bool) {
	t.Helper()
	if len(u.TwoFactor) != len(apps.All()) {
		t.Errorf("%s: TwoFactor = %v, want one entry per app", what, u.TwoFactor)
	}
	for _, b := range apps.All() {
		if got, want := u.TwoFactor[b], on && a == b; got != want {
			t.Errorf("%s: %s switch = %v, want %v", what, b, got, want)
		}
	}
}

// lastChange is the details of the company's newest audit row, which must
// have the action want.
func lastChange(t *testing.T, e env, want audit.Action) audit.Change {
	t.Helper()
	r := lastRow(t, e)
	if r.Action != string(want) {
		t.Fatalf("newest audit row is %s, want %s", r.Action, want)
	}
	var ch audit.Change
	if err := json.Unmarshal([]byte(r.Details), &ch); err != nil {
		t.Fatal(err)
	}
	return ch
}

func lastApp(t *testing.T, e env) string {
	t.Helper()
	if r := lastRow(t, e); r.App != nil {
		return *r.App
	}
	return ""
}

func lastRow(t *testing.T, e env) models.AuditEvent {
	t.Helper()
	var r models.AuditEvent
	if err := e.db.Where("company_id = ?", e.co).Order("id DESC").Take(&r).Error; err != nil {
		t.Fatal(err)
	}
	return r
}
