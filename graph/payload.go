package graph

import (
	"context"
	"errors"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/settings"
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

// settingsPayload builds a settings mutation's payload. A CONFLICT carries
// the current settings, so the client can show what changed and retry.
func (r *Resolver) settingsPayload(ctx context.Context, s settings.Settings, err error) (*model.UpdateSettingsPayload, error) {
	ue, err2 := r.mutationErrors(ctx, err, "")
	if errors.Is(err, settings.ErrConflict) {
		return &model.UpdateSettingsPayload{Settings: toSettings(s), UserErrors: ue}, nil
	}
	if err2 != nil || len(ue) > 0 {
		return &model.UpdateSettingsPayload{UserErrors: ue}, err2
	}
	return &model.UpdateSettingsPayload{Settings: toSettings(s), UserErrors: ue}, nil
}

// upsertPayload builds upsertUsers' payload: every item's result, or the
// user errors and no results.
func (r *Resolver) upsertPayload(ctx context.Context, res []users.UpsertResult, err error) (*model.UpsertUsersPayload, error) {
	ue, err := r.mutationErrors(ctx, err, "users")
	if err != nil || len(ue) > 0 {
		return &model.UpsertUsersPayload{Results: []model.UpsertUserResult{}, UserErrors: ue}, err
	}
	out := &model.UpsertUsersPayload{Results: make([]model.UpsertUserResult, len(res)), UserErrors: ue}
	for i, x := range res {
		out.Results[i] = model.UpsertUserResult{User: toUser(x.User), Status: model.UpsertStatus(x.Status)}
	}
	return out, nil
}
