package users_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/models"
)

// TestUpsertReadsDefaultsInItsTransaction: users created by upsertUsers
// while the defaults flip get the defaults in force when their
// USER_CREATED row was written, by the audit log's order, as with
// createUser. Each batch also updates a user of the worker's previous
// batch, so creations and updates share transactions.
func TestUpsertReadsDefaultsInItsTransaction(t *testing.T) {
	e := newEnv(t)
	const workers, batches, size, flips = 4, 8, 5, 40
	svc := auth.Caller{UserID: "platform", Company: e.co, Role: auth.RoleService}
	var wg sync.WaitGroup
	errs := make(chan error, workers*batches+flips)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				if _, err := e.svc.Upsert(context.Background(), svc, upsertBatch(w, b, size)); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range flips {
			web, manager := i%2 == 0, i%4 < 2
			if _, err := e.settings.UpdateDefaults(context.Background(), e.admin, settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Web: web, apps.Manager: manager}}); err != nil {
				errs <- err
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := e.count(t, &models.User{}); n != workers*batches*size {
		t.Fatalf("%d users, want %d", n, workers*batches*size)
	}
	checkDefaultsByAuditOrder(t, e)
}

// upsertBatch is worker w's batch b: size new users, and (after the
// first batch) a new display name for the first user of batch b-1.
func upsertBatch(w, b, size int) []users.NewUser {
	items := make([]users.NewUser, 0, size+1)
	for i := range size {
		items = append(items, users.NewUser{ID: fmt.Sprintf("w%d-b%d-%d", w, b, i)})
	}
	if b > 0 {
		name := fmt.Sprintf("renamed in batch %d", b)
		items = append(items, users.NewUser{ID: fmt.Sprintf("w%d-b%d-0", w, b-1), DisplayName: name})
	}
	return items
}

// TestConcurrentUpsertSameIDs: calls that share ids, each in its own
// order, all succeed. Each id is created once, and the audit log holds one
// USER_CREATED row per id and one USER_UPDATED row per real change.
func TestConcurrentUpsertSameIDs(t *testing.T) {
	e := newEnv(t)
	const workers, ids = 6, 400
	svc := auth.Caller{UserID: "platform", Company: e.co, Role: auth.RoleService}
	var wg sync.WaitGroup
	results := make([][]users.UpsertResult, workers)
	errs := make([]error, workers)
	start := make(chan struct{})
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			items := make([]users.NewUser, ids)
			for i := range ids {
				j := (i*7 + w*131) % ids // a different order per worker
				if w%2 == 1 {
					j = ids - 1 - j
				}
				items[i] = users.NewUser{ID: fmt.Sprintf("u%03d", j), DisplayName: fmt.Sprintf("from %d", w)}
			}
			<-start
			results[w], errs[w] = e.svc.Upsert(context.Background(), svc, items)
		}()
	}
	close(start)
	wg.Wait()
	count := map[users.UpsertStatus]int{}
	for w := range workers {
		if errs[w] != nil {
			t.Fatalf("worker %d: %v", w, errs[w])
		}
		for _, r := range results[w] {
			count[r.Status]++
		}
	}
	if count[users.Created] != ids {
		t.Errorf("%d CREATED results, want %d (%v)", count[users.Created], ids, count)
	}
	var created, updated int64
	e.db.Model(&models.AuditEvent{}).Where("action = ?", "USER_CREATED").Count(&created)
	e.db.Model(&models.AuditEvent{}).Where("action = ?", "USER_UPDATED").Count(&updated)
	if created != ids || updated != int64(count[users.Updated]) {
		t.Errorf("audit: %d USER_CREATED, %d USER_UPDATED; want %d and %d", created, updated, ids, count[users.Updated])
	}
}
