package audit

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/models"
)

// AppendOnce writes events made elsewhere (the challenge outbox in Redis),
// each at most once: an event whose UID is stored already is skipped, so
// a move that is retried, or done by two instances at once, stores every
// event once. Events are grouped by company, one transaction each, in the
// order given; every event must have a UID. It returns how many it wrote.
func (l *Log) AppendOnce(ctx context.Context, events []*Event) (int, error) {
	var order []string
	byCompany := map[string][]*Event{}
	for _, e := range events {
		if e.UID == "" {
			return 0, fmt.Errorf("append audit events: an event of %q has no uid", e.Company)
		}
		if _, ok := byCompany[e.Company]; !ok {
			order = append(order, e.Company)
		}
		byCompany[e.Company] = append(byCompany[e.Company], e)
	}
	written := 0
	for _, company := range order {
		fresh, err := l.appendCompany(ctx, company, byCompany[company])
		if err != nil {
			return written, err
		}
		written += len(fresh)
		l.Announce(ctx, fresh...)
	}
	return written, nil
}

// appendCompany writes the events of one company whose UIDs are new, in
// one transaction, and returns them.
func (l *Log) appendCompany(ctx context.Context, company string, events []*Event) ([]*Event, error) {
	var fresh []*Event
	err := l.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The lock first, so no other writer stores one of these UIDs
		// between the check and the insert.
		if err := lockCompany(tx, company); err != nil {
			return err
		}
		uids := make([]string, len(events))
		for i, e := range events {
			uids[i] = e.UID
		}
		var stored []string
		if err := tx.Model(&models.AuditEvent{}).Where("company_id = ? AND uid IN ?", company, uids).
			Pluck("uid", &stored).Error; err != nil {
			return err
		}
		seen := make(map[string]bool, len(stored)+len(events))
		for _, u := range stored {
			seen[u] = true
		}
		fresh = fresh[:0]
		for _, e := range events {
			if !seen[e.UID] { // also drops a UID given twice in one call
				seen[e.UID] = true
				fresh = append(fresh, e)
			}
		}
		return l.WriteMany(tx, fresh)
	})
	if err != nil {
		return nil, fmt.Errorf("append audit events: %w", err)
	}
	return fresh, nil
}

// lockCompany serialises company's audit writers until tx ends, so its ids
// commit in order and a reader that has seen id N has seen every smaller
// id: live subscribers then never skip a row.
func lockCompany(tx *gorm.DB, company string) error {
	if !store.IsPostgres(tx) {
		return nil // one writer at a time anyway
	}
	return tx.Exec("SELECT pg_advisory_xact_lock(hashtext(?))", "audit:"+company).Error
}
