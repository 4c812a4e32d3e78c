package users

import (
	"context"
	"fmt"
	"strconv"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

// MaxUpsert is the most users one Upsert takes.
const MaxUpsert = 500

// UpsertStatus is what Upsert did with one item.
type UpsertStatus string

// Upsert outcomes.
const (
	Created   UpsertStatus = "CREATED"
	Updated   UpsertStatus = "UPDATED"
	Unchanged UpsertStatus = "UNCHANGED"
)

// UpsertResult is one item's outcome, in input order.
type UpsertResult struct {
	User   User
	Status UpsertStatus
}

// validateAll checks every item, naming faults by index: ["users", "3",
// "email"]. Duplicate ids are faults too.
func validateAll(items []NewUser) error {
	var v validation.Errors
	if len(items) > MaxUpsert {
		v.Add(validation.CodeInvalidValue, fmt.Sprintf("at most %d users per call", MaxUpsert), "users")
		return v
	}
	seen := make(map[string]int, len(items))
	for i := range items {
		idx := strconv.Itoa(i)
		if err := items[i].validate(); err != nil {
			for _, fe := range err.(validation.Errors) {
				v.Add(fe.Code, fe.Message, append([]string{"users", idx}, fe.Field...)...)
			}
		}
		if j, dup := seen[items[i].ID]; dup {
			v.Add(validation.CodeInvalidValue, fmt.Sprintf("the same id as users[%d]", j), "users", idx, "id")
		}
		seen[items[i].ID] = i
	}
	return v.Err()
}

// Upsert creates the missing users, with the company defaults read in the
// transaction, and updates the changed ones, in one transaction. Admins
// and services only. Any invalid item means nothing is written. Audit rows
// are written only for real changes.
func (s *Service) Upsert(ctx context.Context, c auth.Caller, items []NewUser) ([]UpsertResult, error) {
	if err := c.Require(auth.RoleAdmin, auth.RoleService); err != nil {
		return nil, fmt.Errorf("upsert users: %w", err)
	}
	if err := validateAll(items); err != nil {
		return nil, fmt.Errorf("upsert users: %w", err)
	}
	var (
		out     []UpsertResult
		events  []*audit.Event
		voidIDs []string
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		// 500-id batches: a generic plan made while the company was
		// small scans all its users (see store.PlanPerExecution).
		if err := store.PlanPerExecution(tx); err != nil {
			return err
		}
		var err error
		out, events, voidIDs, err = s.upsertIn(tx, c, items)
		if err != nil {
			return err
		}
		return s.writeMany(tx, events)
	})
	if err != nil {
		return nil, fmt.Errorf("upsert users: %w", err)
	}
	s.audit.Announce(ctx, events...)
	for _, id := range voidIDs {
		if err := s.void(ctx, c.Company, id); err != nil {
			return out, fmt.Errorf("upsert users: saved, but: %w", err)
		}
	}
	return out, nil
}

// upsertIn does Upsert's work in tx: one SELECT for the existing users,
// one batched INSERT for the new ones, one UPDATE per changed one.
func (s *Service) upsertIn(tx *gorm.DB, c auth.Caller, items []NewUser) ([]UpsertResult, []*audit.Event, []string, error) {
	existing, err := lockUsers(tx, c.Company, items)
	if err != nil {
		return nil, nil, nil, err
	}
	out := make([]UpsertResult, len(items))
	var (
		fresh   []models.User
		events  []*audit.Event
		voidIDs []string
	)
	for i, n := range items {
		row, ok := existing[n.ID]
		if !ok {
			fresh = append(fresh, models.User{CompanyID: c.Company, ID: n.ID, Email: models.Nullable(n.Email),
				Phone: models.Nullable(n.Phone), DisplayName: models.Nullable(n.DisplayName)})
			out[i].Status = Created
			continue
		}
		e, p, d := n.Email, n.Phone, n.DisplayName
		details, address := Change{ID: n.ID, Email: &e, Phone: &p, DisplayName: &d}.apply(&row)
		out[i] = UpsertResult{User: fromRow(row), Status: Unchanged}
		if details == nil {
			continue
		}
		if err := saveAddresses(tx, &row); err != nil {
			return nil, nil, nil, err
		}
		out[i] = UpsertResult{User: fromRow(row), Status: Updated}
		events = append(events, s.event(c, audit.UserUpdated, out[i].User, changeDetails(details)))
		if address {
			voidIDs = append(voidIDs, n.ID)
		}
	}
	created, err := s.insertMany(tx, c, fresh)
	if err != nil {
		return nil, nil, nil, err
	}
	for i, j := 0, 0; i < len(out); i++ {
		if out[i].Status == Created {
			out[i].User = fromRow(created[j])
			events = append(events, s.event(c, audit.UserCreated, out[i].User,
				audit.Change{Before: map[string]any{}, After: snapshot(out[i].User)}))
			j++
		}
	}
	return out, events, voidIDs, nil
}

// lockUsers reads the items' existing users, locked, in one SELECT.
func lockUsers(tx *gorm.DB, company string, items []NewUser) (map[string]models.User, error) {
	ids := make([]string, len(items))
	for i, n := range items {
		ids[i] = n.ID
	}
	var rows []models.User
	if len(ids) > 0 {
		err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).
			Where("company_id = ? AND id IN ?", company, ids).Find(&rows).Error
		if err != nil {
			return nil, err
		}
	}
	out := make(map[string]models.User, len(rows))
	for _, r := range rows {
		out[r.ID] = r
	}
	return out, nil
}

// insertMany creates rows with the company defaults read in tx. A user
// created concurrently since the SELECT makes the whole call fail with
// ErrAlreadyExists; the caller retries and gets an update.
func (s *Service) insertMany(tx *gorm.DB, c auth.Caller, rows []models.User) ([]models.User, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	defaults, err := s.defaults.DefaultsIn(tx, c.Company)
	if err != nil {
		return nil, err
	}
	for i := range rows {
		applyDefaults(&rows[i], defaults)
	}
	res := tx.Clauses(clause.OnConflict{DoNothing: true}).CreateInBatches(&rows, MaxUpsert)
	if res.Error != nil {
		return nil, res.Error
	}
	if res.RowsAffected != int64(len(rows)) {
		return nil, ErrAlreadyExists
	}
	return rows, nil
}

// writeMany writes events with one insert when the log can.
func (s *Service) writeMany(tx *gorm.DB, events []*audit.Event) error {
	if w, ok := s.audit.(interface {
		WriteMany(tx *gorm.DB, events []*audit.Event) error
	}); ok {
		return w.WriteMany(tx, events)
	}
	for _, e := range events {
		if err := s.audit.Write(tx, e); err != nil {
			return err
		}
	}
	return nil
}
