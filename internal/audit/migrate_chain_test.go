package audit_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/glebarez/sqlite"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/models"
)

// bareDB is an empty database with no migrations applied: a SQLite file,
// or a PostgreSQL schema of its own when TEST_DATABASE_URL is set.
func bareDB(t *testing.T) *gorm.DB {
	t.Helper()
	cfg := &gorm.Config{Logger: logger.Discard, NowFunc: store.Now, SkipDefaultTransaction: true}
	var dial gorm.Dialector
	if u := testenv.EmptyDatabaseURL(t); u != "" {
		dial = postgres.Open(u)
	} else {
		dial = sqlite.Open(filepath.Join(t.TempDir(), "bare.db") + "?_pragma=busy_timeout(10000)&_txlock=immediate")
	}
	db, err := gorm.Open(dial, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	return db
}

// TestMigrationChainsExistingRows: rows written before hashing (plain SQL
// at migration 0003, as that version wrote them) end in valid chains after
// migrating, per company and category, past several 1,000-row batches;
// new writes extend them and a later change is still caught.
func TestMigrationChainsExistingRows(t *testing.T) {
	ctx := context.Background()
	db := bareDB(t)
	if err := store.MigrateTo(ctx, db, "0003_audit_category_uid_hash"); err != nil {
		t.Fatal(err)
	}
	acme, other := testenv.Company(t), testenv.Company(t)
	base := time.Date(2024, 5, 1, 8, 0, 0, 0, time.UTC)
	counts := map[string]int{}
	err := db.Transaction(func(tx *gorm.DB) error {
		for i := range 2600 {
			company, action, category := acme, "USER_UPDATED", "SETTINGS"
			switch {
			case i%10 == 3:
				company = other
			case i%7 == 0:
				action, category = "FAILED_ATTEMPTS_LIMIT_REACHED", "AUTHENTICATION"
			}
			var name, app, uid any
			if i%2 == 0 {
				name, app = fmt.Sprintf("Admin %d", i), "web"
			}
			if i%5 == 0 {
				uid = fmt.Sprintf("u-%d", i)
			}
			counts[company+"/"+category]++
			if err := tx.Exec(`INSERT INTO audit_events (company_id, action, actor_id, actor_name, actor_role,
					target_user_id, target_user_name, app, details, created_at, category, uid)
				VALUES (?, ?, ?, ?, 'admin', ?, NULL, ?, ?, ?, ?, ?)`,
				company, action, fmt.Sprintf("actor-%d", i%9), name, fmt.Sprintf("user-%d", i), app,
				fmt.Sprintf(`{"before": {"n": %d}, "after":{"n":%d}}`, i, i+1),
				base.Add(time.Duration(i)*time.Second), category, uid).Error; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	var unhashed int64
	if err := db.Model(&models.AuditEvent{}).Where("hash IS NULL").Count(&unhashed).Error; err != nil || unhashed != 0 {
		t.Fatalf("%d rows left without a hash (%v)", unhashed, err)
	}
	log := audit.NewLog(db, nil, nil)
	wantOK(t, verify(t, log, acme, audit.Window{Category: audit.Settings}), counts[acme+"/SETTINGS"])
	wantOK(t, verify(t, log, acme, audit.Window{Category: audit.Authentication}), counts[acme+"/AUTHENTICATION"])
	wantOK(t, verify(t, log, other, audit.Window{}), counts[other+"/SETTINGS"])
	if counts[acme+"/SETTINGS"] < 2*1000 {
		t.Fatalf("only %d rows in the largest chain: the test must cross batches", counts[acme+"/SETTINGS"])
	}

	e := settingsEvent(acme, 1, time.Time{})
	writeMany(t, db, log, []*audit.Event{e})
	wantOK(t, verify(t, log, acme, audit.Window{}), counts[acme+"/SETTINGS"]+counts[acme+"/AUTHENTICATION"]+1)
	var first models.AuditEvent
	if err := db.Where("company_id = ? AND category = 'SETTINGS'", acme).Order("id").Offset(1500).First(&first).Error; err != nil {
		t.Fatal(err)
	}
	exec(t, db, `UPDATE audit_events SET details = '{}' WHERE company_id = ? AND id = ?`, acme, first.ID)
	wantBroken(t, verify(t, log, acme, audit.Window{}), first.ID)
}
