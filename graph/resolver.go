package graph

import (
	"log/slog"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/feed"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/users"
)

// Resolver holds the domain services the resolvers translate to.
type Resolver struct {
	SettingsService  *settings.Service
	UserService      *users.Service
	AuditService     *audit.Log
	ChallengeService *challenge.Service
	Feed             *feed.Hub
	Logger           *slog.Logger
}
