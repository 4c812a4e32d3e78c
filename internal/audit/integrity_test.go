package audit_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/audit/hashchain"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

// settingsEvent is row i of a company's settings chain.
func settingsEvent(company string, i int, at time.Time) *audit.Event {
	e := &audit.Event{
		Company: company, Action: audit.UserTwoFactorEnabled, CreatedAt: at,
		Actor:  audit.Party{ID: "admin", Name: "Ann", Role: auth.RoleAdmin},
		Target: &audit.Party{ID: fmt.Sprintf("user-%d", i)},
		App:    "web", Details: audit.Details(map[string]int{"n": i}),
	}
	if i%3 == 0 {
		e.Actor.Name, e.App = "", "" // NULL columns are chained too
	}
	return e
}

// authEvent is row i of a company's sign-in chain.
func authEvent(company string, i int, at time.Time) *audit.Event {
	return &audit.Event{
		Company: company, Action: audit.CodeRejected, CreatedAt: at,
		Actor:  audit.Party{ID: "svc", Role: auth.RoleService},
		Target: &audit.Party{ID: fmt.Sprintf("user-%d", i%7)},
		App:    "web", Details: audit.Details(map[string]int{"attempt": i%3 + 1, "max": 3}),
	}
}

// writeMany writes events (one company) in one transaction, and fails the
// test on error.
func writeMany(t testing.TB, db *gorm.DB, log *audit.Log, events []*audit.Event) {
	t.Helper()
	for len(events) > 0 {
		n := min(len(events), 500)
		if err := db.Transaction(func(tx *gorm.DB) error { return log.WriteMany(tx, events[:n]) }); err != nil {
			t.Fatalf("write audit events: %v", err)
		}
		events = events[n:]
	}
}

// verify checks company over w and fails the test on error.
func verify(t testing.TB, log *audit.Log, company string, w audit.Window) audit.Integrity {
	t.Helper()
	res, err := log.Verify(context.Background(), company, w)
	if err != nil {
		t.Fatalf("verify %s: %v", company, err)
	}
	return res
}

// wantOK fails unless res is ok over n rows.
func wantOK(t testing.TB, res audit.Integrity, n int) {
	t.Helper()
	if !res.OK || res.FirstBroken != nil || res.CheckedRows != n {
		t.Fatalf("integrity = ok %v, %d rows, broken %v; want ok over %d rows", res.OK, res.CheckedRows, brokenID(res), n)
	}
}

// wantBroken fails unless res names the row id.
func wantBroken(t testing.TB, res audit.Integrity, id int64) {
	t.Helper()
	if res.OK || res.FirstBroken == nil || res.FirstBroken.ID != id {
		t.Fatalf("integrity = ok %v, broken %v; want row %d named", res.OK, brokenID(res), id)
	}
}

func brokenID(res audit.Integrity) any {
	if res.FirstBroken == nil {
		return nil
	}
	return res.FirstBroken.ID
}

