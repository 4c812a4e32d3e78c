package audit

import (
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit/hashchain"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/models"
)

// chainBatch bounds the rows read at once when walking a chain.
const chainBatch = 1000

// linkOf is what row's hash covers: every stored field but id and hash.
func linkOf(r models.AuditEvent) hashchain.Row {
	return hashchain.Row{
		Company: r.CompanyID, Category: r.Category, Action: r.Action,
		ActorID: r.ActorID, ActorName: r.ActorName, ActorRole: r.ActorRole,
		TargetID: r.TargetUserID, TargetName: r.TargetUserName, App: r.App,
		Details: r.Details, CreatedAt: r.CreatedAt, UID: r.UID,
	}
}

// link fixes the time of rows (all of one company, about to be inserted
// in this order) and links each to the head of its category's chain. It
// must run under lockCompany, so no other writer moves a head meanwhile.
func (l *Log) link(tx *gorm.DB, rows []models.AuditEvent) error {
	heads := map[string]string{}
	now := store.Now()
	for i := range rows {
		r := &rows[i]
		// The hash covers the time to the millisecond: store no more than
		// that, so what is read back is what was hashed.
		if r.CreatedAt.IsZero() {
			r.CreatedAt = now
		} else {
			r.CreatedAt = r.CreatedAt.UTC().Truncate(time.Millisecond)
		}
		prev, ok := heads[r.Category]
		if !ok {
			var err error
			if prev, err = l.chainHead(tx, r.CompanyID, r.Category); err != nil {
				return fmt.Errorf("read %s chain head: %w", r.Category, err)
			}
		}
		h, err := hashchain.Next(prev, linkOf(*r))
		if err != nil {
			return err
		}
		r.Hash, heads[r.Category] = &h, h
	}
	return nil
}

// checkpoint is where retention cut a sign-in chain (table
// audit_checkpoints, one row per chain). Besides the newest removed row's
// id and hash, which the first remaining row links to, it keeps what a
// check needs to prove that row was old: the hash before it and its
// hashed fields. Only the chain's own rows can hash to Hash, so a
// checkpoint moved to a recent row, or to a row it does not describe,
// shows.
type checkpoint struct {
	CompanyID string `gorm:"primaryKey"`
	Category  string `gorm:"primaryKey"`
	LastID    int64
	Hash      string
	PrevHash  string
	// LastRow is the removed row's hashchain.Row as JSON.
	LastRow string
	// Removed counts the rows retention removed from the chain so far.
	Removed   int64
	UpdatedAt time.Time
}

func (checkpoint) TableName() string { return "audit_checkpoints" }

// chainStart is where a chain begins: after the retention checkpoint, or
// at genesis.
type chainStart struct {
	AfterID int64
	Hash    string
	Removed int64
}

// readCheckpoint is company's checkpoint for category, or nil.
func readCheckpoint(tx *gorm.DB, company, category string) (*checkpoint, error) {
	var cps []checkpoint
	if err := tx.Where("company_id = ? AND category = ?", company, category).Limit(1).Find(&cps).Error; err != nil {
		return nil, fmt.Errorf("read audit checkpoint: %w", err)
	}
	if len(cps) == 0 {
		return nil, nil
	}
	return &cps[0], nil
}

// readStart is where category's chain starts. Retention never cuts the
// settings chain, so it starts at genesis whatever checkpoint is stored
// (the check reports such a checkpoint).
func readStart(tx *gorm.DB, company, category string) (chainStart, error) {
	if category != string(Authentication) {
		return chainStart{Hash: hashchain.Genesis}, nil
	}
	cp, err := readCheckpoint(tx, company, category)
	if err != nil || cp == nil {
		return chainStart{Hash: hashchain.Genesis}, err
	}
	return chainStart{AfterID: cp.LastID, Hash: cp.Hash, Removed: cp.Removed}, nil
}

// idHash is a row's position and link.
type idHash struct {
	ID   int64
	Hash *string
}

// chainHead is the hash the next row of a chain links to: its newest
// row's, else its checkpoint's, else genesis. Rows left without a hash at
// the end of the chain (written by a version before hashing, during a
// rolling upgrade) are linked first.
func (l *Log) chainHead(tx *gorm.DB, company, category string) (string, error) {
	var last []idHash
	err := tx.Model(&models.AuditEvent{}).Select("id, hash").
		Where("company_id = ? AND category = ?", company, category).
		Order("company_id DESC, category DESC, id DESC").Limit(1).Scan(&last).Error
	if err != nil {
		return "", err
	}
	if len(last) == 1 && last[0].Hash != nil {
		return *last[0].Hash, nil
	}
	start, err := readStart(tx, company, category)
	if err != nil || len(last) == 0 {
		return start.Hash, err
	}
	return l.linkUnhashed(tx, company, category, start)
}

// linkUnhashed links the rows after the chain's newest hashed row, which
// have none, and returns the new head.
func (l *Log) linkUnhashed(tx *gorm.DB, company, category string, start chainStart) (string, error) {
	var hashed []idHash
	err := tx.Model(&models.AuditEvent{}).Select("id, hash").
		Where("company_id = ? AND category = ? AND id > ? AND hash IS NOT NULL", company, category, start.AfterID).
		Order("company_id DESC, category DESC, id DESC").Limit(1).Scan(&hashed).Error
	if err != nil {
		return "", err
	}
	after, prev := start.AfterID, start.Hash
	if len(hashed) == 1 {
		after, prev = hashed[0].ID, *hashed[0].Hash
	}
	linked := 0
	for {
		var rows []models.AuditEvent
		if err := tx.Where("company_id = ? AND category = ? AND id > ?", company, category, after).
			Order(chainOrder).Limit(chainBatch).Find(&rows).Error; err != nil {
			return "", err
		}
		if len(rows) == 0 {
			break
		}
		for _, r := range rows {
			if prev, err = hashchain.Next(prev, linkOf(r)); err != nil {
				return "", err
			}
			if err := tx.Model(&models.AuditEvent{}).Where("company_id = ? AND id = ?", company, r.ID).
				Update("hash", prev).Error; err != nil {
				return "", err
			}
		}
		linked, after = linked+len(rows), rows[len(rows)-1].ID
	}
	l.logger.Warn("linked audit rows written without a hash", "company", company, "category", category, "rows", linked)
	return prev, nil
}

// chainOrder walks one chain on the (company_id, category, id) index.
const chainOrder = "company_id ASC, category ASC, id ASC"
