// Package audittest holds audit doubles for the services' tests.
package audittest

import (
	"context"
	"errors"
	"testing"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/models"
)

// ErrInjected is what FailingLog's Write returns.
var ErrInjected = errors.New("injected audit failure")

// FailingLog writes the real audit row, checks that the change and the row
// are both in the transaction, and then fails: the failure comes after
// everything the change wrote.
type FailingLog struct {
	*audit.Log
	T         testing.TB
	InTx      func(tx *gorm.DB) // asserts the change is visible in tx
	Writes    int
	Announced int
}

// Write writes e for real, then returns ErrInjected.
func (f *FailingLog) Write(tx *gorm.DB, e *audit.Event) error {
	f.T.Helper()
	if err := f.Log.Write(tx, e); err != nil {
		return err
	}
	f.Writes++
	var n int64
	if err := tx.Model(&models.AuditEvent{}).Where("id = ?", e.ID).Count(&n).Error; err != nil || n != 1 {
		f.T.Errorf("the audit row is not in the transaction: n=%d err=%v", n, err)
	}
	if f.InTx != nil {
		f.InTx(tx)
	}
	return ErrInjected
}

// Announce counts what would have been announced; nothing should be.
func (f *FailingLog) Announce(_ context.Context, events ...*audit.Event) {
	for _, e := range events {
		if e != nil {
			f.Announced++
		}
	}
}
