package audit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/models"
)

func TestParseRetention(t *testing.T) {
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", audit.DefaultRetention, true},
		{"400d", 400 * 24 * time.Hour, true},
		{" 30d ", 30 * 24 * time.Hour, true},
		{"36h", 36 * time.Hour, true},
		{"24h", 24 * time.Hour, true},
		{"off", 0, true},
		{"0", 0, false},  // keep nothing, or everything? refused
		{"0d", 0, false}, // below the minimum
		{"400s", 0, false},
		{"23h59m", 0, false},
		{"-5d", 0, false},
		{"400", 0, false},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"99999999999999d", 0, false},
		{"OFF", 0, false},
		{"1d12h", 0, false},
	}
	for _, tc := range cases {
		got, err := audit.ParseRetention(tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseRetention(%q) = %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// count is the number of company's rows of category.
func count(t testing.TB, db *gorm.DB, company string, category audit.Category) int {
	t.Helper()
	var n int64
	if err := db.Model(&models.AuditEvent{}).Where("company_id = ? AND category = ?", company, string(category)).
		Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return int(n)
}

func runOnce(t testing.TB, r *audit.Retention) int {
	t.Helper()
	n, err := r.RunOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRetentionRemovesOldSignInRows drives the clock: sign-in rows older
// than the retention go, in batches and across companies; settings rows
// of any age stay; the remaining chain checks from the checkpoint, new
// rows link to it, and tampering afterwards is still named. A row that
// does not link is never removed: retention keeps the evidence.
func TestRetentionRemovesOldSignInRows(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	now := time.Date(2032, 6, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	keep := 400 * 24 * time.Hour
	company, small, fresh := testenv.Company(t), testenv.Company(t), testenv.Company(t)
	old := now.Add(-keep - 100*24*time.Hour)

	var events []*audit.Event
	for i := range 2300 {
		events = append(events, authEvent(company, i, old.Add(time.Duration(i)*time.Second)))
		if i%23 == 0 {
			events = append(events, settingsEvent(company, i, old)) // as old, but never removed
		}
	}
	recent := authEvent(company, 0, now.Add(-24*time.Hour))
	late := authEvent(company, 1, old) // arrived late: older than the row before it in the chain
	events = append(events, recent, late)
	for i := range 10 {
		events = append(events, authEvent(company, i, now.Add(-time.Duration(i)*time.Hour)))
	}
	writeMany(t, b.DB, log, events)
	writeMany(t, b.DB, log, []*audit.Event{authEvent(small, 0, old), authEvent(small, 1, old), authEvent(small, 2, now)})
	writeMany(t, b.DB, log, []*audit.Event{authEvent(fresh, 0, now), settingsEvent(fresh, 0, old)})

	r := audit.NewRetention(log, keep, clock)
	if n := runOnce(t, r); n != 2300+2 {
		t.Fatalf("removed %d rows, want %d", n, 2300+2)
	}
	if got := count(t, b.DB, company, audit.Settings); got != 100 {
		t.Errorf("%d settings rows left, want all 100", got)
	}
	if got := count(t, b.DB, company, audit.Authentication); got != 12 {
		t.Errorf("%d sign-in rows left, want 12 (recent, the late one behind it, and 10 more)", got)
	}
	wantOK(t, verify(t, log, company, audit.Window{}), 112)
	wantOK(t, verify(t, log, small, audit.Window{}), 1)
	wantOK(t, verify(t, log, fresh, audit.Window{}), 2)
	var cp models.AuditCheckpoint
	if err := b.DB.Where("company_id = ? AND category = 'AUTHENTICATION'", company).First(&cp).Error; err != nil {
		t.Fatalf("no checkpoint: %v", err)
	}
	if cp.LastID != events[len(events)-13].ID || cp.Hash == "" || !cp.UpdatedAt.Equal(now) {
		t.Errorf("checkpoint %+v, want the last removed row %d at %v", cp, events[len(events)-13].ID, now)
	}
	if n := runOnce(t, r); n != 0 {
		t.Errorf("a second run removed %d rows", n)
	}

	// New rows link to the remaining chain; changes are still named.
	writeMany(t, b.DB, log, []*audit.Event{authEvent(company, 99, now)})
	wantOK(t, verify(t, log, company, audit.Window{Category: audit.Authentication}), 13)
	exec(t, b.DB, `UPDATE audit_events SET details = '{}' WHERE company_id = ? AND id = ?`, company, recent.ID)
	wantBroken(t, verify(t, log, company, audit.Window{}), recent.ID)

	// Much later everything has expired, but the changed row does not
	// link, so it and every row after it stay; the other companies' rows
	// go.
	now = now.Add(2 * keep)
	if n := runOnce(t, r); n != 2 {
		t.Errorf("removed %d rows, want the 2 of the other companies and none from the broken row on", n)
	}
	wantBroken(t, verify(t, log, company, audit.Window{}), recent.ID)
	if got := count(t, b.DB, company, audit.Authentication); got != 13 {
		t.Errorf("%d sign-in rows left, want 13", got)
	}
	if got := count(t, b.DB, company, audit.Settings); got != 100 {
		t.Errorf("%d settings rows left, want 100", got)
	}
	// A chain emptied by retention continues from its checkpoint.
	if got := count(t, b.DB, small, audit.Authentication); got != 0 {
		t.Fatalf("%d rows of %s left, want none", got, small)
	}
	writeMany(t, b.DB, log, []*audit.Event{authEvent(small, 5, now)})
	wantOK(t, verify(t, log, small, audit.Window{}), 1)
}

// TestRetentionRunsOnManyInstancesAtOnce: runs that overlap (every
// instance has the job) remove each row once and leave a valid chain.
func TestRetentionRunsOnManyInstancesAtOnce(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	now := time.Date(2032, 6, 1, 0, 0, 0, 0, time.UTC)
	company := testenv.Company(t)
	var events []*audit.Event
	for i := range 3500 {
		events = append(events, authEvent(company, i, now.Add(-30*24*time.Hour+time.Duration(i)*time.Second)))
	}
	for i := range 5 {
		events = append(events, authEvent(company, i, now))
	}
	writeMany(t, b.DB, log, events)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
	)
	for range 4 {
		wg.Go(func() {
			n, err := audit.NewRetention(log, 24*time.Hour, func() time.Time { return now }).RunOnce(context.Background())
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != 3500 {
		t.Errorf("the runs removed %d rows together, want 3500", total)
	}
	wantOK(t, verify(t, log, company, audit.Window{}), 5)
}

// TestRetentionRunStopsWithItsContext: Run removes at once, then waits
// for its ticker until the context ends.
func TestRetentionRunStopsWithItsContext(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	now := time.Date(2032, 6, 1, 0, 0, 0, 0, time.UTC)
	company := testenv.Company(t)
	writeMany(t, b.DB, log, []*audit.Event{authEvent(company, 0, now.Add(-48*time.Hour)), authEvent(company, 1, now)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		audit.NewRetention(log, 24*time.Hour, func() time.Time { return now }).Run(ctx, time.Hour)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for count(t, b.DB, company, audit.Authentication) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the old row was not removed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	wantOK(t, verify(t, log, company, audit.Window{}), 1)
}