func exec(t testing.TB, db *gorm.DB, sql string, args ...any) {
	t.Helper()
	if err := db.Exec(sql, args...).Error; err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestEveryWriterExtendsTheChains: rows written one at a time, in bulk
// (past one check batch) and through AppendOnce, in two categories and
// beside another company's rows, form valid chains with a hash each.
func TestEveryWriterExtendsTheChains(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	company, other := testenv.Company(t), testenv.Company(t)
	err := b.DB.Transaction(func(tx *gorm.DB) error {
		for i := range 10 {
			if err := log.Write(tx, settingsEvent(company, i, time.Time{})); err != nil {
				return err
			}
			if err := log.Write(tx, authEvent(other, i, time.Time{})); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var bulk []*audit.Event
	for i := range 2500 {
		if i%4 == 0 {
			bulk = append(bulk, authEvent(company, i, time.Time{}))
		} else {
			bulk = append(bulk, settingsEvent(company, i, time.Now().Add(-time.Duration(i)*time.Second)))
		}
	}
	writeMany(t, b.DB, log, bulk)
	var outbox []*audit.Event
	for i := range 5 {
		e := authEvent(company, i, time.Now().Add(time.Duration(i)*time.Microsecond+123*time.Nanosecond))
		e.UID = fmt.Sprintf("uid-%s-%d", company, i)
		outbox = append(outbox, e)
	}
	if _, err := log.AppendOnce(context.Background(), outbox); err != nil {
		t.Fatal(err)
	}
	var unhashed int64
	if err := b.DB.Model(&models.AuditEvent{}).Where("company_id IN ? AND hash IS NULL", []string{company, other}).
		Count(&unhashed).Error; err != nil || unhashed != 0 {
		t.Fatalf("%d rows have no hash (%v)", unhashed, err)
	}
	wantOK(t, verify(t, log, company, audit.Window{}), 10+2500+5)
	wantOK(t, verify(t, log, company, audit.Window{Category: audit.Authentication}), 625+5)
	wantOK(t, verify(t, log, company, audit.Window{Category: audit.Settings}), 10+1875)
	wantOK(t, verify(t, log, other, audit.Window{}), 10)
}

// tamperings change one company's chain of 30 settings rows (ids[0..29])
// the way someone with write access to the table could, and name the row
// the check must report.
var tamperings = []struct {
	name   string
	tamper func(t *testing.T, db *gorm.DB, company string, ids []int64)
	broken int // index into ids
}{
	{"details changed", func(t *testing.T, db *gorm.DB, c string, ids []int64) {
		exec(t, db, `UPDATE audit_events SET details = '{"n":999}' WHERE company_id = ? AND id = ?`, c, ids[10])
	}, 10},
	{"first row changed", func(t *testing.T, db *gorm.DB, c string, ids []int64) {
		exec(t, db, `UPDATE audit_events SET action = 'USER_CREATED' WHERE company_id = ? AND id = ?`, c, ids[0])
	}, 0},
	{"last row changed", func(t *testing.T, db *gorm.DB, c string, ids []int64) {
		exec(t, db, `UPDATE audit_events SET target_user_id = 'someone' WHERE company_id = ? AND id = ?`, c, ids[29])
	}, 29},
	{"NULL name made empty", func(t *testing.T, db *gorm.DB, c string, ids []int64) {
		exec(t, db, `UPDATE audit_events SET actor_name = '' WHERE company_id = ? AND id = ?`, c, ids[12])
	}, 12},
	{"time moved", func(t *testing.T, db *gorm.DB, c string, ids []int64) {
		exec(t, db, `UPDATE audit_events SET created_at = ? WHERE company_id = ? AND id = ?`,
			time.Now().UTC().Add(-time.Hour), c, ids[7])
	}, 7},
	{"row deleted", func(t *testing.T, db *gorm.DB, c string, ids []int64) {
		exec(t, db, `DELETE FROM audit_events WHERE company_id = ? AND id = ?`, c, ids[10])
	}, 11},
	{"hash cleared", func(t *testing.T, db *gorm.DB, c string, ids []int64) {
		exec(t, db, `UPDATE audit_events SET hash = NULL WHERE company_id = ? AND id = ?`, c, ids[15])
	}, 15},
	{"pair swapped", func(t *testing.T, db *gorm.DB, c string, ids []int64) {
		swapRows(t, db, c, ids[10], ids[11])
	}, 10},
	{"row changed and rehashed alone", func(t *testing.T, db *gorm.DB, c string, ids []int64) {
		// A forger who recomputes the changed row's hash is caught by the
		// next row, unless they rewrite every row after it too.
		var rows []models.AuditEvent
		if err := db.Where("company_id = ? AND id IN ?", c, ids[9:11]).Order("id").Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		rows[1].Details = `{"n":999}`
		h, err := hashchain.Next(*rows[0].Hash, hashchain.Row{
			Company: rows[1].CompanyID, Category: rows[1].Category, Action: rows[1].Action, ActorID: rows[1].ActorID,
			ActorName: rows[1].ActorName, ActorRole: rows[1].ActorRole, TargetID: rows[1].TargetUserID,
			TargetName: rows[1].TargetUserName, App: rows[1].App, Details: rows[1].Details,
			CreatedAt: rows[1].CreatedAt, UID: rows[1].UID})
		if err != nil {
			t.Fatal(err)
		}
		exec(t, db, `UPDATE audit_events SET details = ?, hash = ? WHERE company_id = ? AND id = ?`, rows[1].Details, h, c, ids[10])
	}, 11},
}

// swapRows exchanges every column but the id between two rows, hashes
// included: the same rows in another order.
func swapRows(t *testing.T, db *gorm.DB, company string, a, b int64) {
	t.Helper()
	var rows []models.AuditEvent
	if err := db.Where("company_id = ? AND id IN ?", company, []int64{a, b}).Order("id").Find(&rows).Error; err != nil || len(rows) != 2 {
		t.Fatalf("read rows to swap: %d, %v", len(rows), err)
	}
	for i, id := range []int64{a, b} {
		r := rows[1-i]
		exec(t, db, `UPDATE audit_events SET action = ?, actor_id = ?, actor_name = ?, target_user_id = ?, app = ?,
			details = ?, created_at = ?, hash = ? WHERE company_id = ? AND id = ?`,
			r.Action, r.ActorID, r.ActorName, r.TargetUserID, r.App, r.Details, r.CreatedAt, r.Hash, company, id)
	}
}

// TestTamperingIsNamed is issue 10's test: a row changed with plain SQL
// (or deleted, or moved) is named by the check, in both the domain call
// and a window around it; the other category's chain stays ok.
func TestTamperingIsNamed(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	base := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
	for _, tc := range tamperings {
		t.Run(tc.name, func(t *testing.T) {
			company := testenv.Company(t)
			events := make([]*audit.Event, 30)
			for i := range events {
				events[i] = settingsEvent(company, i, base.Add(time.Duration(i)*time.Second))
			}
			writeMany(t, b.DB, log, events)
			writeMany(t, b.DB, log, []*audit.Event{authEvent(company, 0, time.Time{})})
			ids := make([]int64, len(events))
			for i, e := range events {
				ids[i] = e.ID
			}
			wantOK(t, verify(t, log, company, audit.Window{}), 31)
			tc.tamper(t, b.DB, company, ids)
			res := verify(t, log, company, audit.Window{})
			wantBroken(t, res, ids[tc.broken])
			if res.FirstBroken.Company != company {
				t.Errorf("broken row of company %q", res.FirstBroken.Company)
			}
			wantOK(t, verify(t, log, company, audit.Window{Category: audit.Authentication}), 1)
			// A window from row 5 walks from row 4, which it checks against
			// row 3's stored hash.
			from, to := base.Add(5*time.Second), base.Add(29*time.Second)
			inWindow := verify(t, log, company, audit.Window{From: &from, Category: audit.Settings})
			if tc.broken < 4 {
				wantOK(t, inWindow, 26)
			} else {
				wantBroken(t, inWindow, ids[tc.broken])
			}
			if tc.broken >= 5 && tc.broken < 29 {
				wantBroken(t, verify(t, log, company, audit.Window{From: &from, To: &to}), ids[tc.broken])
			}
		})
	}
}

// TestWindowIsCheckableAlone: a window walks from the row before its
// first to the row after its last, each checked against the stored hash
// of the row before it, so damage further out does not fail it, damage
// next to it does, and its count is its rows and those two.
func TestWindowIsCheckableAlone(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	company := testenv.Company(t)
	base := time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)
	events := make([]*audit.Event, 30)
	for i := range events {
		events[i] = authEvent(company, i, base.Add(time.Duration(i)*time.Minute))
	}
	writeMany(t, b.DB, log, events)
	exec(t, b.DB, `UPDATE audit_events SET details = '{}' WHERE company_id = ? AND id = ?`, company, events[5].ID)
	at := func(m int) *time.Time { v := base.Add(time.Duration(m) * time.Minute); return &v }
	cases := []struct {
		name     string
		w        audit.Window
		rows     int
		brokenAt int // -1: ok
	}{
		{"after the damage", audit.Window{From: at(10), To: at(20)}, 12, -1},
		{"from only", audit.Window{From: at(10)}, 21, -1},
		{"two rows after the damage", audit.Window{From: at(7)}, 24, -1},
		{"just after the damage", audit.Window{From: at(6)}, 1, 5},
		{"before the damage", audit.Window{To: at(4)}, 5, -1},
		{"just before the damage", audit.Window{To: at(5)}, 6, 5},
		{"around the damage", audit.Window{From: at(3), To: at(8)}, 4, 5},
		{"whole log", audit.Window{}, 6, 5},
		{"nothing in it", audit.Window{From: at(100)}, 1, -1},
		{"between two rows", audit.Window{From: new(at(10).Add(time.Second)), To: at(11)}, 2, -1},
		{"before every row", audit.Window{To: new(at(0).Add(-time.Second))}, 1, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := verify(t, log, company, tc.w)
			if tc.brokenAt < 0 {
				wantOK(t, res, tc.rows)
				return
			}
			wantBroken(t, res, events[tc.brokenAt].ID)
			if res.CheckedRows != tc.rows {
				t.Errorf("checked %d rows, want %d", res.CheckedRows, tc.rows)
			}
		})
	}
}

// TestWindowEdgeBackdated is red-team finding 1: a window's first row
// backdated (or its last postdated) leaves the window by its time, and
// its details changed; the window still names it, whichever way it was
// moved out, because the rows next to the window are checked too.
func TestWindowEdgeBackdated(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	from, to := base.Add(5*time.Hour), base.Add(10*time.Hour)
	cases := []struct {
		name  string
		to    time.Time
		moved map[int]time.Time // row index → its new time
		// The rows named by the window and by the whole-chain check: the
		// window names the first changed row it walks.
		window, full int
	}{
		{"first backdated", to, map[int]time.Time{5: base.AddDate(-1, 0, 0)}, 5, 5},
		{"first two backdated", to, map[int]time.Time{5: base.AddDate(-1, 0, 0), 6: base.Add(-time.Hour)}, 6, 5},
		{"last postdated", to, map[int]time.Time{9: base.AddDate(1, 0, 0)}, 9, 9},
		{"first and last moved", to, map[int]time.Time{5: base.AddDate(-1, 0, 0), 9: base.AddDate(1, 0, 0)}, 5, 5},
		{"last of a closed window postdated", base.Add(9 * time.Hour), map[int]time.Time{8: to}, 8, 8},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := testenv.Open(t)
			log := audit.NewLog(b.DB, nil, nil)
			company := testenv.Company(t)
			events := make([]*audit.Event, 10)
			for i := range events {
				events[i] = authEvent(company, i, base.Add(time.Duration(i)*time.Hour))
			}
			writeMany(t, b.DB, log, events)
			w := audit.Window{From: &from, To: &tc.to, Category: audit.Authentication}
			if res := verify(t, log, company, w); !res.OK {
				t.Fatalf("intact window: %+v", res)
			}
			for i, at := range tc.moved {
				exec(t, b.DB, `UPDATE audit_events SET created_at = ?, details = '{"attempt":0}' WHERE company_id = ? AND id = ?`,
					at, company, events[i].ID)
			}
			wantBroken(t, verify(t, log, company, w), events[tc.window].ID)
			wantBroken(t, verify(t, log, company, audit.Window{}), events[tc.full].ID)
		})
	}
}

