package settings_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/audit/audittest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

type env struct {
	db   *gorm.DB
	log  *audit.Log
	svc  *settings.Service // with the real log
	co   string
	root auth.Caller
}

func newEnv(t *testing.T) env {
	t.Helper()
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	co := testenv.Company(t)
	return env{db: b.DB, log: log, svc: settings.NewService(b.DB, log), co: co,
		root: auth.Caller{UserID: "root", Company: co, Role: auth.RoleAdmin, Name: "Root"}}
}

func (e env) auditRows(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := e.db.Model(&models.AuditEvent{}).Where("company_id = ?", e.co).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func (e env) settingsRows(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := e.db.Model(&models.CompanySettings{}).Where("company_id = ?", e.co).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

func (e env) current(t *testing.T, tx *gorm.DB) models.CompanySettings {
	t.Helper()
	var row models.CompanySettings
	if err := tx.Where("company_id = ?", e.co).Take(&row).Error; err != nil {
		t.Fatal(err)
	}
	return row
}

func method(m settings.DeliveryMethod) *settings.DeliveryMethod { return &m }

func TestAuditFailureUndoesTheChange(t *testing.T) {
	on := true
	cases := []struct {
		name   string
		change func(*settings.Service, auth.Caller) error
		inTx   func(models.CompanySettings) bool // the change as seen inside the transaction
	}{
		{"UpdateGeneral method", func(s *settings.Service, c auth.Caller) error {
			_, err := s.UpdateGeneral(context.Background(), c, settings.GeneralUpdate{DeliveryMethod: method(settings.EmailOnly)})
			return err
		}, func(r models.CompanySettings) bool { return r.DeliveryMethod == string(settings.EmailOnly) }},
		{"UpdateGeneral contact", func(s *settings.Service, c auth.Caller) error {
			_, err := s.UpdateGeneral(context.Background(), c, settings.GeneralUpdate{
				SetContact: true, Contact: &settings.ContactPerson{Name: "Jane", Email: "jane@example.com"},
			})
			return err
		}, func(r models.CompanySettings) bool { return r.ContactName != nil && *r.ContactName == "Jane" }},
		{"UpdateDefaults", func(s *settings.Service, c auth.Caller) error {
			_, err := s.UpdateDefaults(context.Background(), c, settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Manager: on, apps.Web: on}})
			return err
		}, func(r models.CompanySettings) bool { return r.Default(apps.Web) && r.Default(apps.Manager) }},
	}
	for _, tc := range cases {
		for _, firstUse := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/first use %v", tc.name, firstUse), func(t *testing.T) {
				e := newEnv(t)
				var before settings.Settings
				if !firstUse {
					var err error
					if before, err = e.svc.Get(context.Background(), e.root); err != nil {
						t.Fatal(err)
					}
				}
				fl := &audittest.FailingLog{Log: e.log, T: t}
				fl.InTx = func(tx *gorm.DB) {
					if !tc.inTx(e.current(t, tx)) {
						t.Error("the change is not in the transaction when the audit row is written")
					}
				}
				err := tc.change(settings.NewService(e.db, fl), e.root)
				if !errors.Is(err, audittest.ErrInjected) {
					t.Fatalf("err = %v, want the injected failure", err)
				}
				if fl.Writes != 1 {
					t.Fatalf("audit writes = %d, want 1", fl.Writes)
				}
				if fl.Announced != 0 {
					t.Errorf("a rolled-back row was announced")
				}
				if n := e.auditRows(t); n != 0 {
					t.Errorf("%d audit rows left, want 0", n)
				}
				if firstUse {
					// Even the defaults row inserted by the change is gone.
					if n := e.settingsRows(t); n != 0 {
						t.Errorf("%d settings rows left, want 0", n)
					}
					return
				}
				after, err := e.svc.Get(context.Background(), e.root)
				if err != nil {
					t.Fatal(err)
				}
				if after.DeliveryMethod != before.DeliveryMethod || after.Contact != nil ||
					!maps.Equal(after.Defaults, before.Defaults) ||
					!after.UpdatedAt.Equal(before.UpdatedAt) {
					t.Errorf("settings = %+v, want unchanged %+v", after, before)
				}
			})
		}
	}

	// With the real log the same changes land, each with its row.
	e := newEnv(t)
	for _, tc := range cases {
		if err := tc.change(e.svc, e.root); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	if n := e.auditRows(t); n != int64(len(cases)) {
		t.Errorf("%d audit rows, want %d", n, len(cases))
	}
}

