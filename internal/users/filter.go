package users

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

// Filter narrows a listing or a bulk switch. Zero fields match everyone.
type Filter struct {
	TwoFactor *TwoFactorFilter
	Locked    *bool // locked now in any app
}

// TwoFactorFilter matches users whose switch for App is Enabled.
type TwoFactorFilter struct {
	App     App
	Enabled bool
}

// MaxLockScan bounds the users one request with a locked filter reads:
// locks live in Redis, so the filter pages through the company's users in
// id order and reads their locks MaxLockScanBatch at a time. A page that
// is not full when the bound is reached ends early, with hasNextPage and
// an endCursor to go on from.
const (
	MaxLockScan      = 5000
	MaxLockScanBatch = 500
)

func (f *Filter) validate(v *validation.Errors, field ...string) {
	if f != nil && f.TwoFactor != nil && !f.TwoFactor.App.Valid() {
		v.Add(validation.CodeInvalidValue, "unknown app", append(field, "twoFactor", "app")...)
	}
}

// where applies the SQL part of f (everything but the lock).
func (f *Filter) where(q *gorm.DB) *gorm.DB {
	if f == nil || f.TwoFactor == nil {
		return q
	}
	// validate refused an unknown app; were one to get here, its empty
	// column must not become an empty condition.
	if !f.TwoFactor.App.Valid() {
		return q.Where("1 = 0")
	}
	return q.Where(f.TwoFactor.App.Column()+" = ?", f.TwoFactor.Enabled)
}

// keepLocked filters rows by f's lock condition, reading the locks in one
// round trip.
func (s *Service) keepLocked(ctx context.Context, company string, f *Filter, rows []models.User) ([]models.User, error) {
	if f == nil || f.Locked == nil || len(rows) == 0 {
		return rows, nil
	}
	if s.state == nil {
		return nil, fmt.Errorf("locked filter: %w: no lock store", ErrStateUnavailable)
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	locked, err := s.state.Locked(ctx, company, ids)
	if err != nil {
		return nil, fmt.Errorf("locked filter: %w: %w", ErrStateUnavailable, err)
	}
	out := rows[:0:0]
	for _, r := range rows {
		if locked[r.ID] == *f.Locked {
			out = append(out, r)
		}
	}
	return out, nil
}

// scanLocked fills a page of size+1 rows from query (a fresh query per
// call, filtered in SQL) after id, applying the lock condition, reading at
// most MaxLockScan users. last is the last id read, for the next page when
// the bound cut the page short.
func (s *Service) scanLocked(ctx context.Context, company string, f *Filter, query func() *gorm.DB, after string, size int) (rows []models.User, last string, err error) {
	last = after
	for scanned := 0; len(rows) <= size && scanned < MaxLockScan; {
		q := query()
		if last != "" {
			q = q.Where("id > ?", last)
		}
		var batch []models.User
		if err := q.Order("id ASC").Limit(MaxLockScanBatch).Find(&batch).Error; err != nil {
			return nil, "", err
		}
		if len(batch) == 0 {
			return rows, "", nil
		}
		scanned += len(batch)
		kept, err := s.keepLocked(ctx, company, f, batch)
		if err != nil {
			return nil, "", err
		}
		for _, r := range kept {
			if len(rows) > size {
				break
			}
			rows, last = append(rows, r), r.ID
		}
		if len(rows) <= size {
			last = batch[len(batch)-1].ID
		}
		if len(batch) < MaxLockScanBatch {
			return rows, "", nil
		}
	}
	if len(rows) > size {
		return rows, "", nil
	}
	return rows, last, nil
}
