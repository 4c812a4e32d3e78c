package audit

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/auth"
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
	Actions  []Action
	Category Category // empty: both
	UserID   string   // actor or target
	App      string
	From     *time.Time // inclusive
	To       *time.Time // exclusive
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

// Kinds of sealed values: a cursor is never accepted as an id, nor the
// reverse.
const (
	cursorKind = "audit"
	idKind     = "audit-event"
)

// Cursor is the opaque position of e in its company's log.
func (l *Log) Cursor(e Event) string { return l.codec.SealID(cursorKind, e.Company, e.ID) }

// ParseCursor returns the event id in a cursor that l handed out for
// company; any other string is cursor.ErrBad.
func (l *Log) ParseCursor(company, s string) (int64, error) {
	return l.codec.OpenID(cursorKind, company, s)
}

// PublicID is e's id as clients see it. Row ids are one sequence across
// all companies, so they are never shown: this is the row id encrypted and
// bound to the company, stable for as long as the key is.
func (l *Log) PublicID(e Event) string { return l.codec.SealID(idKind, e.Company, e.ID) }

// ParseID returns the row id behind a public id of company's log.
func (l *Log) ParseID(company, s string) (int64, error) { return l.codec.OpenID(idKind, company, s) }

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
		if afterID, err = l.ParseCursor(company, req.After); err != nil {
			return Page{}, fmt.Errorf("list audit log: after: %w", err)
		}
	}
	if req.Before != "" {
		if beforeID, err = l.ParseCursor(company, req.Before); err != nil {
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

	scope := func() *gorm.DB {
		return req.Filter.apply(l.db.WithContext(ctx).Model(&models.AuditEvent{}).Where("company_id = ?", company))
	}
	q := scope()
	if afterID > 0 {
		q = q.Where("id < ?", afterID)
	}
	if beforeID > 0 {
		q = q.Where("id > ?", beforeID)
	}
	q = q.Limit(size + 1)
	if backward {
		q = q.Order(ascending)
	} else {
		q = q.Order(descending)
	}
	// Is anything on the far side of the cursor the page starts from? One
	// more indexed row, asked in the same statement.
	var probe *gorm.DB
	farSide := func(id int64) bool { return false }
	switch {
	case backward && beforeID > 0:
		probe = scope().Where("id <= ?", beforeID).Order(descending).Limit(1)
		farSide = func(id int64) bool { return id <= beforeID }
	case !backward && afterID > 0:
		probe = scope().Where("id >= ?", afterID).Order(ascending).Limit(1)
		farSide = func(id int64) bool { return id >= afterID }
	}
	var rows []models.AuditEvent
	if probe == nil {
		err = q.Find(&rows).Error
	} else {
		err = l.db.WithContext(ctx).Raw("SELECT * FROM (?) AS page UNION ALL SELECT * FROM (?) AS probe", q, probe).Scan(&rows).Error
	}
	if err != nil {
		return Page{}, fmt.Errorf("list audit log: %w", err)
	}
	beyond := false
	rows = slices.DeleteFunc(rows, func(r models.AuditEvent) bool {
		if farSide(r.ID) {
			beyond = true
			return true
		}
		return false
	})
	// Newest first; UNION ALL keeps no order of its own.
	slices.SortFunc(rows, func(a, b models.AuditEvent) int { return cmp.Compare(b.ID, a.ID) })
	more := len(rows) > size
	if more {
		if backward {
			rows = rows[len(rows)-size:] // the extra row is the newest, farthest from the cursor
		} else {
			rows = rows[:size]
		}
	}
	page := Page{Events: make([]Event, len(rows))}
	for i, r := range rows {
		page.Events[i] = fromRow(r)
	}
	if backward {
		page.HasPreviousPage, page.HasNextPage = more, beyond
	} else {
		page.HasNextPage, page.HasPreviousPage = more, beyond
	}
	return page, nil
}

func (f Filter) apply(q *gorm.DB) *gorm.DB {
	if len(f.Actions) > 0 {
		q = q.Where("action IN ?", f.Actions)
	}
	if f.Category != "" {
		q = q.Where("category = ?", string(f.Category))
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
