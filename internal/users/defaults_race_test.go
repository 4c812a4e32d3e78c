package users_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/models"
)

// TestCreateReadsDefaultsInItsTransaction: users created while the defaults
// flip get the defaults in force when their USER_CREATED row was written,
// by the audit log's order (ids are ordered per company), never a value
// read before a change that the log puts earlier.
func TestCreateReadsDefaultsInItsTransaction(t *testing.T) {
	e := newEnv(t)
	const creators, each, flips = 6, 15, 40
	var wg sync.WaitGroup
	errs := make(chan error, creators*each+flips)
	for w := range creators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := e.svc.Create(context.Background(), e.admin, users.NewUser{ID: fmt.Sprintf("u%d-%d", w, i)}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range flips {
			web, manager := i%2 == 0, i%4 < 2 // both switches change, not always together
			if _, err := e.settings.UpdateDefaults(context.Background(), e.admin, settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Manager: manager, apps.Web: web}}); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkDefaultsByAuditOrder(t, e)
}

// checkDefaultsByAuditOrder replays the company's audit log in id order
// and checks each created user's stored switches against the defaults the
// log says were in force.
func checkDefaultsByAuditOrder(t *testing.T, e env) {
	t.Helper()
	var rows []models.AuditEvent
	if err := e.db.Where("company_id = ?", e.co).Order("id ASC").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	var stored []models.User
	if err := e.db.Where("company_id = ?", e.co).Find(&stored).Error; err != nil {
		t.Fatal(err)
	}
	byID := map[string]models.User{}
	for _, u := range stored {
		byID[u.ID] = u
	}
	state := map[string]bool{"web": false, "manager": false}
	created, changes := 0, 0
	for _, r := range rows {
		switch audit.Action(r.Action) {
		case audit.DefaultSettingsChanged:
			var ch struct{ After map[string]bool }
			if err := json.Unmarshal([]byte(r.Details), &ch); err != nil {
				t.Fatal(err)
			}
			for k, v := range ch.After {
				state[k] = v
			}
			changes++
		case audit.UserCreated:
			u, ok := byID[*r.TargetUserID]
			if !ok {
				t.Fatalf("audit row %d names user %q, who does not exist", r.ID, *r.TargetUserID)
			}
			if u.TwoFactor(apps.Web) != state["web"] || u.TwoFactor(apps.Manager) != state["manager"] {
				t.Errorf("user %s has web=%v manager=%v; the defaults at its audit row %d were %v",
					u.ID, u.TwoFactor(apps.Web), u.TwoFactor(apps.Manager), r.ID, state)
			}
			created++
		}
	}
	if created != len(stored) || changes == 0 {
		t.Errorf("%d USER_CREATED rows for %d users, %d default changes", created, len(stored), changes)
	}
}
