package store

import (
	"context"
	"fmt"
	"time"

	"github.com/go-gormigrate/gormigrate/v2"
	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit/hashchain"
)

// migrationLockKey serialises migrations across instances that start at
// the same time against one PostgreSQL database.
const migrationLockKey = 0x2fa_5e77

// Migrate brings the schema to the newest version. Each migration is a
// frozen snapshot: it never imports models, so later model changes cannot
// rewrite history.
func Migrate(ctx context.Context, db *gorm.DB) error {
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if IsPostgres(tx) {
			if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", migrationLockKey).Error; err != nil {
				return err
			}
		}
		return gormigrate.New(tx, &gormigrate.Options{
			TableName:      "schema_migrations",
			IDColumnName:   "id",
			IDColumnSize:   64,
			UseTransaction: false, // already inside one
		}, migrations).Migrate()
	})
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

var migrations = []*gormigrate.Migration{
	{
		ID: "0001_initial",
		Migrate: func(tx *gorm.DB) error {
			type companySettings struct {
				CompanyID      string `gorm:"primaryKey;size:64"`
				DeliveryMethod string `gorm:"size:32;not null"`
				ContactName    *string
				ContactEmail   *string
				ContactPhone   *string
				DefaultWeb     bool `gorm:"not null"`
				DefaultManager bool `gorm:"not null"`
				CreatedAt      time.Time
				UpdatedAt      time.Time
			}
			type user struct {
				CompanyID        string `gorm:"primaryKey;size:64"`
				ID               string `gorm:"primaryKey;size:128"`
				Email            *string
				Phone            *string
				DisplayName      *string
				TwoFactorWeb     bool `gorm:"not null"`
				TwoFactorManager bool `gorm:"not null"`
				CreatedAt        time.Time
				UpdatedAt        time.Time
			}
			type auditEvent struct {
				ID             int64  `gorm:"primaryKey;autoIncrement"`
				CompanyID      string `gorm:"size:64;not null"`
				Action         string `gorm:"size:64;not null"`
				ActorID        string `gorm:"size:128;not null"`
				ActorName      *string
				ActorRole      string  `gorm:"size:16;not null"`
				TargetUserID   *string `gorm:"size:128"`
				TargetUserName *string
				App            *string   `gorm:"size:16"`
				Details        string    `gorm:"not null"`
				CreatedAt      time.Time `gorm:"not null"`
			}
			m := tx.Migrator()
			if err := m.CreateTable(&companySettings{}); err != nil {
				return err
			}
			if err := m.CreateTable(&user{}); err != nil {
				return err
			}
			if err := m.CreateTable(&auditEvent{}); err != nil {
				return err
			}
			// Keyset pages walk (company_id, id); each filter has an index
			// that ends in id so a filtered page is still a range scan.
			for _, stmt := range []string{
				"CREATE INDEX idx_users_company_email ON users (company_id, email)",
				"CREATE INDEX idx_audit_company_id ON audit_events (company_id, id)",
				"CREATE INDEX idx_audit_company_action ON audit_events (company_id, action, id)",
				"CREATE INDEX idx_audit_company_actor ON audit_events (company_id, actor_id, id)",
				"CREATE INDEX idx_audit_company_target ON audit_events (company_id, target_user_id, id)",
				"CREATE INDEX idx_audit_company_app ON audit_events (company_id, app, id)",
				"CREATE INDEX idx_audit_company_created ON audit_events (company_id, created_at)",
			} {
				if err := tx.Exec(stmt).Error; err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		// PostgreSQL's planner prefers a primary key on id alone for
		// "company_id = ? AND id < ? ORDER BY id", and then walks other
		// companies' rows past a company's oldest page (measured: 273 ms
		// beside a 1M-row neighbour, 0.05 ms with this key). SQLite picks
		// the (company_id, id) index by itself and keeps its rowid key.
		ID: "0002_audit_company_primary_key",
		Migrate: func(tx *gorm.DB) error {
			if !IsPostgres(tx) {
				return nil
			}
			for _, stmt := range []string{
				"ALTER TABLE audit_events DROP CONSTRAINT audit_events_pkey, ADD PRIMARY KEY (company_id, id)",
				"DROP INDEX idx_audit_company_id",
			} {
				if err := tx.Exec(stmt).Error; err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		// Sign-in events (issue 10): a category per row, each with its own
		// hash chain, and a unique id per event so that an event moved from
		// Redis twice is stored once. Existing rows get their category here;
		// hashes are filled by a later migration.
		ID: "0003_audit_category_uid_hash",
		Migrate: func(tx *gorm.DB) error {
			for _, stmt := range []string{
				"ALTER TABLE audit_events ADD COLUMN category varchar(16) NOT NULL DEFAULT 'SETTINGS'",
				"ALTER TABLE audit_events ADD COLUMN uid varchar(64)",
				"ALTER TABLE audit_events ADD COLUMN hash varchar(64)",
				"UPDATE audit_events SET category = 'AUTHENTICATION' WHERE action = 'FAILED_ATTEMPTS_LIMIT_REACHED'",
				"CREATE UNIQUE INDEX idx_audit_company_uid ON audit_events (company_id, uid) WHERE uid IS NOT NULL",
				"CREATE INDEX idx_audit_company_category ON audit_events (company_id, category, id)",
			} {
				if err := tx.Exec(stmt).Error; err != nil {
					return err
				}
			}
			return nil
		},
	},
	{
		// Tamper evidence (issue 10, section 4): links every existing row
		// into its company's chain for its category, in id order, from the
		// genesis hash. The writers link new rows from here on.
		ID:      "0004_audit_hash_chain",
		Migrate: chainAuditRows0004,
	},
	{
		// Retention (issue 10, section 5): a checkpoint per chain keeps the
		// hash of the newest removed row, the hash before it and the row's
		// hashed fields (so a check can prove the row was old), and how many
		// rows were removed; a partial index finds old sign-in rows without
		// indexing settings rows, which never expire (so their bulk inserts
		// pay nothing for it).
		ID: "0005_audit_checkpoints",
		Migrate: func(tx *gorm.DB) error {
			type auditCheckpoint struct {
				CompanyID string    `gorm:"primaryKey;size:64"`
				Category  string    `gorm:"primaryKey;size:16"`
				LastID    int64     `gorm:"not null"`
				Hash      string    `gorm:"size:64;not null"`
				PrevHash  string    `gorm:"size:64;not null;default:''"`
				LastRow   string    `gorm:"not null;default:''"`
				Removed   int64     `gorm:"not null;default:0"`
				UpdatedAt time.Time `gorm:"not null"`
			}
			if err := tx.Migrator().CreateTable(&auditCheckpoint{}); err != nil {
				return err
			}
			return tx.Exec("CREATE INDEX idx_audit_auth_created ON audit_events (created_at, company_id) WHERE category = 'AUTHENTICATION'").Error
		},
	},
}

// MigrateTo applies the migrations up to and including id, and no later
// ones: for tests of what a migration does to rows written before it.
func MigrateTo(ctx context.Context, db *gorm.DB, id string) error {
	err := gormigrate.New(db.WithContext(ctx), &gormigrate.Options{
		TableName: "schema_migrations", IDColumnName: "id", IDColumnSize: 64, UseTransaction: true,
	}, migrations).MigrateTo(id)
	if err != nil {
		return fmt.Errorf("migrate to %s: %w", id, err)
	}
	return nil
}

// auditRow0004 is an audit row as migration 0004 reads it.
type auditRow0004 struct {
	ID             int64
	CompanyID      string
	Category       string
	Action         string
	ActorID        string
	ActorName      *string
	ActorRole      string
	TargetUserID   *string
	TargetUserName *string
	App            *string
	Details        string
	CreatedAt      time.Time
	UID            *string `gorm:"column:uid"`
}

// chainAuditRows0004 is migration 0004. Its SQL is frozen here like every
// migration's; the encoding is not copied but called: hashchain is a
// stored format that can never change (a change would break every stored
// chain), imports nothing of this module, and a second copy could only
// drift from the one the writers and the check use.
func chainAuditRows0004(tx *gorm.DB) error {
	var chains []struct{ CompanyID, Category string }
	if err := tx.Raw("SELECT DISTINCT company_id, category FROM audit_events ORDER BY company_id, category").
		Scan(&chains).Error; err != nil {
		return err
	}
	for _, c := range chains {
		if err := chainAuditChain0004(tx, c.CompanyID, c.Category); err != nil {
			return fmt.Errorf("chain %s/%s: %w", c.CompanyID, c.Category, err)
		}
	}
	return nil
}

// chainAuditChain0004 hashes one chain in batches of 1,000 rows, keyset
// by id, so memory stays flat whatever the chain's length.
func chainAuditChain0004(tx *gorm.DB, company, category string) error {
	prev, after := hashchain.Genesis, int64(0)
	for {
		var rows []auditRow0004
		err := tx.Raw(`SELECT id, company_id, category, action, actor_id, actor_name, actor_role, target_user_id,
				target_user_name, app, details, created_at, uid
			FROM audit_events WHERE company_id = ? AND category = ? AND id > ?
			ORDER BY company_id, category, id LIMIT 1000`, company, category, after).Scan(&rows).Error
		if err != nil || len(rows) == 0 {
			return err
		}
		ids, hashes := make([]int64, len(rows)), make([]string, len(rows))
		for i, r := range rows {
			if prev, err = hashchain.Next(prev, hashchain.Row{
				Company: r.CompanyID, Category: r.Category, Action: r.Action, ActorID: r.ActorID,
				ActorName: r.ActorName, ActorRole: r.ActorRole, TargetID: r.TargetUserID,
				TargetName: r.TargetUserName, App: r.App, Details: r.Details, CreatedAt: r.CreatedAt, UID: r.UID,
			}); err != nil {
				return err
			}
			ids[i], hashes[i] = r.ID, prev
		}
		if err := setHashes0004(tx, company, ids, hashes); err != nil {
			return err
		}
		after = rows[len(rows)-1].ID
	}
}

// setHashes0004 stores one batch's hashes: one statement on PostgreSQL,
// one short update per row on SQLite (in-process, so no round trips).
func setHashes0004(tx *gorm.DB, company string, ids []int64, hashes []string) error {
	if IsPostgres(tx) {
		return tx.Exec(`UPDATE audit_events AS a SET hash = v.hash
			FROM unnest(?::bigint[], ?::text[]) AS v(id, hash)
			WHERE a.company_id = ? AND a.id = v.id`, Array(ids), Array(hashes), company).Error
	}
	for i, id := range ids {
		if err := tx.Exec("UPDATE audit_events SET hash = ? WHERE company_id = ? AND id = ?", hashes[i], company, id).Error; err != nil {
			return err
		}
	}
	return nil
}