// TestIntegrityRefusesBadRequests: admins only, and a window that ends
// before it starts, or an unknown category, is a validation error.
func TestIntegrityRefusesBadRequests(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	ctx := context.Background()
	company := testenv.Company(t)
	for _, role := range []auth.Role{auth.RoleUser, auth.RoleService} {
		_, err := log.CheckIntegrity(ctx, auth.Caller{UserID: "u", Company: company, Role: role}, audit.Window{})
		if !errors.Is(err, auth.ErrForbidden) {
			t.Errorf("%s: %v, want ErrForbidden", role, err)
		}
	}
	admin := auth.Caller{UserID: "a", Company: company, Role: auth.RoleAdmin}
	now := time.Now()
	earlier := now.Add(-time.Second)
	for name, w := range map[string]audit.Window{
		"to before from": {From: &now, To: &earlier},
		"to equals from": {From: &now, To: &now},
		"bad category":   {Category: "EVERYTHING"},
	} {
		var verr validation.Errors
		if _, err := log.CheckIntegrity(ctx, admin, w); !errors.As(err, &verr) {
			t.Errorf("%s: %v, want validation errors", name, err)
		}
	}
	res, err := log.CheckIntegrity(ctx, admin, audit.Window{})
	if err != nil {
		t.Fatal(err)
	}
	wantOK(t, res, 0)
}

// TestUnhashedTailIsLinked: rows an older version wrote without a hash
// (during a rolling upgrade, after migration 0004) break the check until
// the next write links them into the chain.
func TestUnhashedTailIsLinked(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	company := testenv.Company(t)
	writeMany(t, b.DB, log, []*audit.Event{settingsEvent(company, 0, time.Time{}), settingsEvent(company, 1, time.Time{})})
	old := []models.AuditEvent{
		{CompanyID: company, Action: "USER_CREATED", ActorID: "a", ActorRole: "admin", Details: "{}", Category: "SETTINGS", CreatedAt: time.Now().UTC()},
		{CompanyID: company, Action: "USER_DELETED", ActorID: "a", ActorRole: "admin", Details: "{}", Category: "SETTINGS", CreatedAt: time.Now().UTC()},
	}
	if err := b.DB.Create(&old).Error; err != nil {
		t.Fatal(err)
	}
	wantBroken(t, verify(t, log, company, audit.Window{}), old[0].ID)
	writeMany(t, b.DB, log, []*audit.Event{settingsEvent(company, 2, time.Time{})})
	wantOK(t, verify(t, log, company, audit.Window{}), 5)
}
