package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit/hashchain"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

// Window is what a check covers: rows created in [From, To), both
// optional, of one category or (empty) both.
type Window struct {
	From, To *time.Time
	Category Category
}

// Integrity is the result of a check.
type Integrity struct {
	OK          bool
	CheckedRows int
	// FirstBroken is the oldest row whose hash does not match, or that a
	// retention checkpoint says was removed; or nil.
	FirstBroken *Event
	// Problems says why a chain failed other than by a row (a checkpoint
	// that cannot be trusted), one sentence each, or is empty.
	Problems []string
}

// CheckIntegrity checks the caller's company chains over w. Admin only.
// A check walks up to the company's whole log, so this process runs one
// check per company at a time, and callers asking the same question
// meanwhile share its answer (see checkFlights).
func (l *Log) CheckIntegrity(ctx context.Context, c auth.Caller, w Window) (Integrity, error) {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return Integrity{}, fmt.Errorf("check audit log integrity: %w", err)
	}
	return checks.do(ctx, c.Company, w, func(ctx context.Context) (Integrity, error) {
		return l.Verify(ctx, c.Company, w)
	})
}

// Verify checks company's chains over w, reading at most chainBatch rows
// at a time. Each row must hash, from the stored hash of the row before it
// in its chain, to its own stored hash. The whole chain starts from the
// retention checkpoint (which must prove its cut, see checkpointProblem)
// or genesis. A window walks the rows from the one before its first to
// the one after its last (see run). It stops each chain at its first
// broken row. For the command line, which has no caller.
func (l *Log) Verify(ctx context.Context, company string, w Window) (Integrity, error) {
	var verr validation.Errors
	if w.From != nil && w.To != nil && !w.From.Before(*w.To) {
		verr.Add(validation.CodeInvalidValue, "must be after from", "to")
	}
	if w.Category != "" && w.Category != Settings && w.Category != Authentication {
		verr.Add(validation.CodeInvalidValue, "must be SETTINGS or AUTHENTICATION", "category")
	}
	if err := verr.Err(); err != nil {
		return Integrity{}, fmt.Errorf("check audit log integrity: %w", err)
	}
	categories := []Category{Settings, Authentication}
	if w.Category != "" {
		categories = []Category{w.Category}
	}
	out := Integrity{OK: true}
	for _, cat := range categories {
		v := &verifier{db: l.db.WithContext(ctx), company: company, category: string(cat), now: store.Now()}
		res, err := v.run(w.From, w.To)
		if err != nil {
			return Integrity{}, fmt.Errorf("check audit log integrity: %s: %w", cat, err)
		}
		out.add(v, res)
	}
	return out, nil
}

// add counts one chain's result in out.
func (out *Integrity) add(v *verifier, broken *models.AuditEvent) {
	out.CheckedRows += v.checked
	if v.problem != "" {
		out.OK = false
		out.Problems = append(out.Problems, v.category+": "+v.problem)
	}
	if broken != nil && (out.FirstBroken == nil || broken.ID < out.FirstBroken.ID) {
		e := fromRow(*broken)
		out.OK, out.FirstBroken = false, &e
	}
}

// verifier walks one chain.
type verifier struct {
	db                *gorm.DB
	company, category string
	now               time.Time
	checked           int
	// problem is why the chain is broken other than by a row, or "".
	problem string
	// prev is the hash the next row must follow, and prevID the row it
	// came from (the checkpoint's row, or 0 for genesis).
	prev   string
	prevID int64
}

// run checks the chain over [from, to) and returns its first broken row.
//
// A window is chosen by created_at, which an attacker can change: a row
// of the window moved out of it by its time would otherwise leave the
// walk, which would then trust its stored hash. So the walk also checks
// the row just before the window's first row (against the stored hash of
// the row before it) and the row just after its last: a changed row is
// found when it is in the window or next to it. A changed row further out
// escapes only if an unchanged row with an out-of-window time stands
// between it and the window, which means one of the two arrived late
// (an outbox event older than the row before it): only a whole-chain
// check proves every row.
func (v *verifier) run(from, to *time.Time) (*models.AuditEvent, error) {
	start, leftover, err := v.start()
	if err != nil {
		return nil, err
	}
	v.prev, v.prevID = start.Hash, start.AfterID
	var end int64 // the last row to check; 0: the chain's end
	if from != nil || to != nil {
		if end, err = v.frame(from, to); err != nil {
			return nil, err
		}
	}
	broken, err := v.walk(end)
	if leftover != nil && (broken == nil || leftover.ID < broken.ID) {
		broken = leftover
	}
	return broken, err
}

