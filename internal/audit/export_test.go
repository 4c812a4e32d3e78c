package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/testenv"
)

// exportRows spans two and a half batches, so the walk crosses batch
// edges and ends on a short one.
const exportRows = 2*audit.ExportBatch + audit.ExportBatch/2

var exportActions = []audit.Action{
	audit.UserCreated, audit.CodeSent, audit.UserTwoFactorEnabled,
	audit.CodeRejected, audit.FailedAttemptsLimitReached, audit.GeneralSettingsChanged,
}

// exportLog is a company's log as written, oldest first, next to another
// company's rows.
type exportLog struct {
	log            *audit.Log
	company, other string
	events         []audit.Event
	base           time.Time // event i was created at base + i seconds
}

// exportEvent is row i: actors, targets, apps and categories cycle, so
// every filter matches some rows and misses others.
func exportEvent(company string, base time.Time, i int) *audit.Event {
	e := &audit.Event{
		Company:   company,
		Action:    exportActions[i%len(exportActions)],
		Actor:     audit.Party{ID: fmt.Sprintf("user-%d", i%7), Name: fmt.Sprintf("User %d", i%7), Role: auth.RoleAdmin},
		App:       []string{"", "web", "manager"}[i%3],
		Details:   json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
		CreatedAt: base.Add(time.Duration(i) * time.Second),
	}
	if i%4 != 0 {
		e.Target = &audit.Party{ID: fmt.Sprintf("user-%d", i%5)}
	}
	return e
}

