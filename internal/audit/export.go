package audit

import (
	"context"
	"fmt"

	"github.com/twofactor/service/internal/auth"
)

// ExportBatch is how many rows Export reads per query: the most it holds
// at once, whatever the size of the log.
const ExportBatch = 1000

// Export calls fn with every event of the caller's company log that
// matches f, oldest first (ascending id, the order rows were committed
// in). Admin only.
//
// The export is a snapshot of the log as it was when Export began: rows
// written meanwhile are left out, so an export of a busy log ends. It
// reads keyset batches of ExportBatch rows over (company_id, id), each its
// own query, and holds no more than one batch and no connection between
// batches. It stops at the first error of fn (a client gone) or when ctx
// ends, and returns that error.
func (l *Log) Export(ctx context.Context, c auth.Caller, f Filter, fn func(Event) error) error {
	if err := c.Require(auth.RoleAdmin); err != nil {
		return fmt.Errorf("export audit log: %w", err)
	}
	// Writers of a company commit their ids in order (lockCompany), so
	// every row up to the newest id is already visible.
	until, err := l.LastID(ctx, c.Company)
	if err != nil {
		return fmt.Errorf("export audit log: %w", err)
	}
	if until == 0 {
		return nil
	}
	for after := int64(0); ; {
		batch, err := l.Since(ctx, c.Company, after, until, f, ExportBatch)
		if err != nil {
			return fmt.Errorf("export audit log: %w", err)
		}
		for _, e := range batch {
			// Per row, not per batch: a client gone midway costs no more
			// rows' work.
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("export audit log: %w", err)
			}
			if err := fn(e); err != nil {
				return fmt.Errorf("export audit log: %w", err)
			}
		}
		if len(batch) < ExportBatch {
			return nil
		}
		after = batch[len(batch)-1].ID
	}
}