// start reads the checkpoint, judges it, and returns where the walk
// starts and the oldest row it says was removed but is still there.
func (v *verifier) start() (chainStart, *models.AuditEvent, error) {
	genesis := chainStart{Hash: hashchain.Genesis}
	cp, err := readCheckpoint(v.db, v.company, v.category)
	if err != nil || cp == nil {
		return genesis, nil, err
	}
	if v.category != string(Authentication) {
		// Retention never cuts the settings chain: walk it all.
		v.problem = "it has a retention checkpoint, but retention never removes settings rows"
		return genesis, nil, nil
	}
	v.problem = checkpointProblem(cp, v.now)
	// Retention deletes rows and moves the checkpoint in one transaction,
	// so a row at or before it was not removed by retention.
	var left []models.AuditEvent
	if err := v.scope().Where("id <= ?", cp.LastID).Order(chainOrder).Limit(1).Find(&left).Error; err != nil {
		return genesis, nil, err
	}
	start := chainStart{AfterID: cp.LastID, Hash: cp.Hash, Removed: cp.Removed}
	if len(left) == 1 {
		return start, &left[0], nil
	}
	return start, nil, nil
}

// checkpointMinAge is how old the newest row retention removed must be:
// retention keeps at least MinRetention, less an hour for clock skew
// between the instance that cut and the one that checks.
const checkpointMinAge = MinRetention - time.Hour

// checkpointProblem is why cp does not prove it cut an old prefix of its
// own chain, or "". Its hash must be the hash of the row it records,
// after its PrevHash: only the chain's own row hashes to it, so the row's
// company, category and time are the removed row's.
func checkpointProblem(cp *checkpoint, now time.Time) string {
	var row hashchain.Row
	if err := json.Unmarshal([]byte(cp.LastRow), &row); err != nil {
		return "the retention checkpoint does not record the row it cut"
	}
	switch h, err := hashchain.Next(cp.PrevHash, row); {
	case err != nil || h != cp.Hash:
		return "the retention checkpoint's row does not hash to its hash"
	case row.Company != cp.CompanyID || row.Category != cp.Category:
		return "the retention checkpoint records another chain's row"
	case !row.CreatedAt.Before(now.Add(-checkpointMinAge)):
		return "the retention checkpoint cut a row less than a day old, which retention never removes"
	case cp.Removed < 1:
		return "the retention checkpoint counts no removed row"
	}
	return ""
}

// frame narrows the walk to a window: it starts at the row before the
// window's first and ends at the row after its last (returned; 0 for the
// chain's end). Rows are chained in id order while an outbox event keeps
// the time it happened, so times are not quite in id order: the window
// runs from the first row created at or after from to the last created
// before to, and also checks any row between them whatever its time.
func (v *verifier) frame(from, to *time.Time) (int64, error) {
	if from != nil {
		lo, err := v.edge("MIN(id)", "created_at >= ?", from.UTC())
		if err != nil {
			return 0, err
		}
		if lo == 0 {
			lo = math.MaxInt64 // the window starts after the last row
		}
		if err := v.startBefore(lo); err != nil {
			return 0, err
		}
	}
	if to == nil {
		return 0, nil
	}
	hi, err := v.edge("MAX(id)", "created_at < ?", to.UTC())
	if err != nil {
		return 0, err
	}
	hi = max(hi, v.prevID)
	var next sql.NullInt64
	err = v.scope().Where("id > ?", hi).Select("MIN(id)").Row().Scan(&next)
	return next.Int64, err
}

// edge is agg of the ids after the walk's start whose time matches cond,
// or 0 for none.
func (v *verifier) edge(agg, cond string, at time.Time) (int64, error) {
	var id sql.NullInt64
	err := v.scope().Where("id > ?", v.prevID).Where(cond, at).Select(agg).Row().Scan(&id)
	return id.Int64, err
}

// startBefore starts the walk at the row before lo, from the stored hash
// of the row before that one (or the chain's start).
func (v *verifier) startBefore(lo int64) error {
	var before []idHash
	if err := v.scope().Select("id, hash").Where("id > ? AND id < ?", v.prevID, lo).
		Order("company_id DESC, category DESC, id DESC").Limit(2).Scan(&before).Error; err != nil {
		return err
	}
	if len(before) == 2 {
		v.prevID, v.prev = before[1].ID, ""
		if before[1].Hash != nil {
			v.prev = *before[1].Hash
		}
	}
	return nil
}

