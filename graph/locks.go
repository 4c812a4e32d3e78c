package graph

import (
	"context"
	"errors"

	"github.com/twofactor/service/graph/model"
)

// lockedIndefinitely tells, per app, whether only an admin can unlock.
// (Being built: issue 10, section 3.)
func (r *Resolver) lockedIndefinitely(ctx context.Context, obj *model.UserTwoFactor) (*model.UserTwoFactorIndefiniteLocks, error) {
	return nil, r.toGQL(ctx, errors.New("indefinite locks: not built yet"))
}