func TestDefaultsOnFirstUse(t *testing.T) {
	e := newEnv(t)
	s, err := e.svc.ForCompany(context.Background(), e.co)
	if err != nil {
		t.Fatal(err)
	}
	if s.Company != e.co || s.DeliveryMethod != settings.SMSWithEmailBackup || s.Contact != nil || s.Defaults[apps.Web] || s.Defaults[apps.Manager] || s.UpdatedAt.IsZero() {
		t.Errorf("first use = %+v", s)
	}
	again, err := e.svc.Get(context.Background(), e.root)
	if err != nil || !reflect.DeepEqual(again, s) {
		t.Errorf("second read = %+v, %v; want %+v", again, err, s)
	}
	if n := e.settingsRows(t); n != 1 {
		t.Errorf("%d settings rows", n)
	}
	if n := e.auditRows(t); n != 0 {
		t.Errorf("%d audit rows", n)
	}
}

func TestOnlyAdmins(t *testing.T) {
	e := newEnv(t)
	on := true
	for _, role := range []auth.Role{auth.RoleService, auth.RoleUser, ""} {
		c := auth.Caller{UserID: "x", Company: e.co, Role: role}
		_, err1 := e.svc.Get(context.Background(), c)
		_, err2 := e.svc.UpdateGeneral(context.Background(), c, settings.GeneralUpdate{DeliveryMethod: method(settings.EmailOnly)})
		_, err3 := e.svc.UpdateDefaults(context.Background(), c, settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Web: on}})
		for i, err := range []error{err1, err2, err3} {
			if !errors.Is(err, auth.ErrForbidden) {
				t.Errorf("role %q call %d: err = %v, want ErrForbidden", role, i, err)
			}
		}
	}
	if n := e.settingsRows(t) + e.auditRows(t); n != 0 {
		t.Errorf("denied calls wrote %d rows", n)
	}
}

func TestInvalidGeneralUpdate(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		u    settings.GeneralUpdate
		want []string // codes
	}{
		{"unknown method", settings.GeneralUpdate{DeliveryMethod: method("PIGEON")}, []string{validation.CodeInvalidValue}},
		{"bad contact", settings.GeneralUpdate{SetContact: true, Contact: &settings.ContactPerson{Name: "", Email: "x", Phone: "1"}},
			[]string{validation.CodeRequired, validation.CodeInvalidEmail, validation.CodeInvalidPhone}},
		{"unreachable contact", settings.GeneralUpdate{SetContact: true, Contact: &settings.ContactPerson{Name: "Jane"}},
			[]string{validation.CodeRequired}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.svc.UpdateGeneral(context.Background(), e.root, tc.u)
			var verr validation.Errors
			if !errors.As(err, &verr) {
				t.Fatalf("err = %v, want validation errors", err)
			}
			var got []string
			for _, fe := range verr {
				got = append(got, fe.Code)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("codes = %v, want %v", got, tc.want)
			}
		})
	}
	if n := e.settingsRows(t) + e.auditRows(t); n != 0 {
		t.Errorf("invalid updates wrote %d rows", n)
	}
}

// TestConcurrentUpdatesChain: concurrent changes are serialised, so each
// audit row's "before" is the previous row's "after" and the last "after"
// is the stored state.
func TestConcurrentUpdatesChain(t *testing.T) {
	e := newEnv(t)
	const workers, each = 8, 6
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				v := (w+i)%2 == 0
				u := settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Web: v}}
				if w%2 == 1 {
					u = settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Manager: v, apps.Web: v}}
				}
				if _, err := e.svc.UpdateDefaults(context.Background(), e.root, u); err != nil {
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
	if err := e.db.Where("company_id = ?", e.co).Order("id ASC").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("no audit rows")
	}
	state := map[string]bool{"web": false, "manager": false}
	for _, r := range rows {
		var ch struct{ Before, After map[string]bool }
		if err := json.Unmarshal([]byte(r.Details), &ch); err != nil {
			t.Fatal(err)
		}
		if len(ch.After) == 0 {
			t.Fatalf("row %d records no change: %s", r.ID, r.Details)
		}
		for k, v := range ch.Before {
			if state[k] != v {
				t.Fatalf("row %d: before %s=%v, but the previous state was %v", r.ID, k, v, state[k])
			}
			if ch.After[k] == v {
				t.Fatalf("row %d records %s=%v as a change to itself", r.ID, k, v)
			}
		}
		for k, v := range ch.After {
			state[k] = v
		}
	}
	got, err := e.svc.Get(context.Background(), e.root)
	if err != nil {
		t.Fatal(err)
	}
	if got.Defaults[apps.Web] != state["web"] || got.Defaults[apps.Manager] != state["manager"] {
		t.Errorf("stored %v/%v, audit log ends at %v", got.Defaults[apps.Web], got.Defaults[apps.Manager], state)
	}
}
