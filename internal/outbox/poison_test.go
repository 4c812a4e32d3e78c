package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/outbox"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/models"
)

// refuseInserts makes the database refuse every audit row of company, on
// either backend; the returned func lifts the refusal.
func refuseInserts(t *testing.T, db *gorm.DB, company string) (lift func()) {
	t.Helper()
	lit := "'" + strings.ReplaceAll(company, "'", "''") + "'"
	stmts := []string{`CREATE TRIGGER refuse_company BEFORE INSERT ON audit_events FOR EACH ROW WHEN (NEW.company_id = ` + lit +
		`) BEGIN SELECT RAISE(ABORT, 'refused'); END`}
	drop := `DROP TRIGGER refuse_company`
	if store.IsPostgres(db) {
		stmts = []string{
			`CREATE FUNCTION refuse_company() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$`,
			`CREATE TRIGGER refuse_company BEFORE INSERT ON audit_events FOR EACH ROW WHEN (NEW.company_id = ` + lit +
				`) EXECUTE FUNCTION refuse_company()`,
		}
		drop += ` ON audit_events`
	}
	for _, s := range stmts {
		if err := db.Exec(s).Error; err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	return func() {
		t.Helper()
		if err := db.Exec(drop).Error; err != nil {
			t.Fatal(err)
		}
	}
}

// tamperHead gives company one stored row whose hash was changed, so its
// chain cannot be extended.
func tamperHead(t *testing.T, e *env, company string) {
	t.Helper()
	if err := e.db.DB.Transaction(func(tx *gorm.DB) error {
		return e.log.Write(tx, &audit.Event{Company: company, Action: audit.CodeVerified,
			Actor: audit.Party{ID: "u", Role: auth.RoleUser}, Target: &audit.Party{ID: "u"}, UID: "seed"})
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.db.DB.Model(&models.AuditEvent{}).Where("company_id = ?", company).Update("hash", "tampered").Error; err != nil {
		t.Fatal(err)
	}
}

// addFor appends one event of company to company's own outbox key.
func (e *env) addFor(company string) string {
	e.t.Helper()
	key := e.key(company)
	if err := e.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: key, Values: []any{
		"uid", company + "-1", "company", company, "action", string(audit.CodeVerified), "user", "u"}}).Err(); err != nil {
		e.t.Fatal(err)
	}
	return key
}

func (e *env) count(company string) int {
	e.t.Helper()
	var n int64
	if err := e.db.DB.Model(&models.AuditEvent{}).Where("company_id = ?", company).Count(&n).Error; err != nil {
		e.t.Fatal(err)
	}
	return int(n)
}

// TestOneCompanyFailureBlocksNoOther is the red-team finding "one
// company's failure blocks every other company's events": the first
// company whose events the database refused failed the whole move, no
// entry was deleted, and the sweep stopped. Now the other companies'
// events are stored and deleted from Redis, by Move and by Sweep, and the
// error names the company that failed.
func TestOneCompanyFailureBlocksNoOther(t *testing.T) {
	for _, poison := range []struct {
		name string
		do   func(t *testing.T, e *env, company string)
	}{
		{"a tampered chain head", tamperHead},
		{"the database refuses its rows", func(t *testing.T, e *env, company string) { refuseInserts(t, e.db.DB, company) }},
	} {
		for _, via := range []string{"move", "sweep"} {
			t.Run(poison.name+" via "+via, func(t *testing.T) {
				e := newEnv(t)
				bad := e.company + "-bad"
				poison.do(t, e, bad)
				keys := []string{e.addFor(bad)} // first: before, nothing after it moved
				var good []string
				for i := range 20 {
					c := fmt.Sprintf("%s-good-%02d", e.company, i)
					good = append(good, c)
					keys = append(keys, e.addFor(c))
				}
				m := outbox.New(e.rdb, decode, e.log, nil, outbox.Options{Manual: true, Match: e.match(), KeysPerMove: 4})
				defer m.Close()
				var err error
				if via == "move" {
					_, err = m.Move(context.Background(), keys...)
				} else {
					_, err = m.Sweep(context.Background())
				}
				var ce *audit.CompanyError
				if !errors.As(err, &ce) || ce.Company != bad {
					t.Errorf("error %v, want one naming %s", err, bad)
				}
				for _, c := range good {
					if n := e.count(c); n != 1 || e.exists(e.key(c)) {
						t.Errorf("%s: %d rows stored, outbox left %v; want 1 row and no outbox", c, n, e.exists(e.key(c)))
					}
				}
				if !e.exists(e.key(bad)) {
					t.Errorf("the failing company's outbox is gone: its events would be lost")
				}
			})
		}
	}
}

// logRecords keeps the records logged at Warn and above.
type logRecords struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *logRecords) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *logRecords) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *logRecords) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecords) WithGroup(string) slog.Handler      { return h }

