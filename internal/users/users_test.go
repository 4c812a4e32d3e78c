package users_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/audit/audittest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

type env struct {
	db       *gorm.DB
	log      *audit.Log
	settings *settings.Service
	svc      *users.Service // with the real log
	co       string
	admin    auth.Caller
}

func newEnv(t *testing.T) env {
	t.Helper()
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	st := settings.NewService(b.DB, log)
	co := testenv.Company(t)
	return env{db: b.DB, log: log, settings: st, svc: users.NewService(b.DB, log, st), co: co,
		admin: auth.Caller{UserID: "root", Company: co, Role: auth.RoleAdmin, Name: "Root"}}
}

func (e env) count(t *testing.T, m any) int64 {
	t.Helper()
	var n int64
	if err := e.db.Model(m).Where("company_id = ?", e.co).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func (e env) userRow(t *testing.T, tx *gorm.DB, id string) (models.User, bool) {
	t.Helper()
	var row models.User
	err := tx.Where("company_id = ? AND id = ?", e.co, id).Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return row, true
}

func TestCreateAuditFailureLeavesNothing(t *testing.T) {
	e := newEnv(t)
	fl := &audittest.FailingLog{Log: e.log, T: t}
	fl.InTx = func(tx *gorm.DB) {
		if _, ok := e.userRow(t, tx, "u1"); !ok {
			t.Error("the new user is not in the transaction when the audit row is written")
		}
	}
	_, err := users.NewService(e.db, fl, e.settings).Create(context.Background(), e.admin,
		users.NewUser{ID: "u1", Email: "u1@example.com", DisplayName: "User One"})
	if !errors.Is(err, audittest.ErrInjected) {
		t.Fatalf("err = %v, want the injected failure", err)
	}
	if fl.Writes != 1 || fl.Announced != 0 {
		t.Errorf("writes = %d, announced = %d; want 1, 0", fl.Writes, fl.Announced)
	}
	if _, ok := e.userRow(t, e.db, "u1"); ok {
		t.Error("the user exists after the failure")
	}
	if n := e.count(t, &models.AuditEvent{}); n != 0 {
		t.Errorf("%d audit rows left", n)
	}
	// The id is free: a working create succeeds with exactly one row.
	u, err := e.svc.Create(context.Background(), e.admin, users.NewUser{ID: "u1", Email: "u1@example.com"})
	if err != nil || u.ID != "u1" {
		t.Fatalf("create after the failure: %+v, %v", u, err)
	}
	if n := e.count(t, &models.AuditEvent{}); n != 1 {
		t.Errorf("%d audit rows, want 1", n)
	}
}

func TestSetTwoFactorAuditFailureLeavesNothing(t *testing.T) {
	for _, app := range []users.App{users.Web, users.Manager} {
		for _, enabled := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s=%v", app, enabled), func(t *testing.T) {
				e := newEnv(t)
				if _, err := e.svc.Create(context.Background(), e.admin, users.NewUser{ID: "u1"}); err != nil {
					t.Fatal(err)
				}
				if !enabled { // start from on, so that off is a change
					if _, err := e.svc.SetTwoFactor(context.Background(), e.admin, "u1", app, true); err != nil {
						t.Fatal(err)
					}
				}
				before, _ := e.userRow(t, e.db, "u1")
				rows := e.count(t, &models.AuditEvent{})

				fl := &audittest.FailingLog{Log: e.log, T: t}
				fl.InTx = func(tx *gorm.DB) {
					r, _ := e.userRow(t, tx, "u1")
					if got := r.TwoFactor(app); got != enabled {
						t.Error("the switch is not changed in the transaction when the audit row is written")
					}
				}
				_, err := users.NewService(e.db, fl, e.settings).SetTwoFactor(context.Background(), e.admin, "u1", app, enabled)
				if !errors.Is(err, audittest.ErrInjected) {
					t.Fatalf("err = %v, want the injected failure", err)
				}
				if fl.Writes != 1 || fl.Announced != 0 {
					t.Errorf("writes = %d, announced = %d; want 1, 0", fl.Writes, fl.Announced)
				}
				after, _ := e.userRow(t, e.db, "u1")
				if !maps.Equal(switches(after), switches(before)) || !after.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("user = %+v, want unchanged %+v", after, before)
				}
				if n := e.count(t, &models.AuditEvent{}); n != rows {
					t.Errorf("%d audit rows, want %d", n, rows)
				}
			})
		}
	}
}

