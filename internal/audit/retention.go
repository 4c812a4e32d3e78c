package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/twofactor/service/models"
)

// Retention defaults and bounds.
const (
	DefaultRetention = 400 * 24 * time.Hour
	// MinRetention refuses a typo such as 400s for 400d, which would remove
	// nearly every sign-in row at once.
	MinRetention = 24 * time.Hour
	// RetentionInterval is how often each instance looks for expired rows.
	RetentionInterval = time.Hour
	// retentionBatch is the most rows one transaction removes, so writers
	// of the company wait for one small delete at most.
	retentionBatch = 1000
)

// ParseRetention reads AUDIT_RETENTION_AUTHENTICATION: "" is the default
// (400d), "off" keeps rows forever, else a number of days such as 400d or
// a Go duration such as 36h, at least MinRetention. "0" is refused rather
// than guessed at: it could mean "keep nothing" or "keep everything".
func ParseRetention(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return DefaultRetention, nil
	case "off":
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 100*366 {
			return 0, fmt.Errorf("want a number of days such as 400d, a Go duration such as 36h, or off; got %q", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("want a number of days such as 400d, a Go duration such as 36h, or off; got %q", s)
		}
	}
	if d < MinRetention {
		return 0, fmt.Errorf("want at least 1d (or off to keep rows forever), got %q", s)
	}
	return d, nil
}

// Retention removes sign-in rows older than its keep duration. Settings
// rows are never removed. Every instance may run it at once: each batch
// takes the company's audit lock and starts from the stored checkpoint.
type Retention struct {
	log  *Log
	keep time.Duration
	now  func() time.Time
}

// NewRetention removes l's AUTHENTICATION rows older than keep (>0), by
// the clock now (nil: the wall clock).
func NewRetention(l *Log, keep time.Duration, now func() time.Time) *Retention {
	if now == nil {
		now = time.Now
	}
	return &Retention{log: l, keep: keep, now: now}
}

// Run removes expired rows now and then every interval until ctx ends.
func (r *Retention) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := r.RunOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.logger.ErrorContext(ctx, "audit retention", "err", err)
		case n > 0:
			r.log.logger.InfoContext(ctx, "audit retention removed expired sign-in rows", "rows", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RunOnce removes every expired row it can and returns how many.
func (r *Retention) RunOnce(ctx context.Context) (int, error) {
	cutoff := r.now().UTC().Add(-r.keep)
	var companies []string
	// The category is a literal so that PostgreSQL can use the partial
	// index of migration 0005 (a parameter cannot match its predicate).
	if err := r.log.db.WithContext(ctx).Model(&models.AuditEvent{}).
		Where("category = 'AUTHENTICATION' AND created_at < ?", cutoff).
		Distinct("company_id").Pluck("company_id", &companies).Error; err != nil {
		return 0, fmt.Errorf("audit retention: find companies: %w", err)
	}
	total := 0
	for _, company := range companies {
		for {
			n, err := r.removeBatch(ctx, company, cutoff)
			total += n
			if err != nil {
				return total, fmt.Errorf("audit retention: %s: %w", company, err)
			}
			if n < retentionBatch {
				break
			}
		}
	}
	return total, nil
}

// removeBatch removes the oldest rows of company's sign-in chain that are
// older than cutoff, up to a batch, and moves the checkpoint to the newest
// removed row. Rows go in chain order only, so a row that is not yet
// expired keeps the (rare, late-arriving) older rows after it for a while.
func (r *Retention) removeBatch(ctx context.Context, company string, cutoff time.Time) (int, error) {
	removed := 0
	err := r.log.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := lockCompany(tx, company); err != nil {
			return err
		}
		start, err := readStart(tx, company, string(Authentication))
		if err != nil {
			return err
		}
		var rows []models.AuditEvent
		if err := tx.Where("company_id = ? AND category = ? AND id > ?", company, string(Authentication), start.AfterID).
			Order(chainOrder).Limit(retentionBatch).Find(&rows).Error; err != nil {
			return err
		}
		cut := r.expiredPrefix(ctx, start.Hash, rows, cutoff)
		if cut.last == nil {
			return nil
		}
		res := tx.Where("company_id = ? AND category = ? AND id > ? AND id <= ?",
			company, string(Authentication), start.AfterID, cut.last.ID).Delete(&models.AuditEvent{})
		if res.Error != nil {
			return res.Error
		}
		removed = int(res.RowsAffected)
		return r.moveCheckpoint(tx, cut, start.Removed+res.RowsAffected)
	})
	return removed, err
}

// moveCheckpoint records cut as company's sign-in checkpoint, with the
// chain's count of removed rows.
func (r *Retention) moveCheckpoint(tx *gorm.DB, cut cut, removed int64) error {
	row, err := json.Marshal(linkOf(*cut.last))
	if err != nil {
		return err
	}
	return tx.Clauses(clause.OnConflict{
		Columns:   []clause.Column{{Name: "company_id"}, {Name: "category"}},
		DoUpdates: clause.AssignmentColumns([]string{"last_id", "hash", "prev_hash", "last_row", "removed", "updated_at"}),
	}).Create(&checkpoint{CompanyID: cut.last.CompanyID, Category: string(Authentication), LastID: cut.last.ID,
		Hash: *cut.last.Hash, PrevHash: cut.prev, LastRow: string(row), Removed: removed,
		UpdatedAt: r.now().UTC()}).Error
}

// cut is the newest row of an expired prefix and the hash it follows.
type cut struct {
	last *models.AuditEvent
	prev string
}

// expiredPrefix is the newest of the leading rows created before cutoff
// that link from prev, if any. A broken link ends the prefix and is
// logged: the rows from there on stay, as evidence, until someone looks.
func (r *Retention) expiredPrefix(ctx context.Context, prev string, rows []models.AuditEvent, cutoff time.Time) cut {
	var c cut
	for i := range rows {
		if !rows[i].CreatedAt.Before(cutoff) {
			break
		}
		if !linksTo(prev, rows[i]) {
			r.log.logger.ErrorContext(ctx, "audit retention stopped: a sign-in row does not link to the one before it",
				"company", rows[i].CompanyID, "event", r.log.PublicID(fromRow(rows[i])))
			break
		}
		c = cut{last: &rows[i], prev: prev}
		prev = *rows[i].Hash
	}
	return c
}
