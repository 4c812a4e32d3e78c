package audit_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/models"
)

// refuseInserts makes the database refuse every audit row of company, as
// a broken chain head or a violated constraint would: a failure of that
// company alone, on either backend.
func refuseInserts(t *testing.T, db *gorm.DB, company string) {
	t.Helper()
	lit := "'" + strings.ReplaceAll(company, "'", "''") + "'"
	stmts := []string{`CREATE TRIGGER refuse_company BEFORE INSERT ON audit_events FOR EACH ROW WHEN (NEW.company_id = ` + lit +
		`) BEGIN SELECT RAISE(ABORT, 'refused'); END`}
	if store.IsPostgres(db) {
		stmts = []string{
			`CREATE FUNCTION refuse_company() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$`,
			`CREATE TRIGGER refuse_company BEFORE INSERT ON audit_events FOR EACH ROW WHEN (NEW.company_id = ` + lit +
				`) EXECUTE FUNCTION refuse_company()`,
		}
	}
	for _, s := range stmts {
		if err := db.Exec(s).Error; err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

func outboxEvent(company, uid string) *audit.Event {
	return &audit.Event{Company: company, Action: audit.CodeVerified, UID: uid,
		Actor: audit.Party{ID: "u", Role: auth.RoleUser}, Target: &audit.Party{ID: "u"}}
}

// TestAppendOnceOneCompanyFailureBlocksNoOther is the red-team finding
// "one company's failure blocks every other company's events": AppendOnce
// stopped at the first company that failed. Now every company is tried,
// the result names those stored, and the error names the one that failed.
func TestAppendOnceOneCompanyFailureBlocksNoOther(t *testing.T) {
	for _, tc := range []struct {
		name   string
		poison func(t *testing.T, db *gorm.DB, bad string, events []*audit.Event)
	}{
		{"the database refuses its rows", func(t *testing.T, db *gorm.DB, bad string, _ []*audit.Event) {
			refuseInserts(t, db, bad)
		}},
		{"an event has no uid", func(_ *testing.T, _ *gorm.DB, bad string, events []*audit.Event) {
			for _, e := range events {
				if e.Company == bad {
					e.UID = ""
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := testenv.Open(t)
			log := audit.NewLog(b.DB, nil, nil)
			prefix := testenv.Company(t)
			bad := prefix + "-bad"
			// The bad company first: before, nothing after it was tried.
			events := []*audit.Event{outboxEvent(bad, "b1"), outboxEvent(bad, "b2")}
			var good []string
			for i := range 5 {
				c := fmt.Sprintf("%s-good-%d", prefix, i)
				good = append(good, c)
				events = append(events, outboxEvent(c, c+"-1"), outboxEvent(c, c+"-2"))
			}
			tc.poison(t, b.DB, bad, events)

			res, err := log.AppendOnce(context.Background(), events)
			var ce *audit.CompanyError
			if !errors.As(err, &ce) || ce.Company != bad {
				t.Fatalf("error %v, want a CompanyError naming %s", err, bad)
			}
			if _, ok := res.Failed[bad]; !ok || len(res.Failed) != 1 {
				t.Errorf("failed companies %v, want only %s", res.Failed, bad)
			}
			for _, c := range good {
				if res.Stored[c] != 2 {
					t.Errorf("%s: stored %d (ok %v), want 2", c, res.Stored[c], res.Stored)
				}
			}
			if res.Written() != 10 {
				t.Errorf("written %d, want 10", res.Written())
			}
			var rows int64
			if err := b.DB.Model(&models.AuditEvent{}).Where("company_id LIKE ?", prefix+"-%").Count(&rows).Error; err != nil {
				t.Fatal(err)
			}
			if rows != 10 {
				t.Errorf("%d rows stored, want the good companies' 10", rows)
			}
			// Again: the good companies are stored already (0 written, still
			// reported stored), the bad one still fails.
			res, err = log.AppendOnce(context.Background(), events)
			if err == nil || res.Written() != 0 || len(res.Stored) != 5 {
				t.Errorf("second append: stored %v, err %v; want 5 companies with 0 new rows and an error", res.Stored, err)
			}
		})
	}
}
