// Package app wires the domain services, the GraphQL resolvers and the
// HTTP surface together. main and the tests build the service through it,
// so both run the same thing.
package app

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/graph"
	"github.com/twofactor/service/internal/assertion"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/demo"
	"github.com/twofactor/service/internal/feed"
	"github.com/twofactor/service/internal/httpapi"
	"github.com/twofactor/service/internal/metrics"
	"github.com/twofactor/service/internal/otp"
	"github.com/twofactor/service/internal/outbox"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/web"
)

// Options are the app's dependencies and knobs.
type Options struct {
	DB             *gorm.DB
	Redis          *store.Redis
	Tokens         *auth.Tokens
	Logger         *slog.Logger
	AllowedOrigins []string
	AllowedHeaders []string // CORS request headers besides httpapi's defaults
	// DemoPages serves the demo login screen outside embedded mode.
	DemoPages bool
	// DemoCompany is the company of the tokens minted for pages in
	// embedded mode: "demo" unless a test gives each run its own.
	DemoCompany  string
	Limits       graph.Limits
	MaxBodyBytes int64

	// Challenges.
	Challenge    challenge.Config
	Codes        *otp.Hasher
	AssertionKey ed25519.PrivateKey
	Issuer       string
	SMS, Email   delivery.Sender
	Now          func() time.Time // nil for the wall clock

	// CursorKey seals cursors and public audit ids (CURSOR_KEY); empty
	// derives a key from Codes' key, which every instance shares.
	CursorKey []byte

	// AuditOutbox moves sign-in events from Redis to the audit log. Its
	// sweeper looks for every company's outboxes unless Match says
	// otherwise.
	AuditOutbox outbox.Options
	// AuditRetention removes sign-in audit rows older than this, on every
	// instance (AUDIT_RETENTION_AUTHENTICATION); 0 keeps them.
	AuditRetention time.Duration

	// Live audit feed.
	Feed      feed.Options
	Websocket graph.WebsocketOptions
	// Embedded is embedded mode: localhost websocket origins are allowed,
	// and pages opened on this machine get demo tokens.
	Embedded bool
	// LoopbackHostsOnly refuses requests whose Host header does not name
	// this machine (DNS rebinding); main sets it in embedded mode on a
	// loopback LISTEN_ADDR.
	LoopbackHostsOnly bool
}

// App is the assembled service.
type App struct {
	Handler   http.Handler
	Settings  *settings.Service
	Users     *users.Service
	Audit     *audit.Log
	Challenge *challenge.Service
	Signer    *assertion.Signer
	Feed      *feed.Hub
	// AuditOutbox moves sign-in events from Redis to Audit.
	AuditOutbox *outbox.Mover
	// stopRetention ends the audit retention job, if it runs.
	stopRetention func()
	// Metrics are not on Handler: main serves Metrics.Handler() on its
	// own listener (METRICS_ADDR), and tests may call it directly.
	Metrics *metrics.Metrics
}

// Close ends live streams (telling clients to resume elsewhere), stops
// the feed's Redis subscription and the outbox mover (what it has not
// moved stays in Redis for any instance's sweeper).
func (a *App) Close() {
	a.Feed.Close()
	a.AuditOutbox.Close()
	if a.stopRetention != nil {
		a.stopRetention()
	}
}

// DefaultIssuer is the assertions' iss claim.
const DefaultIssuer = "twofactor"

// New assembles the service.
func New(o Options) (*App, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Limits == (graph.Limits{}) {
		o.Limits = graph.DefaultLimits
	}
	a := &App{Metrics: metrics.New()}
	// The log announces new rows through the feed; the feed reads them
	// back from the log.
	announce := &notifier{}
	cursors, err := cursorCodec(o)
	if err != nil {
		return nil, err
	}
	a.Audit = audit.NewLog(o.DB, announce, o.Logger, audit.WithCodec(cursors))
	a.Feed = feed.NewHub(o.Redis.UniversalClient, a.Audit, o.Logger, o.Feed)
	announce.Notifier = a.Feed
	a.Settings = settings.NewService(o.DB, a.Audit, settings.WithCache(settingsCache(o.DB, a.Feed)))
	a.Users = users.NewService(o.DB, a.Audit, a.Settings, users.WithCodec(cursors),
		users.WithRedisState(&challenge.State{Redis: o.Redis.UniversalClient, Now: o.Now}))
	if o.Issuer == "" {
		o.Issuer = DefaultIssuer
	}
	a.Signer = assertion.NewSigner(o.Issuer, o.AssertionKey, o.Now)
	if o.AuditOutbox.Match == "" {
		o.AuditOutbox.Match = challenge.OutboxMatch("")
	}
	a.AuditOutbox = outbox.New(o.Redis.UniversalClient, challenge.DecodeOutboxEntry, a.Audit, o.Logger, o.AuditOutbox)
	a.Challenge, err = challenge.NewService(challenge.Deps{
		Redis: o.Redis.UniversalClient, Outbox: a.AuditOutbox, Users: a.Users, Settings: a.Settings,
		Codes: o.Codes, Signer: a.Signer, SMS: o.SMS, Email: o.Email, Logger: o.Logger, Now: o.Now,
	}, o.Challenge)
	if err != nil {
		a.Close()
		return nil, err
	}
	a.Handler = handler(o, a)
	if o.AuditRetention > 0 {
		a.stopRetention = startRetention(audit.NewRetention(a.Audit, o.AuditRetention, o.Now))
	}
	return a, nil
}