// seedExport writes exportRows events for one company in chunks of 100,
// each chunk followed by ten of another company's.
func seedExport(t *testing.T) exportLog {
	t.Helper()
	b := testenv.Open(t)
	x := exportLog{
		log: audit.NewLog(b.DB, nil, nil), company: testenv.Company(t), other: testenv.Company(t),
		base: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),
	}
	err := b.DB.Transaction(func(tx *gorm.DB) error {
		for from := 0; from < exportRows; from += 100 {
			var mine, theirs []*audit.Event
			for i := from; i < from+100; i++ {
				mine = append(mine, exportEvent(x.company, x.base, i))
				if i%10 == 0 {
					theirs = append(theirs, exportEvent(x.other, x.base, i))
				}
			}
			if err := x.log.WriteMany(tx, mine); err != nil {
				return err
			}
			if err := x.log.WriteMany(tx, theirs); err != nil {
				return err
			}
			for _, e := range mine {
				x.events = append(x.events, *e)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
	return x
}

func (x exportLog) admin() auth.Caller {
	return auth.Caller{UserID: "admin", Company: x.company, Role: auth.RoleAdmin}
}

// export collects what Export yields.
func (x exportLog) export(t *testing.T, c auth.Caller, f audit.Filter) []audit.Event {
	t.Helper()
	var got []audit.Event
	if err := x.log.Export(context.Background(), c, f, func(e audit.Event) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatalf("export: %v", err)
	}
	return got
}

func TestExportFilters(t *testing.T) {
	x := seedExport(t)
	at := func(i int) *time.Time { v := x.base.Add(time.Duration(i) * time.Second); return &v }
	for _, tc := range []struct {
		name string
		f    audit.Filter
	}{
		{"everything", audit.Filter{}},
		{"actions", audit.Filter{Actions: []audit.Action{audit.CodeSent, audit.UserCreated}}},
		{"authentication", audit.Filter{Category: audit.Authentication}},
		{"settings", audit.Filter{Category: audit.Settings}},
		{"user as actor or target", audit.Filter{UserID: "user-3"}},
		{"app", audit.Filter{App: "manager"}},
		{"from", audit.Filter{From: at(1500)}},
		{"to", audit.Filter{To: at(1001)}},
		{"from and to", audit.Filter{From: at(999), To: at(2001)}},
		{"all at once", audit.Filter{Actions: []audit.Action{audit.CodeSent}, Category: audit.Authentication,
			UserID: "user-1", App: "web", From: at(100), To: at(2400)}},
		{"nothing matches", audit.Filter{UserID: "nobody"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []audit.Event
			for _, e := range x.events {
				if tc.f.Match(e) {
					want = append(want, e)
				}
			}
			if (len(want) == 0) != (tc.name == "nothing matches") || len(want) == len(x.events) && tc.name != "everything" {
				t.Fatalf("the case matches %d of %d rows: it tests nothing", len(want), len(x.events))
			}
			got := x.export(t, x.admin(), tc.f)
			if len(got) != len(want) {
				t.Fatalf("%d events, want %d", len(got), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("event %d (oldest first) = %+v, want %+v", i, got[i], want[i])
				}
			}
		})
	}
}

func TestExportOtherCompany(t *testing.T) {
	x := seedExport(t)
	got := x.export(t, auth.Caller{UserID: "admin", Company: x.other, Role: auth.RoleAdmin}, audit.Filter{})
	if len(got) != exportRows/10 {
		t.Fatalf("the other company exports %d rows, want %d", len(got), exportRows/10)
	}
	for _, e := range got {
		if e.Company != x.other {
			t.Fatalf("row %d of %s in %s's export", e.ID, e.Company, x.other)
		}
	}
}

func TestExportAdminOnly(t *testing.T) {
	x := seedExport(t)
	for _, role := range []auth.Role{auth.RoleUser, auth.RoleService, ""} {
		called := false
		err := x.log.Export(context.Background(), auth.Caller{UserID: "u", Company: x.company, Role: role}, audit.Filter{},
			func(audit.Event) error { called = true; return nil })
		if !errors.Is(err, auth.ErrForbidden) || called {
			t.Errorf("role %q: err %v, called %v; want ErrForbidden and no rows", role, err, called)
		}
	}
}

func TestExportStops(t *testing.T) {
	x := seedExport(t)
	errGone := errors.New("client gone")
	t.Run("when fn fails", func(t *testing.T) {
		calls := 0
		err := x.log.Export(context.Background(), x.admin(), audit.Filter{}, func(audit.Event) error {
			calls++
			if calls == audit.ExportBatch+500 {
				return errGone
			}
			return nil
		})
		if !errors.Is(err, errGone) || calls != audit.ExportBatch+500 {
			t.Errorf("err %v after %d calls; want errGone after %d", err, calls, audit.ExportBatch+500)
		}
	})
	t.Run("when the context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		calls := 0
		err := x.log.Export(ctx, x.admin(), audit.Filter{}, func(audit.Event) error {
			calls++
			if calls == 10 {
				cancel()
			}
			return nil
		})
		if !errors.Is(err, context.Canceled) || calls != 10 {
			t.Errorf("err %v after %d calls; want context.Canceled after 10", err, calls)
		}
	})
	t.Run("a context ended before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := x.log.Export(ctx, x.admin(), audit.Filter{}, func(audit.Event) error {
			t.Fatal("a row was read with an ended context")
			return nil
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err %v, want context.Canceled", err)
		}
	})
}

// TestExportSnapshot: rows written while an export runs are not in it, so
// exporting a busy log ends.
func TestExportSnapshot(t *testing.T) {
	x := seedExport(t)
	calls := 0
	err := x.log.Export(context.Background(), x.admin(), audit.Filter{}, func(audit.Event) error {
		calls++
		if calls%audit.ExportBatch == 1 {
			return x.log.Record(context.Background(), exportEvent(x.company, x.base, exportRows+calls), nil)
		}
		return nil
	})
	if err != nil || calls != exportRows {
		t.Fatalf("err %v, %d rows; want the %d rows there were at the start", err, calls, exportRows)
	}
	if got := x.export(t, x.admin(), audit.Filter{}); len(got) != exportRows+3 {
		t.Errorf("a second export has %d rows, want %d", len(got), exportRows+3)
	}
}

func TestExportEmpty(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	err := log.Export(context.Background(), auth.Caller{UserID: "a", Company: testenv.Company(t), Role: auth.RoleAdmin},
		audit.Filter{}, func(audit.Event) error { t.Fatal("a row in an empty log"); return nil })
	if err != nil {
		t.Fatal(err)
	}
}
