package users

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/twofactor/service/internal/apps"
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

// upsertIn does Upsert's work in tx. It inserts first and locks only the
// ids that were already there: an import then never reads its company's
// users at all, and PostgreSQL, whose statistics lag behind a company
// that grows by thousands at a time, planned the lookup of 500 ids as a
// scan of the whole company (12 ms a batch at 100,000 users, and rising).
// A user created concurrently is simply updated.
func (s *Service) upsertIn(tx *gorm.DB, c auth.Caller, items []NewUser) ([]UpsertResult, []*audit.Event, []string, error) {
	created, err := s.insertNew(tx, c.Company, items)
	if err != nil {
		return nil, nil, nil, err
	}
	var rest []NewUser
	for _, n := range items {
		if _, ok := created[n.ID]; !ok {
			rest = append(rest, n)
		}
	}
	existing, err := lockUsers(tx, c.Company, rest)
	if err != nil {
		return nil, nil, nil, err
	}
	out := make([]UpsertResult, len(items))
	var (
		events  []*audit.Event
		voidIDs []string
	)
	for i, n := range items {
		if row, ok := created[n.ID]; ok {
			out[i] = UpsertResult{User: fromRow(row), Status: Created}
			events = append(events, s.event(c, audit.UserCreated, out[i].User,
				audit.Change{Before: map[string]any{}, After: snapshot(out[i].User)}))
			continue
		}
		row, ok := existing[n.ID]
		if !ok { // deleted by another call since our insert found it
			return nil, nil, nil, ErrAlreadyExists
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
	return out, events, voidIDs, nil
}

// lockUsers reads the items' existing users, locked, in one SELECT.
func lockUsers(tx *gorm.DB, company string, items []NewUser) (map[string]models.User, error) {
	out := make(map[string]models.User, len(items))
	if len(items) == 0 {
		return out, nil
	}
	ids := make([]string, len(items))
	for i, n := range items {
		ids[i] = n.ID
	}
	var rows []models.User
	err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).
		Where("company_id = ? AND id IN ?", company, ids).Order("id").Find(&rows).Error // locks in id order, as insertRows
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.ID] = r
	}
	return out, nil
}

// insertNew inserts the items whose ids are free, with the company
// defaults read in tx, and returns the rows it inserted by id.
func (s *Service) insertNew(tx *gorm.DB, company string, items []NewUser) (map[string]models.User, error) {
	if len(items) == 0 {
		return nil, nil
	}
	defaults, err := s.defaults.DefaultsIn(tx, company)
	if err != nil {
		return nil, err
	}
	rows := make([]models.User, len(items))
	for i, n := range items {
		rows[i] = models.User{CompanyID: company, ID: n.ID, Email: models.Nullable(n.Email),
			Phone: models.Nullable(n.Phone), DisplayName: models.Nullable(n.DisplayName)}
		applyDefaults(&rows[i], defaults)
	}
	inserted, err := insertRows(tx, rows)
	if err != nil {
		return nil, err
	}
	out := make(map[string]models.User, len(inserted))
	for _, r := range rows {
		if inserted[r.ID] {
			out[r.ID] = r
		}
	}
	return out, nil
}

// insertRows inserts rows of one company, all with the same switches,
// skipping ids that exist, and returns the ids it inserted. On PostgreSQL
// it sends one array per column and unnests them, which PostgreSQL plans
// far faster than a VALUES list of 500 rows.
func insertRows(tx *gorm.DB, rows []models.User) (map[string]bool, error) {
	now := store.Now()
	for i := range rows {
		rows[i].CreatedAt, rows[i].UpdatedAt = now, now
	}
	if !store.IsPostgres(tx) {
		return insertRowsSQLite(tx, rows)
	}
	// Ids in one order for every call: two calls that share ids then wait
	// for each other instead of deadlocking.
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(a, b models.User) int { return strings.Compare(a.ID, b.ID) })
	n := len(rows)
	ids, emails, phones, names := make([]string, n), make([]*string, n), make([]*string, n), make([]*string, n)
	for i, r := range rows {
		ids[i], emails[i], phones[i], names[i] = r.ID, r.Email, r.Phone, r.DisplayName
	}
	cols, vals := "company_id, id, email, phone, display_name, created_at, updated_at", "?, u.*, ?, ?"
	args := []any{rows[0].CompanyID, now, now}
	for _, app := range apps.All() {
		cols += ", " + app.Column() // from the apps table, never from input
		vals += ", ?"
		args = append(args, rows[0].TwoFactor(app))
	}
	args = append(args, store.Array(ids), store.Array(emails), store.Array(phones), store.Array(names))
	var got []string
	err := tx.Raw(`INSERT INTO users (`+cols+`) SELECT `+vals+`
		FROM unnest(?::text[], ?::text[], ?::text[], ?::text[]) AS u(id, email, phone, display_name)
		ON CONFLICT DO NOTHING RETURNING id`, args...).Scan(&got).Error
	if err != nil {
		return nil, err
	}
	inserted := make(map[string]bool, len(got))
	for _, id := range got {
		inserted[id] = true
	}
	return inserted, nil
}

// insertRowsSQLite skips the ids that exist and inserts the rest. SQLite
// has one writer (the transaction holds it), so nothing comes between the
// two statements.
func insertRowsSQLite(tx *gorm.DB, rows []models.User) (map[string]bool, error) {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	var taken []string
	if err := tx.Model(&models.User{}).Where("company_id = ? AND id IN ?", rows[0].CompanyID, ids).
		Pluck("id", &taken).Error; err != nil {
		return nil, err
	}
	inserted := make(map[string]bool, len(rows))
	for _, id := range ids {
		inserted[id] = true
	}
	fresh := rows[:0:0]
	for _, id := range taken {
		delete(inserted, id)
	}
	for _, r := range rows {
		if inserted[r.ID] {
			fresh = append(fresh, r)
		}
	}
	if len(fresh) > 0 {
		if err := tx.CreateInBatches(&fresh, MaxUpsert).Error; err != nil {
			return nil, err
		}
	}
	return inserted, nil
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
