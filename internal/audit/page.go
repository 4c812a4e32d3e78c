package audit

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

// Orders that name company_id first, so the planner walks the
// (company_id, id) index inside one company instead of the primary key
// across every company's rows.
const (
	ascending  = "company_id ASC, id ASC"
	descending = "company_id DESC, id DESC"
)

// Page size bounds.
const (
	DefaultPageSize = 20
	MaxPageSize     = 100
)

// Filter narrows the log. Zero values match everything.
type Filter struct {
	Actions []Action
	UserID  string // actor or target
	App     string
	From    *time.Time // inclusive
	To      *time.Time // exclusive
}

// PageRequest follows the Relay connection arguments. Set First/After to
// walk towards older events, Last/Before towards newer ones.
type PageRequest struct {
	First, Last   *int
	After, Before string
	Filter        Filter
}

// Page is a slice of the log, newest first.
type Page struct {
	Events          []Event
	HasNextPage     bool
	HasPreviousPage bool
}

const cursorKind = "audit"

// Cursor is the opaque position of e in the log.
func Cursor(e Event) string { return cursor.Encode(cursorKind, strconv.FormatInt(e.ID, 10)) }

// ParseCursor returns the event id in a cursor.
func ParseCursor(s string) (int64, error) {
	pos, err := cursor.Decode(cursorKind, s)
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseInt(pos, 10, 64)
	if err != nil || id <= 0 {
		return 0, cursor.ErrBad
	}
	return id, nil
}

// List returns one page of the caller's company log. Admin only. Pages are
// keyset ranges over (company_id, id), so a page deep in the log costs what
// the first does.
func (l *Log) List(ctx context.Context, c auth.Caller, req PageRequest) (Page, error) {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return Page{}, fmt.Errorf("list audit log: %w", err)
	}
	company := c.Company
	var verr validation.Errors
	if req.First != nil && req.Last != nil {
		verr.Add(validation.CodeInvalidValue, "give first or last, not both", "last")
	}
	// A slice, not a map, so the errors come in a stable order.
	for i, n := range []*int{req.First, req.Last} {
		if n != nil && (*n < 0 || *n > MaxPageSize) {
			verr.Add(validation.CodeInvalidValue, fmt.Sprintf("must be between 0 and %d", MaxPageSize), []string{"first", "last"}[i])
		}
	}
	if err := verr.Err(); err != nil {
		return Page{}, fmt.Errorf("list audit log: %w", err)
	}
	var afterID, beforeID int64
	var err error
	if req.After != "" {
		if afterID, err = ParseCursor(req.After); err != nil {
			return Page{}, fmt.Errorf("list audit log: after: %w", err)
		}
	}
	if req.Before != "" {
		if beforeID, err = ParseCursor(req.Before); err != nil {
			return Page{}, fmt.Errorf("list audit log: before: %w", err)
		}
	}

	backward := req.Last != nil || (req.First == nil && req.Before != "")
	size := DefaultPageSize
	if backward && req.Last != nil {
		size = *req.Last
	} else if !backward && req.First != nil {
		size = *req.First
	}

	q := req.Filter.apply(l.db.WithContext(ctx).Model(&models.AuditEvent{}).Where("company_id = ?", company))
	if afterID > 0 {
		q = q.Where("id < ?", afterID)
	}
	if beforeID > 0 {
		q = q.Where("id > ?", beforeID)
	}
	q = q.Limit(size + 1)
	var rows []models.AuditEvent
	if backward {
		q = q.Order(ascending)
	} else {
		q = q.Order(descending)
	}
	if err := q.Find(&rows).Error; err != nil {
		return Page{}, fmt.Errorf("list audit log: %w", err)
	}
	more := len(rows) > size
	if more {
		rows = rows[:size]
	}
	if backward {
		slices.Reverse(rows)
	}
	page := Page{Events: make([]Event, len(rows))}
	for i, r := range rows {
		page.Events[i] = fromRow(r)
	}

	// The far side of a cursor: is anything there? One indexed probe.
	beyond := func(cond, order string, id int64) (bool, error) {
		var ids []int64
		q := l.db.WithContext(ctx).Model(&models.AuditEvent{}).Where("company_id = ?", company)
		err := req.Filter.apply(q).Where(cond, id).Order(order).Limit(1).Pluck("id", &ids).Error
		return len(ids) > 0, err
	}
	if backward {
		page.HasPreviousPage = more
		if beforeID > 0 {
			page.HasNextPage, err = beyond("id <= ?", descending, beforeID)
		}
	} else {
		page.HasNextPage = more
		if afterID > 0 {
			page.HasPreviousPage, err = beyond("id >= ?", ascending, afterID)
		}
	}
	if err != nil {
		return Page{}, fmt.Errorf("list audit log: %w", err)
	}
	return page, nil
}

func (f Filter) apply(q *gorm.DB) *gorm.DB {
	if len(f.Actions) > 0 {
		q = q.Where("action IN ?", f.Actions)
	}
	if f.UserID != "" {
		q = q.Where("(actor_id = ? OR target_user_id = ?)", f.UserID, f.UserID)
	}
	if f.App != "" {
		q = q.Where("app = ?", f.App)
	}
	if f.From != nil {
		q = q.Where("created_at >= ?", f.From.UTC())
	}
	if f.To != nil {
		q = q.Where("created_at < ?", f.To.UTC())
	}
	return q
}