// walk checks the rows after prevID up to end (0: all) and returns the
// first broken one.
func (v *verifier) walk(end int64) (*models.AuditEvent, error) {
	after := v.prevID
	for {
		q := v.scope().Where("id > ?", after)
		if end > 0 {
			q = q.Where("id <= ?", end)
		}
		var rows []models.AuditEvent
		if err := q.Order(chainOrder).Limit(chainBatch).Find(&rows).Error; err != nil {
			return nil, err
		}
		for i := range rows {
			if ok, err := v.follows(rows[i]); err != nil || !ok {
				return &rows[i], err
			}
		}
		if len(rows) < chainBatch {
			return nil, nil
		}
		after = rows[len(rows)-1].ID
	}
}

func (v *verifier) scope() *gorm.DB {
	return v.db.Model(&models.AuditEvent{}).Where("company_id = ? AND category = ?", v.company, v.category)
}

// follows checks r against the hash before it. When it does not match,
// retention may have removed rows (and moved the checkpoint) since the
// walk read them: r then follows the new checkpoint instead.
func (v *verifier) follows(r models.AuditEvent) (bool, error) {
	v.checked++
	ok := linksTo(v.prev, r)
	if !ok {
		start, err := readStart(v.db, v.company, v.category)
		if err != nil {
			return false, err
		}
		ok = start.AfterID > v.prevID && start.AfterID < r.ID && linksTo(start.Hash, r)
	}
	if ok {
		v.prev, v.prevID = *r.Hash, r.ID
	}
	return ok, nil
}

// linksTo reports whether r's stored hash is its link from prev.
func linksTo(prev string, r models.AuditEvent) bool {
	want, err := hashchain.Next(prev, linkOf(r))
	return err == nil && r.Hash != nil && *r.Hash == want
}

// checks bounds the integrity checks of this process: one per company at
// a time. It is process-wide, like the work it bounds.
var checks = &checkFlights{calls: map[string]*flight{}, slots: map[string]*companySlot{}}

// checkFlights runs one check per company at a time; callers that ask the
// same question (company and window) while it runs share its answer.
type checkFlights struct {
	mu    sync.Mutex
	calls map[string]*flight      // running checks, by flightKey
	slots map[string]*companySlot // turns, by company
}

// flight is one running check and its answer, once done is closed.
type flight struct {
	done    chan struct{}
	res     Integrity
	err     error
	sharers int // callers waiting for it besides the one running it
}

// companySlot is a company's turn (a channel of one) and its users.
type companySlot struct {
	turn  chan struct{}
	users int
}

// do runs check for company and w, or shares the answer of the same
// check already running. If the caller running it gives up (its context
// ends), the others ask again rather than take its error.
func (f *checkFlights) do(ctx context.Context, company string, w Window,
	check func(context.Context) (Integrity, error)) (Integrity, error) {
	key := flightKey(company, w)
	for {
		f.mu.Lock()
		if c, ok := f.calls[key]; ok {
			c.sharers++
			f.mu.Unlock()
			select {
			case <-ctx.Done():
				return Integrity{}, fmt.Errorf("check audit log integrity: %w", ctx.Err())
			case <-c.done:
			}
			if ctx.Err() == nil && (errors.Is(c.err, context.Canceled) || errors.Is(c.err, context.DeadlineExceeded)) {
				continue
			}
			return c.res, c.err
		}
		c := &flight{done: make(chan struct{})}
		f.calls[key] = c
		f.mu.Unlock()
		c.res, c.err = f.run(ctx, company, check)
		f.mu.Lock()
		delete(f.calls, key)
		f.mu.Unlock()
		close(c.done)
		return c.res, c.err
	}
}

// run runs check in company's turn.
func (f *checkFlights) run(ctx context.Context, company string, check func(context.Context) (Integrity, error)) (Integrity, error) {
	release, err := f.acquire(ctx, company)
	if err != nil {
		return Integrity{}, fmt.Errorf("check audit log integrity: %w", err)
	}
	defer release()
	return check(ctx)
}

func flightKey(company string, w Window) string {
	at := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	return fmt.Sprintf("%q %s %s %s", company, w.Category, at(w.From), at(w.To))
}

// acquire waits for company's turn and returns its release.
func (f *checkFlights) acquire(ctx context.Context, company string) (func(), error) {
	f.mu.Lock()
	s := f.slots[company]
	if s == nil {
		s = &companySlot{turn: make(chan struct{}, 1)}
		f.slots[company] = s
	}
	s.users++
	f.mu.Unlock()
	select {
	case s.turn <- struct{}{}:
		return func() { <-s.turn; f.leave(company, s) }, nil
	case <-ctx.Done():
		f.leave(company, s)
		return nil, ctx.Err()
	}
}

func (f *checkFlights) leave(company string, s *companySlot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s.users--; s.users == 0 {
		delete(f.slots, company)
	}
}