// about counts the records at level that name company.
func (h *logRecords) about(level slog.Level, company string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "company" && a.Value.String() == company && r.Level == level {
				n++
			}
			return true
		})
	}
	return n
}

// counting counts the AppendOnce calls that hold one company's events.
type counting struct {
	next    outbox.Appender
	company string
	calls   atomic.Int64
}

func (c *counting) AppendOnce(ctx context.Context, events []*audit.Event) (audit.AppendResult, error) {
	for _, e := range events {
		if e.Company == c.company {
			c.calls.Add(1)
			break
		}
	}
	return c.next.AppendOnce(ctx, events)
}

// TestFailingCompanyBacksOffAlone: the worker retries a failing company
// on its own backoff, logs it with its company at most once a minute, and
// meanwhile keeps moving the others' events, however often the failing
// company's key is kicked. The clock is driven: the backoff ends only
// when the test says.
func TestFailingCompanyBacksOffAlone(t *testing.T) {
	e := newEnv(t)
	bad := e.company + "-bad"
	lift := refuseInserts(t, e.db.DB, bad)
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	logs := &logRecords{}
	sink := &counting{next: e.log, company: bad}
	m := outbox.New(e.rdb, decode, sink, slog.New(logs), outbox.Options{Match: e.match(), SweepEvery: -1,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, Now: now})
	defer m.Close()
	poll := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(wait); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waited in vain for %s", what)
			}
		}
	}
	badKey := e.addFor(bad)
	for i := range 5 {
		c := fmt.Sprintf("%s-good-%d", e.company, i)
		m.Kick(badKey)
		m.Kick(e.addFor(c))
		poll(c+"'s event", func() bool { return e.count(c) == 1 })
	}
	poll("the failing company's first try", func() bool { return sink.calls.Load() >= 1 })
	if n := sink.calls.Load(); n != 1 {
		t.Errorf("the failing company was tried %d times before its backoff ended, want 1", n)
	}
	if n := logs.about(slog.LevelWarn, bad); n != 1 {
		t.Errorf("%d warnings name the failing company, want 1", n)
	}
	// Each backoff that ends brings one more try; the clock moves on while
	// the test waits, never a minute in all.
	for try := int64(2); try <= 4; try++ {
		poll(fmt.Sprintf("try %d", try), func() bool { advance(40 * time.Millisecond); return sink.calls.Load() >= try })
	}
	if n := logs.about(slog.LevelWarn, bad); n != 1 {
		t.Errorf("%d warnings within a minute, want 1", n)
	}
	advance(time.Minute)
	poll("the second warning, a minute later", func() bool {
		advance(40 * time.Millisecond)
		return logs.about(slog.LevelWarn, bad) >= 2
	})
	// The company recovers: its event arrives, its outbox goes.
	lift()
	poll("the recovered company's event", func() bool {
		advance(40 * time.Millisecond)
		return e.count(bad) == 1 && !e.exists(badKey)
	})
	if n := logs.about(slog.LevelWarn, bad); n != 2 {
		t.Errorf("%d warnings in a minute and a bit, want 2", n)
	}
	if n := logs.about(slog.LevelInfo, bad); n != 1 {
		t.Errorf("%d notes that the company recovered, want 1", n)
	}
}