func TestCreateFollowsDefaults(t *testing.T) {
	e := newEnv(t)
	on, off := true, false
	if _, err := e.settings.UpdateDefaults(context.Background(), e.admin, settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Manager: on, apps.Web: off}}); err != nil {
		t.Fatal(err)
	}
	u, err := e.svc.Create(context.Background(), auth.Caller{UserID: "svc", Company: e.co, Role: auth.RoleService},
		users.NewUser{ID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if u.TwoFactor[apps.Web] || !u.TwoFactor[apps.Manager] || u.CreatedAt.IsZero() || u.Company != e.co {
		t.Errorf("user = %+v", u)
	}
}

func TestRoles(t *testing.T) {
	e := newEnv(t)
	if _, err := e.svc.Create(context.Background(), e.admin, users.NewUser{ID: "u1"}); err != nil {
		t.Fatal(err)
	}
	service := auth.Caller{UserID: "svc", Company: e.co, Role: auth.RoleService}
	user := auth.Caller{UserID: "u1", Company: e.co, Role: auth.RoleUser}
	ctx := context.Background()

	if _, err := e.svc.SetTwoFactor(ctx, service, "u1", users.Web, true); !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("service SetTwoFactor: %v", err)
	}
	if _, err := e.svc.SetTwoFactor(ctx, user, "u1", users.Web, true); !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("user SetTwoFactor on themself: %v", err)
	}
	if _, err := e.svc.Create(ctx, user, users.NewUser{ID: "u2"}); !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("user Create: %v", err)
	}
	if _, err := e.svc.List(ctx, user, users.ListRequest{}); !errors.Is(err, auth.ErrForbidden) {
		t.Errorf("user List: %v", err)
	}
	if u, err := e.svc.Get(ctx, user, "u1"); err != nil || u.ID != "u1" {
		t.Errorf("user Get themself: %+v, %v", u, err)
	}
	if _, err := e.svc.Get(ctx, auth.Caller{UserID: "u9", Company: e.co, Role: auth.RoleUser}, "u1"); !errors.Is(err, users.ErrNotFound) {
		t.Errorf("user Get someone else: %v, want ErrNotFound", err)
	}
	if u, err := e.svc.Get(ctx, service, "u1"); err != nil || u.ID != "u1" {
		t.Errorf("service Get: %+v, %v", u, err)
	}
	other := auth.Caller{UserID: "root", Company: testenv.Company(t), Role: auth.RoleAdmin}
	if _, err := e.svc.Get(ctx, other, "u1"); !errors.Is(err, users.ErrNotFound) {
		t.Errorf("other company's admin Get: %v, want ErrNotFound", err)
	}
	if _, err := e.svc.SetTwoFactor(ctx, other, "u1", users.Web, true); !errors.Is(err, users.ErrNotFound) {
		t.Errorf("other company's admin SetTwoFactor: %v, want ErrNotFound", err)
	}
	if _, err := e.svc.SetTwoFactor(ctx, e.admin, "u1", users.App("desktop"), true); !errors.As(err, new(validation.Errors)) {
		t.Errorf("unknown app: %v, want validation errors", err)
	}
	if u, _ := e.userRow(t, e.db, "u1"); u.TwoFactor(apps.Web) {
		t.Error("a denied call turned web on")
	}
	if n := e.count(t, &models.AuditEvent{}); n != 1 {
		t.Errorf("%d audit rows, want 1", n)
	}
}

// TestConcurrentCreateSameID: exactly one of many concurrent creates of
// one id wins; the rest get ErrAlreadyExists, and one audit row is written.
func TestConcurrentCreateSameID(t *testing.T) {
	e := newEnv(t)
	const n = 10
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = e.svc.Create(context.Background(), e.admin, users.NewUser{ID: "same", DisplayName: fmt.Sprintf("Try %d", i)})
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, users.ErrAlreadyExists):
			t.Errorf("err = %v, want ErrAlreadyExists", err)
		}
	}
	if won != 1 {
		t.Errorf("%d creates succeeded, want 1", won)
	}
	if c := e.count(t, &models.AuditEvent{}); c != 1 {
		t.Errorf("%d audit rows, want 1", c)
	}
}

