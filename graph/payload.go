package graph

import (
	"context"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/users"
)

// userPayload builds a user mutation's payload; idField names the input
// field that holds the user's id.
func (r *Resolver) userPayload(ctx context.Context, u users.User, err error, idField string) (*model.UserPayload, error) {
	ue, err := r.mutationErrors(ctx, err, idField)
	if err != nil || len(ue) > 0 {
		return &model.UserPayload{UserErrors: ue}, err
	}
	return &model.UserPayload{User: toUser(u), UserErrors: ue}, nil
}
