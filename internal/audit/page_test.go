package audit_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

const (
	logSize     = 10_000
	viaWrite    = 1_000 // rows written one by one through Log.Write
	otherEvery  = 10    // one row of another company after every 10th row
	batchInsert = 500
)

var actions = []audit.Action{audit.UserCreated, audit.UserTwoFactorEnabled, audit.UserTwoFactorDisabled, audit.GeneralSettingsChanged}

// seeded is a company's log as written, oldest first.
type seeded struct {
	company, other string
	rows           []models.AuditEvent
	base           time.Time // created_at of the first bulk row; bulk row k is base + k ms
}

// row i of the log: actors and targets cycle through overlapping user ids
// so that the userId filter matches both sides.
func row(company string, i int) models.AuditEvent {
	r := models.AuditEvent{
		CompanyID: company,
		Action:    string(actions[i%len(actions)]),
		ActorID:   fmt.Sprintf("user-%d", i%11),
		ActorRole: "admin",
		Details:   fmt.Sprintf(`{"before":{"n":%d},"after":{"n":%d}}`, i, i+1),
	}
	if i%5 != 0 {
		target := fmt.Sprintf("user-%d", i%13)
		r.TargetUserID = &target
	}
	switch i % 3 {
	case 1:
		app := "web"
		r.App = &app
	case 2:
		app := "manager"
		r.App = &app
	}
	return r
}

func eventOf(r models.AuditEvent) *audit.Event {
	e := &audit.Event{
		Company: r.CompanyID,
		Action:  audit.Action(r.Action),
		Actor:   audit.Party{ID: r.ActorID, Name: "Actor " + r.ActorID, Role: auth.Role(r.ActorRole)},
		Details: json.RawMessage(r.Details),
	}
	if r.TargetUserID != nil {
		e.Target = &audit.Party{ID: *r.TargetUserID}
	}
	if r.App != nil {
		e.App = *r.App
	}
	return e
}