// handler builds the HTTP surface around the domain services.
func handler(o Options, a *App) http.Handler {
	ids := demo.Identities{Tokens: o.Tokens, Users: a.Users, Company: o.DemoCompany}
	gql := graph.NewHandler(&graph.Resolver{
		SettingsService:  a.Settings,
		UserService:      a.Users,
		AuditService:     a.Audit,
		ChallengeService: a.Challenge,
		Feed:             a.Feed,
		Logger:           o.Logger,
	}, o.Limits, a.Metrics, websocketOptions(o))
	return httpapi.New(httpapi.Config{
		GraphQL:        gql,
		Tokens:         o.Tokens,
		Metrics:        a.Metrics,
		Logger:         o.Logger,
		AllowedOrigins: o.AllowedOrigins,
		AllowedHeaders: o.AllowedHeaders,
		Schema:         graph.SDL(),
		MaxBodyBytes:   o.MaxBodyBytes,
		Pages:          pages(o, ids),
		JWKS:           a.Signer.JWKS(),
		Embedded:       o.Embedded,
		// Refuses other Host names (DNS rebinding): see Options.
		LoopbackHostsOnly: o.LoopbackHostsOnly,
		Ready:             ready(o),
		Audit:             a.Audit, // GET /audit/export
	})
}

// ready reports whether the database and Redis answer.
func ready(o Options) func(context.Context) error {
	return func(ctx context.Context) error {
		sqlDB, err := o.DB.DB()
		if err == nil {
			err = sqlDB.PingContext(ctx)
		}
		if err != nil {
			return fmt.Errorf("database: %w", err)
		}
		// Every master of a Cluster: one down is a share of users refused.
		if err := o.Redis.Ready(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		return nil
	}
}

func pages(o Options, ids demo.Identities) web.Config {
	return web.Config{
		Embedded: o.Embedded, DemoPages: o.DemoPages, Logger: o.Logger,
		AdminToken: ids.AdminToken, DemoUserToken: ids.UserToken, Issuer: o.Issuer,
	}
}

// startRetention runs r every hour until the returned stop is called;
// stop waits for a run in progress to end.
func startRetention(r *audit.Retention) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, audit.RetentionInterval)
	}()
	return func() { cancel(); <-done }
}

// CursorCodec is cursorCodec for the command line (audit verify), which
// must name events as the service does.
func CursorCodec(cursorKey []byte, codes *otp.Hasher) (*cursor.Codec, error) {
	return cursorCodec(Options{CursorKey: cursorKey, Codes: codes})
}

// cursorCodec keys cursors and public ids: CursorKey, or else the code
// HMAC key's hash of a fixed label (never a code's hash: codes are not
// empty), so every instance derives the same key with nothing new to set.
func cursorCodec(o Options) (*cursor.Codec, error) {
	key := o.CursorKey
	if len(key) == 0 && o.Codes != nil {
		key = o.Codes.DeriveKey(cursor.DeriveLabel)
	}
	c, err := cursor.New(key)
	if err != nil {
		return nil, fmt.Errorf("CURSOR_KEY: %w", err)
	}
	return c, nil
}

// noticeSource is what the settings cache needs of the live feed.
type noticeSource interface {
	// Watch calls fn for every notice of company this instance receives.
	Watch(company string, fn func(audit.Notice)) (stop func())
	// OnLive is told false whenever notices may be missed, true once they
	// flow again.
	OnLive(fn func(live bool))
}

// settingsCache keeps companies' settings in this instance's memory. A
// notice of a settings change drops the company's entry; while notices
// may be missed (Redis away) the cache is empty and reads go to the
// database.
func settingsCache(db *gorm.DB, notices noticeSource) *settings.Cache {
	var c *settings.Cache
	c = settings.NewCache(settings.Loader(db), settings.WithWatch(func(company string) func() {
		return notices.Watch(company, func(n audit.Notice) {
			if n.SettingsChanged {
				c.Invalidate(company)
			}
		})
	}))
	// Live until the feed says otherwise: OnLive reports false at once if
	// notices are not flowing now.
	c.SetLive(true)
	notices.OnLive(c.SetLive)
	return c
}

// notifier breaks the construction cycle between the log and the feed.
type notifier struct{ audit.Notifier }

func websocketOptions(o Options) graph.WebsocketOptions {
	ws := o.Websocket
	if ws.Verify == nil {
		ws.Verify = o.Tokens.Verify
	}
	return ws
}
