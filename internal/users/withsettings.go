package users

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/models"
)

// settingsFiller is a Defaults that caches settings (settings.Service):
// on a miss it takes the company's settings row read along with a user,
// so an issue's cold read is one statement, not the user and then the
// settings.
type settingsFiller interface {
	FillOnMiss(company string) func(models.CompanySettings)
}

var _ settingsFiller = (*settings.Service)(nil) // what the app wires as Defaults

// userWithSettings is a user row and its company's settings row, the
// latter's columns prefixed (zero when the company has none yet).
type userWithSettings struct {
	models.User
	Settings models.CompanySettings `gorm:"embedded;embeddedPrefix:s_"`
}

// byIDWithSettings is ByID that also reads the company's settings in the
// same statement and hands them to fill.
func (s *Service) byIDWithSettings(ctx context.Context, company, id string, fill func(models.CompanySettings)) (User, error) {
	q, err := joinedQuery(s.db)
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	var row userWithSettings
	err = s.db.WithContext(ctx).Raw(q, company, id).Scan(&row).Error
	if err == nil && row.ID == "" {
		err = gorm.ErrRecordNotFound // Scan finds no row without an error
	}
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return User{}, fmt.Errorf("get user: %w", ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("get user: %w", err)
	}
	fill(row.Settings)
	return fromRow(row.User), nil
}

var joined struct {
	once sync.Once
	q    string
	err  error
}

// joinedQuery is the SELECT of a user with its company's settings, its
// column lists taken from the models, so a column added to either is
// read too.
func joinedQuery(db *gorm.DB) (string, error) {
	joined.once.Do(func() {
		u, err := parse(db, &models.User{})
		if err != nil {
			joined.err = err
			return
		}
		cs, err := parse(db, &models.CompanySettings{})
		if err != nil {
			joined.err = err
			return
		}
		cols := make([]string, 0, len(u.cols)+len(cs.cols))
		for _, c := range u.cols {
			cols = append(cols, "u."+c)
		}
		for _, c := range cs.cols {
			cols = append(cols, "cs."+c+" AS s_"+c)
		}
		joined.q = "SELECT " + strings.Join(cols, ", ") + " FROM " + u.table + " u LEFT JOIN " + cs.table +
			" cs ON cs.company_id = u.company_id WHERE u.company_id = ? AND u.id = ? LIMIT 1"
	})
	return joined.q, joined.err
}

type tableCols struct {
	table string
	cols  []string
}

func parse(db *gorm.DB, model any) (tableCols, error) {
	stmt := &gorm.Statement{DB: db}
	if err := stmt.Parse(model); err != nil {
		return tableCols{}, fmt.Errorf("parse %T: %w", model, err)
	}
	return tableCols{table: stmt.Schema.Table, cols: stmt.Schema.DBNames}, nil
}
