package audit

import (
	"context"
	"fmt"
	"slices"

	"github.com/twofactor/service/models"
)

// Since returns up to limit of company's events with after < id <= until
// (until 0: no upper bound) that match f, oldest first. Live subscribers
// use it to replay and to catch up.
func (l *Log) Since(ctx context.Context, company string, after, until int64, f Filter, limit int) ([]Event, error) {
	q := f.apply(l.db.WithContext(ctx).Model(&models.AuditEvent{}).Where("company_id = ? AND id > ?", company, after))
	if until > 0 {
		q = q.Where("id <= ?", until)
	}
	var rows []models.AuditEvent
	if err := q.Order(ascending).Limit(limit).Find(&rows).Error; err != nil {
		return nil, fmt.Errorf("read audit events since %d: %w", after, err)
	}
	out := make([]Event, len(rows))
	for i, r := range rows {
		out[i] = fromRow(r)
	}
	return out, nil
}

// LastID is the newest event id of company, 0 for none.
func (l *Log) LastID(ctx context.Context, company string) (int64, error) {
	var ids []int64
	err := l.db.WithContext(ctx).Model(&models.AuditEvent{}).Where("company_id = ?", company).
		Order(descending).Limit(1).Pluck("id", &ids).Error
	if err != nil {
		return 0, fmt.Errorf("read last audit id: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	return ids[0], nil
}

// Match reports whether e passes f; it mirrors the SQL of apply.
func (f Filter) Match(e Event) bool {
	switch {
	case len(f.Actions) > 0 && !slices.Contains(f.Actions, e.Action):
		return false
	case f.Category != "" && e.Category() != f.Category:
		return false
	case f.UserID != "" && e.Actor.ID != f.UserID && (e.Target == nil || e.Target.ID != f.UserID):
		return false
	case f.App != "" && e.App != f.App:
		return false
	case f.From != nil && e.CreatedAt.Before(*f.From):
		return false
	case f.To != nil && !e.CreatedAt.Before(*f.To):
		return false
	}
	return true
}
