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

// Switch is the input to SetTwoFactorFor. With neither Filter nor IDs it
// matches every user of the company; with both, users matching both.
type Switch struct {
	App     App
	Enabled bool
	Filter  *Filter
	IDs     []string // at most MaxUpsert
}

// switchBatch is how many users one transaction of SetTwoFactorFor
// switches: short transactions, so logins and edits are not held up.
const switchBatch = 500

// SetTwoFactorFor switches 2FA for every matching user, in batches of one
// transaction each, and returns how many it changed. Admin only. Users
// who already have the value are neither written nor audited. A failure
// part way leaves the earlier batches done; running it again finishes.
func (s *Service) SetTwoFactorFor(ctx context.Context, c auth.Caller, sw Switch) (int, error) {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return 0, fmt.Errorf("set two-factor for users: %w", err)
	}
	var v validation.Errors
	if !sw.App.Valid() {
		v.Add(validation.CodeInvalidValue, "unknown app", "app")
	}
	if len(sw.IDs) > MaxUpsert {
		v.Add(validation.CodeInvalidValue, fmt.Sprintf("at most %d ids per call", MaxUpsert), "userIds")
	} else {
		// No stored id fails these rules, so a faulty one is a mistake to
		// report, not a silent non-match (nor 500 ids of megabytes each).
		for i, id := range sw.IDs {
			v.ID(id, "userIds", strconv.Itoa(i))
		}
	}
	sw.Filter.validate(&v, "filter")
	if err := v.Err(); err != nil {
		return 0, fmt.Errorf("set two-factor for users: %w", err)
	}
	changed, last := 0, ""
	for {
		n, next, err := s.switchBatch(ctx, c, sw, last)
		changed += n
		if err != nil {
			return changed, fmt.Errorf("set two-factor for users: %w", err)
		}
		if next == "" {
			return changed, nil
		}
		last = next
	}
}

// switchBatch switches the next batch of candidates after id last, in one
// transaction. next is the last candidate read, or "" at the end.
func (s *Service) switchBatch(ctx context.Context, c auth.Caller, sw Switch, last string) (int, string, error) {
	if !sw.App.Valid() { // SetTwoFactorFor refused it; never an empty column
		return 0, "", fmt.Errorf("unknown app %q", sw.App)
	}
	col := sw.App.Column()
	var (
		events []*audit.Event
		next   string
	)
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := store.PlanPerExecution(tx); err != nil { // as in Upsert: batches of ids
			return err
		}
		// Only users whose switch differs are candidates: the rest need
		// no write and no audit row.
		q := sw.Filter.where(tx.Clauses(clause.Locking{Strength: "UPDATE"}).
			Where("company_id = ? AND "+col+" <> ?", c.Company, sw.Enabled))
		if sw.IDs != nil {
			q = q.Where("id IN ?", sw.IDs)
		}
		if last != "" {
			q = q.Where("id > ?", last)
		}
		var rows []models.User
		if err := q.Order("id ASC").Limit(switchBatch).Find(&rows).Error; err != nil {
			return err
		}
		if len(rows) == switchBatch {
			next = rows[len(rows)-1].ID
		}
		rows, err := s.keepLocked(ctx, c.Company, sw.Filter, rows)
		if err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]string, len(rows))
		for i, r := range rows {
			ids[i] = r.ID
			events = append(events, s.switchEvent(c, sw, fromRow(r)))
		}
		err = tx.Model(&models.User{}).Where("company_id = ? AND id IN ?", c.Company, ids).Update(col, sw.Enabled).Error
		if err != nil {
			return err
		}
		return s.writeMany(tx, events)
	})
	if err != nil {
		return 0, "", err
	}
	s.audit.Announce(ctx, events...)
	return len(events), next, nil
}

func (s *Service) switchEvent(c auth.Caller, sw Switch, u User) *audit.Event {
	action := audit.UserTwoFactorDisabled
	if sw.Enabled {
		action = audit.UserTwoFactorEnabled
	}
	e := s.event(c, action, u, audit.Change{
		Before: map[string]any{"enabled": !sw.Enabled},
		After:  map[string]any{"enabled": sw.Enabled},
	})
	e.App = string(sw.App)
	return e
}
