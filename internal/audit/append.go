package audit

import (
	"context"
	"errors"
	"fmt"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/models"
)

// AppendResult is what AppendOnce did, company by company: a company
// whose events the database refuses (a broken chain head, a constraint)
// does not hold back the others.
type AppendResult struct {
	// Stored maps each company whose events are all in the table now to
	// how many of them this call wrote (0: all were stored before).
	Stored map[string]int
	// Failed maps each company whose events were not stored to why.
	// None of its events was written by this call.
	Failed map[string]error
}

// Written is how many events the call wrote, all companies together.
func (r AppendResult) Written() int {
	n := 0
	for _, w := range r.Stored {
		n += w
	}
	return n
}

// CompanyError is one company's failure in AppendOnce.
type CompanyError struct {
	Company string
	Err     error
}

func (e *CompanyError) Error() string {
	return fmt.Sprintf("append audit events of company %q: %v", e.Company, e.Err)
}

func (e *CompanyError) Unwrap() error { return e.Err }

// AppendOnce writes events made elsewhere (the challenge outbox in Redis),
// each at most once: an event whose UID is stored already is skipped, so
// a move that is retried, or done by two instances at once, stores every
// event once. Events are grouped by company, one transaction each, in the
// order given; every event must have a UID. Every company is tried: the
// error joins a *CompanyError per company that failed, and the result
// says which companies' events are stored.
func (l *Log) AppendOnce(ctx context.Context, events []*Event) (AppendResult, error) {
	order, byCompany := groupByCompany(events)
	res := AppendResult{Stored: map[string]int{}, Failed: map[string]error{}}
	var errs []error
	for _, company := range order {
		fresh, err := l.appendCompany(ctx, company, byCompany[company])
		if err != nil {
			res.Failed[company] = err
			errs = append(errs, &CompanyError{Company: company, Err: err})
			continue
		}
		res.Stored[company] = len(fresh)
		l.Announce(ctx, fresh...)
	}
	return res, errors.Join(errs...)
}

// groupByCompany splits events by company, companies in first-seen order.
func groupByCompany(events []*Event) ([]string, map[string][]*Event) {
	var order []string
	byCompany := map[string][]*Event{}
	for _, e := range events {
		if _, ok := byCompany[e.Company]; !ok {
			order = append(order, e.Company)
		}
		byCompany[e.Company] = append(byCompany[e.Company], e)
	}
	return order, byCompany
}

// appendCompany writes the events of one company whose UIDs are new, in
// one transaction, and returns them.
func (l *Log) appendCompany(ctx context.Context, company string, events []*Event) ([]*Event, error) {
	for _, e := range events {
		if e.UID == "" {
			return nil, errors.New("an event has no uid")
		}
	}
	var fresh []*Event
	err := l.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// The lock first, so no other writer stores one of these UIDs
		// between the check and the insert.
		if err := lockCompany(tx, company); err != nil {
			return err
		}
		var err error
		if fresh, err = unstored(tx, company, events); err != nil {
			return err
		}
		return l.WriteMany(tx, fresh)
	})
	if err != nil {
		return nil, fmt.Errorf("append audit events: %w", err)
	}
	return fresh, nil
}

// unstored is the events whose UIDs company has not stored yet, each UID
// once.
func unstored(tx *gorm.DB, company string, events []*Event) ([]*Event, error) {
	uids := make([]string, len(events))
	for i, e := range events {
		uids[i] = e.UID
	}
	var stored []string
	if err := tx.Model(&models.AuditEvent{}).Where("company_id = ? AND uid IN ?", company, uids).
		Pluck("uid", &stored).Error; err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(stored)+len(events))
	for _, u := range stored {
		seen[u] = true
	}
	var fresh []*Event
	for _, e := range events {
		if !seen[e.UID] { // also drops a UID given twice in one call
			seen[e.UID] = true
			fresh = append(fresh, e)
		}
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