// seed writes logSize rows for one company, interleaved with another
// company's rows: the first viaWrite through Log.Write in one transaction,
// the rest in batches with controlled timestamps.
func seed(t testing.TB, db *gorm.DB, log *audit.Log) seeded {
	t.Helper()
	s := seeded{company: testenv.Company(t), other: testenv.Company(t)}
	err := db.Transaction(func(tx *gorm.DB) error {
		for i := range viaWrite {
			r := row(s.company, i)
			e := eventOf(r)
			if err := log.Write(tx, e); err != nil {
				return err
			}
			if e.ID <= 0 || e.CreatedAt.IsZero() {
				return fmt.Errorf("Write did not fill id and time: %+v", e)
			}
			r.ID, r.CreatedAt = e.ID, e.CreatedAt
			s.rows = append(s.rows, r)
			if i%otherEvery == 0 {
				if err := log.Write(tx, eventOf(row(s.other, i))); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("write rows: %v", err)
	}

	s.base = time.Now().UTC().Truncate(time.Millisecond).Add(time.Hour)
	var bulk []models.AuditEvent
	for i := viaWrite; i < logSize; i++ {
		r := row(s.company, i)
		r.CreatedAt = s.base.Add(time.Duration(i-viaWrite) * time.Millisecond)
		bulk = append(bulk, r)
		if i%otherEvery == 0 {
			o := row(s.other, i)
			o.CreatedAt = r.CreatedAt
			bulk = append(bulk, o)
		}
	}
	// One transaction: on SQLite this is what makes 10k inserts fast.
	if err := db.Transaction(func(tx *gorm.DB) error { return tx.CreateInBatches(&bulk, batchInsert).Error }); err != nil {
		t.Fatalf("insert rows: %v", err)
	}
	for _, r := range bulk {
		if r.CompanyID == s.company {
			s.rows = append(s.rows, r)
		}
	}
	var n int64
	if err := db.Model(&models.AuditEvent{}).Where("company_id = ?", s.company).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	if n != logSize || len(s.rows) != logSize {
		t.Fatalf("seeded %d rows (%d recorded), want %d", n, len(s.rows), logSize)
	}
	ids := map[int64]bool{}
	for _, r := range s.rows {
		if r.ID <= 0 || ids[r.ID] {
			t.Fatalf("row id %d is missing or repeated", r.ID)
		}
		ids[r.ID] = true
	}
	return s
}

// newestFirst returns the ids of the rows that match, newest first.
func (s seeded) newestFirst(match func(models.AuditEvent) bool) []int64 {
	var out []int64
	for _, r := range s.rows {
		if match == nil || match(r) {
			out = append(out, r.ID)
		}
	}
	slices.SortFunc(out, func(a, b int64) int { return int(b - a) })
	return out
}

type walkResult struct {
	ids   []int64
	pages int
}

// walkForward follows first/after to the end, checking each page's flags.
func walkForward(t *testing.T, log *audit.Log, c auth.Caller, size int, f audit.Filter, company string) walkResult {
	t.Helper()
	var w walkResult
	req := audit.PageRequest{First: &size, Filter: f}
	for {
		if w.pages > logSize {
			t.Fatal("walk does not end")
		}
		p, err := log.List(context.Background(), c, req)
		if err != nil {
			t.Fatalf("page %d: %v", w.pages, err)
		}
		if p.HasPreviousPage != (w.pages > 0) {
			t.Fatalf("page %d: hasPreviousPage = %v", w.pages, p.HasPreviousPage)
		}
		if p.HasNextPage && len(p.Events) != size {
			t.Fatalf("page %d: %d events with more to come, want %d", w.pages, len(p.Events), size)
		}
		for _, e := range p.Events {
			if e.Company != company {
				t.Fatalf("page %d: event %d of company %s", w.pages, e.ID, e.Company)
			}
			w.ids = append(w.ids, e.ID)
		}
		w.pages++
		if !p.HasNextPage {
			return w
		}
		req.After = log.Cursor(p.Events[len(p.Events)-1])
	}
}

// walkBackward follows last/before from the end to the start.
func walkBackward(t *testing.T, log *audit.Log, c auth.Caller, size int, f audit.Filter, company string) walkResult {
	t.Helper()
	var w walkResult
	req := audit.PageRequest{Last: &size, Filter: f}
	for {
		if w.pages > logSize {
			t.Fatal("walk does not end")
		}
		p, err := log.List(context.Background(), c, req)
		if err != nil {
			t.Fatalf("page %d: %v", w.pages, err)
		}
		if p.HasNextPage != (w.pages > 0) {
			t.Fatalf("page %d: hasNextPage = %v", w.pages, p.HasNextPage)
		}
		if p.HasPreviousPage && len(p.Events) != size {
			t.Fatalf("page %d: %d events with more to come, want %d", w.pages, len(p.Events), size)
		}
		page := make([]int64, len(p.Events))
		for i, e := range p.Events {
			if e.Company != company {
				t.Fatalf("page %d: event %d of company %s", w.pages, e.ID, e.Company)
			}
			page[i] = e.ID
		}
		w.ids = append(page, w.ids...)
		w.pages++
		if !p.HasPreviousPage {
			return w
		}
		req.Before = log.Cursor(p.Events[0])
	}
}

// sameIDs reports the first difference between got and want.
func sameIDs(t *testing.T, what string, got, want []int64) {
	t.Helper()
	seen := map[int64]bool{}
	for i, id := range got {
		if seen[id] {
			t.Fatalf("%s: id %d appears twice (position %d)", what, id, i)
		}
		seen[id] = true
	}
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			t.Fatalf("%s: position %d is %d, want %d", what, i, got[i], want[i])
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d events, want %d", what, len(got), len(want))
	}
}

func TestWalkLargeLog(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	s := seed(t, b.DB, log)
	admin := auth.Caller{UserID: "admin", Company: s.company, Role: auth.RoleAdmin}
	all := s.newestFirst(nil)

	t.Run("first/after", func(t *testing.T) {
		w := walkForward(t, log, admin, 100, audit.Filter{}, s.company)
		sameIDs(t, "forward", w.ids, all)
		if w.pages != logSize/100 {
			t.Errorf("%d pages, want %d", w.pages, logSize/100)
		}
	})
	t.Run("last/before", func(t *testing.T) {
		w := walkBackward(t, log, admin, 100, audit.Filter{}, s.company)
		sameIDs(t, "backward", w.ids, all)
		if w.pages != logSize/100 {
			t.Errorf("%d pages, want %d", w.pages, logSize/100)
		}
	})
	t.Run("uneven page size", func(t *testing.T) {
		sameIDs(t, "forward by 97", walkForward(t, log, admin, 97, audit.Filter{}, s.company).ids, all)
		sameIDs(t, "backward by 97", walkBackward(t, log, admin, 97, audit.Filter{}, s.company).ids, all)
	})
	t.Run("the other company", func(t *testing.T) {
		other := auth.Caller{UserID: "admin", Company: s.other, Role: auth.RoleAdmin}
		w := walkForward(t, log, other, 100, audit.Filter{}, s.other)
		if len(w.ids) != logSize/otherEvery {
			t.Errorf("other company has %d rows, want %d", len(w.ids), logSize/otherEvery)
		}
	})

	t.Run("ends", func(t *testing.T) {
		n := 100
		first, err := log.List(context.Background(), admin, audit.PageRequest{First: &n})
		if err != nil {
			t.Fatal(err)
		}
		if first.HasPreviousPage || !first.HasNextPage || first.Events[0].ID != all[0] {
			t.Errorf("newest page: prev=%v next=%v first id %d", first.HasPreviousPage, first.HasNextPage, first.Events[0].ID)
		}
		last, err := log.List(context.Background(), admin, audit.PageRequest{Last: &n})
		if err != nil {
			t.Fatal(err)
		}
		if !last.HasPreviousPage || last.HasNextPage || last.Events[len(last.Events)-1].ID != all[len(all)-1] {
			t.Errorf("oldest page: prev=%v next=%v", last.HasPreviousPage, last.HasNextPage)
		}
		sameIDs(t, "oldest page", ids(last.Events), all[len(all)-100:])
		// Beyond either end there is nothing, and the flags point back.
		past, err := log.List(context.Background(), admin, audit.PageRequest{First: &n, After: log.Cursor(last.Events[len(last.Events)-1])})
		if err != nil {
			t.Fatal(err)
		}
		if len(past.Events) != 0 || past.HasNextPage || !past.HasPreviousPage {
			t.Errorf("after the oldest: %d events prev=%v next=%v", len(past.Events), past.HasPreviousPage, past.HasNextPage)
		}
		before, err := log.List(context.Background(), admin, audit.PageRequest{Last: &n, Before: log.Cursor(first.Events[0])})
		if err != nil {
			t.Fatal(err)
		}
		if len(before.Events) != 0 || before.HasPreviousPage || !before.HasNextPage {
			t.Errorf("before the newest: %d events prev=%v next=%v", len(before.Events), before.HasPreviousPage, before.HasNextPage)
		}
		// From the middle, both ways.
		mid := audit.Event{ID: all[5000], Company: s.company}
		fwd, err := log.List(context.Background(), admin, audit.PageRequest{First: &n, After: log.Cursor(mid)})
		if err != nil {
			t.Fatal(err)
		}
		sameIDs(t, "after the middle", ids(fwd.Events), all[5001:5101])
		if !fwd.HasPreviousPage || !fwd.HasNextPage {
			t.Errorf("after the middle: prev=%v next=%v", fwd.HasPreviousPage, fwd.HasNextPage)
		}
		back, err := log.List(context.Background(), admin, audit.PageRequest{Last: &n, Before: log.Cursor(mid)})
		if err != nil {
			t.Fatal(err)
		}
		sameIDs(t, "before the middle", ids(back.Events), all[4900:5000])
		if !back.HasPreviousPage || !back.HasNextPage {
			t.Errorf("before the middle: prev=%v next=%v", back.HasPreviousPage, back.HasNextPage)
		}
		// Default size.
		def, err := log.List(context.Background(), admin, audit.PageRequest{})
		if err != nil {
			t.Fatal(err)
		}
		sameIDs(t, "default page", ids(def.Events), all[:audit.DefaultPageSize])
	})

	t.Run("rows read back as written", func(t *testing.T) {
		byID := map[int64]models.AuditEvent{}
		for _, r := range s.rows {
			byID[r.ID] = r
		}
		n := 100
		for _, req := range []audit.PageRequest{{First: &n}, {Last: &n}} {
			p, err := log.List(context.Background(), admin, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Events {
				r := byID[e.ID]
				want := eventOf(r)
				if e.Action != want.Action || e.Actor.ID != want.Actor.ID || e.Actor.Role != want.Actor.Role ||
					e.App != want.App || string(e.Details) != r.Details || !e.CreatedAt.Equal(r.CreatedAt) ||
					(e.Target == nil) != (want.Target == nil) || (e.Target != nil && e.Target.ID != want.Target.ID) {
					t.Fatalf("event %d = %+v, want %+v", e.ID, e, r)
				}
				if r.ID <= s.rows[viaWrite-1].ID && e.Actor.Name != want.Actor.Name {
					t.Fatalf("event %d actor name %q, want %q", e.ID, e.Actor.Name, want.Actor.Name)
				}
			}
		}
	})

	filters := []struct {
		name  string
		f     audit.Filter
		match func(models.AuditEvent) bool
	}{
		{"action", audit.Filter{Actions: []audit.Action{audit.UserTwoFactorEnabled}},
			func(r models.AuditEvent) bool { return r.Action == string(audit.UserTwoFactorEnabled) }},
		{"two actions", audit.Filter{Actions: []audit.Action{audit.UserCreated, audit.GeneralSettingsChanged}},
			func(r models.AuditEvent) bool {
				return r.Action == string(audit.UserCreated) || r.Action == string(audit.GeneralSettingsChanged)
			}},
		{"user", audit.Filter{UserID: "user-3"},
			func(r models.AuditEvent) bool {
				return r.ActorID == "user-3" || (r.TargetUserID != nil && *r.TargetUserID == "user-3")
			}},
		{"app", audit.Filter{App: "manager"},
			func(r models.AuditEvent) bool { return r.App != nil && *r.App == "manager" }},
		{"time window", audit.Filter{From: ptr(s.base.Add(1234 * time.Millisecond)), To: ptr(s.base.Add(6789 * time.Millisecond))},
			func(r models.AuditEvent) bool {
				return !r.CreatedAt.Before(s.base.Add(1234*time.Millisecond)) && r.CreatedAt.Before(s.base.Add(6789*time.Millisecond))
			}},
		{"everything", audit.Filter{Actions: []audit.Action{audit.UserTwoFactorEnabled, audit.UserTwoFactorDisabled}, UserID: "user-5", App: "web", From: ptr(s.base)},
			func(r models.AuditEvent) bool {
				return (r.Action == string(audit.UserTwoFactorEnabled) || r.Action == string(audit.UserTwoFactorDisabled)) &&
					(r.ActorID == "user-5" || (r.TargetUserID != nil && *r.TargetUserID == "user-5")) &&
					r.App != nil && *r.App == "web" && !r.CreatedAt.Before(s.base)
			}},
	}
	for _, tc := range filters {
		t.Run("filtered/"+tc.name, func(t *testing.T) {
			want := s.newestFirst(tc.match)
			if len(want) < 150 {
				t.Fatalf("filter matches only %d rows; the walk would not cross pages", len(want))
			}
			sameIDs(t, "forward", walkForward(t, log, admin, 100, tc.f, s.company).ids, want)
			sameIDs(t, "backward", walkBackward(t, log, admin, 100, tc.f, s.company).ids, want)
		})
	}
}

func ids(events []audit.Event) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func TestListArguments(t *testing.T) {
	b := testenv.Open(t)
	codec := cursor.Ephemeral()
	log := audit.NewLog(b.DB, nil, nil, audit.WithCodec(codec))
	co := testenv.Company(t)
	err := b.DB.Transaction(func(tx *gorm.DB) error {
		for i := range 3 {
			if err := log.Write(tx, eventOf(row(co, i))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	admin := auth.Caller{UserID: "a", Company: co, Role: auth.RoleAdmin}
	one, big, neg := 1, audit.MaxPageSize+1, -1
	cases := []struct {
		name string
		c    auth.Caller
		req  audit.PageRequest
		want error // matched with errors.Is, or nil for a validation error
	}{
		{"service", auth.Caller{UserID: "s", Company: co, Role: auth.RoleService}, audit.PageRequest{}, auth.ErrForbidden},
		{"user", auth.Caller{UserID: "u", Company: co, Role: auth.RoleUser}, audit.PageRequest{}, auth.ErrForbidden},
		{"first too big", admin, audit.PageRequest{First: &big}, nil},
		{"last too big", admin, audit.PageRequest{Last: &big}, nil},
		{"negative", admin, audit.PageRequest{First: &neg}, nil},
		{"first and last", admin, audit.PageRequest{First: &one, Last: &one}, nil},
		{"bad after", admin, audit.PageRequest{After: "nope"}, cursor.ErrBad},
		{"bad before", admin, audit.PageRequest{Before: codec.Seal("user", co, []byte("x"))}, cursor.ErrBad},
		{"zero id", admin, audit.PageRequest{After: codec.SealID("audit", co, 0)}, cursor.ErrBad},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := log.List(context.Background(), tc.c, tc.req)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				if !errors.As(err, new(validation.Errors)) {
					t.Errorf("err = %v (%T), want validation errors", err, err)
				}
			}
		})
	}
	if id, err := log.ParseCursor(co, log.Cursor(audit.Event{ID: 42, Company: co})); err != nil || id != 42 {
		t.Errorf("cursor round trip = %d, %v", id, err)
	}
}

// TestListArgumentErrorsOrder: every problem is reported, in a stable order.
func TestListArgumentErrorsOrder(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	admin := auth.Caller{UserID: "a", Company: testenv.Company(t), Role: auth.RoleAdmin}
	big, neg := audit.MaxPageSize+1, -1
	for range 20 {
		_, err := log.List(context.Background(), admin, audit.PageRequest{First: &big, Last: &neg})
		var verr validation.Errors
		if !errors.As(err, &verr) {
			t.Fatalf("err = %v, want validation errors", err)
		}
		var fields []string
		for _, fe := range verr {
			fields = append(fields, fe.Field...)
		}
		if want := []string{"last", "first", "last"}; !slices.Equal(fields, want) {
			t.Fatalf("fields = %v, want %v", fields, want)
		}
	}
}
