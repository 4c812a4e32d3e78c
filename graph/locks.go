package graph

import (
	"context"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/auth"
)

// lockedIndefinitely tells, per app, whether only an admin can unlock
// (after MAX_CONSECUTIVE_FAILURES wrong codes in a row).
func (r *Resolver) lockedIndefinitely(ctx context.Context, obj *model.UserTwoFactor) (*model.UserTwoFactorIndefiniteLocks, error) {
	c, err := auth.FromContext(ctx)
	if err != nil {
		return nil, r.toGQL(ctx, err)
	}
	locks, err := r.ChallengeService.IndefiniteLocks(ctx, c.Company, obj.UserID)
	if err != nil {
		return nil, r.toGQL(ctx, err)
	}
	return &model.UserTwoFactorIndefiniteLocks{Web: locks[apps.Web], Manager: locks[apps.Manager]}, nil
}
