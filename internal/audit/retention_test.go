package audit_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/audit/hashchain"
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
	// The driven clock starts three retentions back, so that after it
	// moves two forward every row retention cuts is still older than a
	// day by the wall clock, as the check requires of a checkpoint.
	now := time.Now().UTC().Truncate(time.Millisecond).Add(-3 * 400 * 24 * time.Hour)
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
	var cp struct {
		LastID    int64
		Hash      string
		UpdatedAt time.Time
	}
	if err := b.DB.Table("audit_checkpoints").Where("company_id = ? AND category = 'AUTHENTICATION'", company).Take(&cp).Error; err != nil {
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
	now := time.Now().UTC().Truncate(time.Millisecond)
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
	now := time.Now().UTC().Truncate(time.Millisecond)
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

// rowOf is r's hashed fields, as a forger would compute them.
func rowOf(r models.AuditEvent) hashchain.Row {
	return hashchain.Row{
		Company: r.CompanyID, Category: r.Category, Action: r.Action, ActorID: r.ActorID,
		ActorName: r.ActorName, ActorRole: r.ActorRole, TargetID: r.TargetUserID,
		TargetName: r.TargetUserName, App: r.App, Details: r.Details, CreatedAt: r.CreatedAt, UID: r.UID,
	}
}

// forgeCheckpoint stores a checkpoint at rows[last] that records it the
// way retention does, with the hash before it.
func forgeCheckpoint(t *testing.T, db *gorm.DB, rows []models.AuditEvent, last int) {
	t.Helper()
	r, prev := rows[last], hashchain.Genesis
	if last > 0 {
		prev = *rows[last-1].Hash
	}
	enc, err := json.Marshal(rowOf(r))
	if err != nil {
		t.Fatal(err)
	}
	exec(t, db, `INSERT INTO audit_checkpoints (company_id, category, last_id, hash, prev_hash, last_row, removed, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, r.CompanyID, r.Category, r.ID, *r.Hash, prev, string(enc), last+1, time.Now().UTC())
}

// TestCheckpointHidesDeletion is red-team finding 2: a role that may
// delete rows and write the checkpoint table tried to hide deletions and
// edits behind a retention checkpoint. Rows still at or before a sign-in
// checkpoint are named; a settings checkpoint is refused (retention never
// writes one); a checkpoint must prove, by the hash of the row it records,
// that it cut an old prefix of its own chain.
func TestCheckpointHidesDeletion(t *testing.T) {
	cases := []struct {
		name     string
		category audit.Category
		age      time.Duration // of the rows
		how      tampering
		broken   int // row index named by a whole-chain check; -1: none
		problem  string
	}{
		{"sign-in row deleted, older row changed", audit.Authentication, 48 * time.Hour, deleteRow | alterRow | plainCheckpoint, 0, "does not record the row it cut"},
		{"settings row deleted, older row changed", audit.Settings, 48 * time.Hour, deleteRow | alterRow | plainCheckpoint, 2, "retention never removes settings rows"},
		{"settings checkpoint alone", audit.Settings, 48 * time.Hour, forgedCheckpoint, -1, "retention never removes settings rows"},
		{"checkpoint moved without deleting", audit.Authentication, 48 * time.Hour, forgedCheckpoint, 0, ""},
		{"recent prefix deleted", audit.Authentication, time.Hour, deletePrefix | forgedCheckpoint, -1, "less than a day old"},
		{"checkpoint records another row", audit.Authentication, 48 * time.Hour, deletePrefix | wrongRow, -1, "does not hash to its hash"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := testenv.Open(t)
			log := audit.NewLog(b.DB, nil, nil)
			company := testenv.Company(t)
			base := time.Now().UTC().Add(-tc.age)
			events := make([]*audit.Event, 10)
			for i := range events {
				if events[i] = authEvent(company, i, base.Add(time.Duration(i)*time.Second)); tc.category == audit.Settings {
					events[i] = settingsEvent(company, i, base.Add(time.Duration(i)*time.Second))
				}
			}
			writeMany(t, b.DB, log, events)
			wantOK(t, verify(t, log, company, audit.Window{}), 10)
			var rows []models.AuditEvent
			if err := b.DB.Where("company_id = ?", company).Order("id").Find(&rows).Error; err != nil {
				t.Fatal(err)
			}
			tamperCheckpoint(t, b.DB, rows, tc.how)
			for i, w := range []audit.Window{{}, {Category: tc.category}, {From: new(base.Add(9 * time.Second))}} {
				res := verify(t, log, company, w)
				if res.OK {
					t.Fatalf("window %+v: the check is ok", w)
				}
				switch whole := i < 2; { // a window names only what it walks
				case tc.broken >= 0 && whole:
					wantBroken(t, res, rows[tc.broken].ID)
				case tc.broken < 0 && res.FirstBroken != nil:
					t.Errorf("window %+v: row %d named, want none", w, res.FirstBroken.ID)
				}
				if tc.problem != "" && !strings.Contains(strings.Join(res.Problems, "; "), tc.problem) {
					t.Errorf("window %+v: problems %q, want %q", w, res.Problems, tc.problem)
				}
			}
		})
	}
}

// tampering is what TestCheckpointHidesDeletion does, as flags.
type tampering int

const (
	deleteRow tampering = 1 << iota
	alterRow
	deletePrefix
	plainCheckpoint  // only last_id and hash, like the red team's
	forgedCheckpoint // every field, as retention writes them
	wrongRow         // every field, but the recorded row altered
)

// tamperCheckpoint does to rows (10 of one chain) what how says; the
// checkpoint goes to row 8.
func tamperCheckpoint(t *testing.T, db *gorm.DB, rows []models.AuditEvent, how tampering) {
	t.Helper()
	c := rows[0].CompanyID
	if how&deleteRow != 0 {
		exec(t, db, `DELETE FROM audit_events WHERE company_id = ? AND id = ?`, c, rows[8].ID)
	}
	if how&alterRow != 0 {
		exec(t, db, `UPDATE audit_events SET details = '{"forged":true}' WHERE company_id = ? AND id = ?`, c, rows[2].ID)
	}
	if how&deletePrefix != 0 {
		exec(t, db, `DELETE FROM audit_events WHERE company_id = ? AND id <= ?`, c, rows[8].ID)
	}
	switch {
	case how&plainCheckpoint != 0:
		// An old-style checkpoint: no recorded row, no count.
		exec(t, db, `INSERT INTO audit_checkpoints (company_id, category, last_id, hash, updated_at) VALUES (?, ?, ?, ?, ?)`,
			c, rows[8].Category, rows[8].ID, *rows[8].Hash, time.Now())
	case how&forgedCheckpoint != 0:
		forgeCheckpoint(t, db, rows, 8)
	case how&wrongRow != 0:
		altered := slices.Clone(rows)
		altered[8].CreatedAt = altered[8].CreatedAt.AddDate(-1, 0, 0)
		forgeCheckpoint(t, db, altered, 8)
	}
}
