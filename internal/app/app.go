// Package app wires the domain services, the GraphQL resolvers and the
// HTTP surface together. main and the tests build the service through it,
// so both run the same thing.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"gorm.io/gorm"

	"github.com/twofactor/service/graph"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/httpapi"
	"github.com/twofactor/service/internal/metrics"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/users"
)

// Options are the app's dependencies and knobs.
type Options struct {
	DB              *gorm.DB
	Redis           *store.Redis
	Tokens          *auth.Tokens
	Logger          *slog.Logger
	AllowedOrigins  []string
	PlaygroundToken string
	Limits          graph.Limits
	MaxBodyBytes    int64
}

// App is the assembled service.
type App struct {
	Handler  http.Handler
	Settings *settings.Service
	Users    *users.Service
	Audit    *audit.Log
	Metrics  *metrics.Metrics
}

// New assembles the service.
func New(o Options) *App {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Limits == (graph.Limits{}) {
		o.Limits = graph.DefaultLimits
	}
	a := &App{Audit: audit.NewLog(o.DB), Metrics: metrics.New()}
	a.Settings = settings.NewService(o.DB, a.Audit)
	a.Users = users.NewService(o.DB, a.Audit, a.Settings)
	gql := graph.NewHandler(&graph.Resolver{
		SettingsService: a.Settings,
		UserService:     a.Users,
		AuditService:    a.Audit,
		Logger:          o.Logger,
	}, o.Limits, a.Metrics)
	a.Handler = httpapi.New(httpapi.Config{
		GraphQL:         gql,
		Tokens:          o.Tokens,
		Metrics:         a.Metrics,
		Logger:          o.Logger,
		AllowedOrigins:  o.AllowedOrigins,
		MaxBodyBytes:    o.MaxBodyBytes,
		PlaygroundToken: o.PlaygroundToken,
		Ready: func(ctx context.Context) error {
			sqlDB, err := o.DB.DB()
			if err == nil {
				err = sqlDB.PingContext(ctx)
			}
			if err != nil {
				return fmt.Errorf("database: %w", err)
			}
			if err := o.Redis.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			return nil
		},
	})
	return a
}
