package audit

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit/hashchain"
	"github.com/twofactor/service/internal/auth"
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
	// FirstBroken is the oldest row whose hash does not match, or nil.
	FirstBroken *Event
}

// CheckIntegrity checks the caller's company chains over w. Admin only.
func (l *Log) CheckIntegrity(ctx context.Context, c auth.Caller, w Window) (Integrity, error) {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return Integrity{}, fmt.Errorf("check audit log integrity: %w", err)
	}
	return l.Verify(ctx, c.Company, w)
}

// Verify checks company's chains over w, reading at most chainBatch rows
// at a time. Each row must hash, from the stored hash of the row before it
// in its chain, to its own stored hash. A window starts from the stored
// hash of the row before its first, so it is checkable alone; the whole
// chain starts from the retention checkpoint or genesis. It stops each
// chain at its first broken row. For the command line, which has no caller.
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
		v := &verifier{db: l.db.WithContext(ctx), company: company, category: string(cat)}
		res, err := v.run(w.From, w.To)
		if err != nil {
			return Integrity{}, fmt.Errorf("check audit log integrity: %s: %w", cat, err)
		}
		out.CheckedRows += v.checked
		if res != nil && (out.FirstBroken == nil || res.ID < out.FirstBroken.ID) {
			e := fromRow(*res)
			out.OK, out.FirstBroken = false, &e
		}
	}
	return out, nil
}

// verifier walks one chain.
type verifier struct {
	db                *gorm.DB
	company, category string
	checked           int
	// prev is the hash the next row must follow, and prevID the row it
	// came from (the checkpoint's row, or 0 for genesis).
	prev   string
	prevID int64
}

// run checks the rows of the window and returns the first broken one.
func (v *verifier) run(from, to *time.Time) (*models.AuditEvent, error) {
	start, err := readStart(v.db, v.company, v.category)
	if err != nil {
		return nil, err
	}
	v.prev, v.prevID = start.Hash, start.AfterID
	lo, hi, empty, err := v.bounds(from, to, start)
	if err != nil || empty {
		return nil, err
	}
	if lo > 0 {
		if err := v.startBefore(lo); err != nil {
			return nil, err
		}
	}
	after := v.prevID
	for {
		q := v.scope().Where("id > ?", after)
		if hi > 0 {
			q = q.Where("id <= ?", hi)
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

// bounds turns the time window into an id range, lo and hi inclusive (0:
// open). Rows are chained in id order while an outbox event keeps the
// time it happened, so times are not quite in id order: the range runs
// from the first row created at or after from to the last created before
// to, and also checks any row between them whatever its time.
func (v *verifier) bounds(from, to *time.Time, start chainStart) (lo, hi int64, empty bool, err error) {
	if from != nil {
		lo, err = v.edge("MIN(id)", "created_at >= ?", start.AfterID, from.UTC())
		if err != nil || lo == 0 {
			return 0, 0, true, err
		}
	}
	if to != nil {
		hi, err = v.edge("MAX(id)", "created_at < ?", start.AfterID, to.UTC())
		if err != nil || hi == 0 || hi < lo {
			return 0, 0, true, err
		}
	}
	return lo, hi, false, nil
}

// edge is agg of the ids after the chain's start whose time matches
// cond, or 0 for none.
func (v *verifier) edge(agg, cond string, after int64, at time.Time) (int64, error) {
	var id sql.NullInt64
	err := v.scope().Where("id > ?", after).Where(cond, at).Select(agg).Row().Scan(&id)
	return id.Int64, err
}

// startBefore starts the walk from the stored hash of the row before lo,
// if there is one after the chain's start.
func (v *verifier) startBefore(lo int64) error {
	var before []idHash
	if err := v.scope().Select("id, hash").Where("id > ? AND id < ?", v.prevID, lo).
		Order("company_id DESC, category DESC, id DESC").Limit(1).Scan(&before).Error; err != nil {
		return err
	}
	if len(before) == 1 {
		v.prevID, v.prev = before[0].ID, ""
		if before[0].Hash != nil {
			v.prev = *before[0].Hash
		}
	}
	return nil
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
