package graph

import (
	"context"
	"errors"
	"time"

	"github.com/twofactor/service/graph/model"
)

// auditLogIntegrity checks the company's hash chains. (Being built: issue 10, section 4.)
func (r *Resolver) auditLogIntegrity(ctx context.Context, from, to *time.Time, category *model.AuditCategory) (*model.AuditLogIntegrity, error) {
	return nil, r.toGQL(ctx, errors.New("audit log integrity: not built yet"))
}
