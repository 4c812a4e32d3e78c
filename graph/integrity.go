package graph

import (
	"context"
	"time"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
)

// auditLogIntegrity checks the caller's company hash chains.
func (r *Resolver) auditLogIntegrity(ctx context.Context, from, to *time.Time, category *model.AuditCategory) (*model.AuditLogIntegrity, error) {
	c, err := auth.FromContext(ctx)
	if err != nil {
		return nil, r.toGQL(ctx, err)
	}
	w := audit.Window{From: from, To: to}
	if category != nil {
		w.Category = audit.Category(*category)
	}
	res, err := r.AuditService.CheckIntegrity(ctx, c, w)
	if err != nil {
		return nil, r.toGQL(ctx, err)
	}
	out := &model.AuditLogIntegrity{Ok: res.OK, CheckedRows: res.CheckedRows, Problems: append([]string{}, res.Problems...)}
	if res.FirstBroken != nil {
		id := r.AuditService.PublicID(*res.FirstBroken)
		out.FirstBrokenEventID = &id
	}
	return out, nil
}

// integrityCost prices auditLogIntegrity at more than half of the
// operation's complexity budget: a check walks up to the company's
// whole log, so one operation may ask for one (aliases cannot multiply
// it), with room left for a few small fields beside it.
func integrityCost(budget, child int) int {
	return saturatingAdd(budget/2+1, child)
}
