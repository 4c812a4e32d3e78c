package apps_test

import (
	"context"
	"sync"
	"testing"

	"gorm.io/gorm/schema"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/models"
)

// TestEveryAppHasItsColumns: an app added to the table without a migration
// (or without its model field) fails here. The migrated database has the
// app's users and company_settings columns, and the GORM models map them.
func TestEveryAppHasItsColumns(t *testing.T) {
	db, err := store.OpenDB(context.Background(), "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	user := parse(t, &models.User{})
	set := parse(t, &models.CompanySettings{})
	for _, a := range apps.All() {
		if !db.Migrator().HasColumn(&models.User{}, a.Column()) {
			t.Errorf("%s: no migration adds users.%s", a, a.Column())
		}
		if !db.Migrator().HasColumn(&models.CompanySettings{}, a.DefaultColumn()) {
			t.Errorf("%s: no migration adds company_settings.%s", a, a.DefaultColumn())
		}
		if f := user.LookUpField(a.Column()); f == nil || f.FieldType.Name() != "bool" {
			t.Errorf("%s: models.User has no bool field for %s", a, a.Column())
		}
		if f := set.LookUpField(a.DefaultColumn()); f == nil || f.FieldType.Name() != "bool" {
			t.Errorf("%s: models.CompanySettings has no bool field for %s", a, a.DefaultColumn())
		}
	}
}

func parse(t *testing.T, model any) *schema.Schema {
	t.Helper()
	s, err := schema.Parse(model, &sync.Map{}, schema.NamingStrategy{})
	if err != nil {
		t.Fatalf("parse %T: %v", model, err)
	}
	return s
}