// TestConcurrentSwitchesChain: concurrent switches are serialised, so the
// audit rows of one user and app form a chain that ends at the stored value.
func TestConcurrentSwitchesChain(t *testing.T) {
	e := newEnv(t)
	if _, err := e.svc.Create(context.Background(), e.admin, users.NewUser{ID: "u1"}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 6
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				app := []users.App{users.Web, users.Manager}[(w+i)%2]
				if _, err := e.svc.SetTwoFactor(context.Background(), e.admin, "u1", app, (w*i)%3 != 0); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var rows []models.AuditEvent
	if err := e.db.Where("company_id = ? AND app IS NOT NULL", e.co).Order("id ASC").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	state := map[string]bool{"web": false, "manager": false}
	for _, r := range rows {
		var ch struct{ Before, After struct{ Enabled bool } }
		if err := json.Unmarshal([]byte(r.Details), &ch); err != nil {
			t.Fatal(err)
		}
		app := *r.App
		if ch.Before.Enabled != state[app] || ch.After.Enabled == ch.Before.Enabled {
			t.Fatalf("row %d %s: %s after state %v", r.ID, app, r.Details, state[app])
		}
		want := string(audit.UserTwoFactorDisabled)
		if ch.After.Enabled {
			want = string(audit.UserTwoFactorEnabled)
		}
		if r.Action != want {
			t.Fatalf("row %d: action %s for %s", r.ID, r.Action, r.Details)
		}
		state[app] = ch.After.Enabled
	}
	u, _ := e.userRow(t, e.db, "u1")
	if u.TwoFactor(apps.Web) != state["web"] || u.TwoFactor(apps.Manager) != state["manager"] {
		t.Errorf("stored web=%v manager=%v, audit log ends at %v", u.TwoFactor(apps.Web), u.TwoFactor(apps.Manager), state)
	}
}

func TestListQueryEscapes(t *testing.T) {
	e := newEnv(t)
	for _, n := range []users.NewUser{
		{ID: "a_b"}, {ID: "axb"}, {ID: "p%q"}, {ID: "pzq"}, {ID: `s\t`}, {ID: "MiXeD", Email: "Case@Example.COM"},
	} {
		if _, err := e.svc.Create(context.Background(), e.admin, n); err != nil {
			t.Fatal(err)
		}
	}
	for query, want := range map[string]string{
		"_": "[a_b]", "a_b": "[a_b]", "%": "[p%q]", "p%q": "[p%q]", `\`: `[s\t]`, `s\t`: `[s\t]`,
		"mixed": "[MiXeD]", "case@example.com": "[MiXeD]", "CASE@": "[MiXeD]",
	} {
		p, err := e.svc.List(context.Background(), e.admin, users.ListRequest{Query: query})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, u := range p.Users {
			got = append(got, u.ID)
		}
		if fmt.Sprint(got) != want {
			t.Errorf("List(%q) = %v, want %s", query, got, want)
		}
	}
}

// TestListQueryNonASCII: a query matches names outside ASCII, at least in
// the case they are stored in, on every database.
func TestListQueryNonASCII(t *testing.T) {
	e := newEnv(t)
	for _, n := range []users.NewUser{{ID: "u1", DisplayName: "Ärzte Ölmann"}, {ID: "u2", DisplayName: "Zoë Ångström"}, {ID: "u3", DisplayName: "Plain"}} {
		if _, err := e.svc.Create(context.Background(), e.admin, n); err != nil {
			t.Fatal(err)
		}
	}
	cases := map[string]string{"Ärzte": "[u1]", "Ölmann": "[u1]", "Ångström": "[u2]", "zoë": "[u2]", "ZOë": "[u2]"}
	if testenv.Real() {
		// PostgreSQL folds case beyond ASCII; SQLite's LOWER does not.
		cases["ärzte ö"], cases["ölmann"], cases["ZOË"] = "[u1]", "[u1]", "[u2]"
	}
	for query, want := range cases {
		p, err := e.svc.List(context.Background(), e.admin, users.ListRequest{Query: query})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, u := range p.Users {
			got = append(got, u.ID)
		}
		if fmt.Sprint(got) != want {
			t.Errorf("List(%q) = %v, want %s", query, got, want)
		}
	}
}

// TestListQueryLength: the query is bounded in characters like the names
// it searches, so a full-length display name can be searched for.
func TestListQueryLength(t *testing.T) {
	e := newEnv(t)
	name := strings.Repeat("ж", validation.MaxNameLen)
	if _, err := e.svc.Create(context.Background(), e.admin, users.NewUser{ID: "u1", DisplayName: name}); err != nil {
		t.Fatal(err)
	}
	p, err := e.svc.List(context.Background(), e.admin, users.ListRequest{Query: name})
	if err != nil || len(p.Users) != 1 {
		t.Fatalf("List(200 characters) = %+v, %v", p.Users, err)
	}
	_, err = e.svc.List(context.Background(), e.admin, users.ListRequest{Query: name + "ж"})
	var verr validation.Errors
	if !errors.As(err, &verr) || verr[0].Code != validation.CodeTooLong {
		t.Errorf("List(201 characters): %v, want TOO_LONG", err)
	}
}

// switches is a row's 2FA switch for every app.
func switches(r models.User) map[apps.App]bool {
	out := map[apps.App]bool{}
	for _, a := range apps.All() {
		out[a] = r.TwoFactor(a)
	}
	return out
}
