// Command twofactor runs the two-factor authentication settings service.
//
//	go run .                     serve (embedded SQLite + in-process Redis unless configured)
//	go run . token [flags]       print a signed caller token
//
// Configuration comes from the environment; see README.md.
package main

//go:generate go tool gqlgen generate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/assertion"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/otp"
	"github.com/twofactor/service/internal/store"
)

// config is the service's environment.
type config struct {
	ListenAddr     string
	DatabaseURL    string
	RedisURL       string
	DataDir        string
	JWTSecret      string
	AllowedOrigins []string
	LogLevel       slog.Level

	CodeHMACKey      string
	CodeLength       int
	AssertionKeyFile string
	AssertionIssuer  string
	Challenge        challenge.Config
	DevLogDelivery   bool

	TwilioAccountSID, TwilioAuthToken, TwilioFrom, TwilioBaseURL string
	SMSWebhookURL, SMSWebhookSecret                              string
	SMTPURL, EmailFrom                                           string
}

func (c config) embedded() bool { return c.DatabaseURL == "" }

func loadConfig() (config, error) {
	c := config{
		ListenAddr:  envOr("LISTEN_ADDR", ":8080"),
		DatabaseURL: os.Getenv("DATABASE_URL"),
		RedisURL:    os.Getenv("REDIS_URL"),
		DataDir:     envOr("DATA_DIR", "./data"),
		JWTSecret:   os.Getenv("AUTH_JWT_SECRET"),
	}
	for _, o := range strings.Split(os.Getenv("ALLOWED_ORIGINS"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.AllowedOrigins = append(c.AllowedOrigins, o)
		}
	}
	if err := c.LogLevel.UnmarshalText([]byte(envOr("LOG_LEVEL", "info"))); err != nil {
		return c, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	c.CodeHMACKey = os.Getenv("CODE_HMAC_KEY")
	c.AssertionKeyFile = os.Getenv("ASSERTION_PRIVATE_KEY_FILE")
	c.AssertionIssuer = envOr("ASSERTION_ISSUER", app.DefaultIssuer)
	c.TwilioAccountSID, c.TwilioAuthToken = os.Getenv("TWILIO_ACCOUNT_SID"), os.Getenv("TWILIO_AUTH_TOKEN")
	c.TwilioFrom, c.TwilioBaseURL = os.Getenv("TWILIO_FROM"), os.Getenv("TWILIO_BASE_URL")
	c.SMSWebhookURL, c.SMSWebhookSecret = os.Getenv("SMS_WEBHOOK_URL"), os.Getenv("SMS_WEBHOOK_SECRET")
	c.SMTPURL, c.EmailFrom = os.Getenv("SMTP_URL"), os.Getenv("EMAIL_FROM")
	d := challenge.DefaultConfig
	p := envParser{}
	c.CodeLength = p.int("CODE_LENGTH", 6)
	c.DevLogDelivery = p.bool("DEV_LOG_DELIVERY")
	c.Challenge = challenge.Config{
		CodeTTL:              p.duration("CODE_TTL", d.CodeTTL),
		ResendCooldown:       p.duration("RESEND_COOLDOWN", d.ResendCooldown),
		MaxCodesPerWindow:    p.int("MAX_CODES_PER_WINDOW", d.MaxCodesPerWindow),
		LoginWindow:          p.duration("LOGIN_WINDOW", d.LoginWindow),
		MaxFailedAttempts:    p.int("MAX_FAILED_ATTEMPTS", d.MaxFailedAttempts),
		LockDuration:         p.duration("LOCK_DURATION", d.LockDuration),
		SMSPerCompanyPerHour: p.int("SMS_PER_COMPANY_PER_HOUR", d.SMSPerCompanyPerHour),
		SendTimeout:          p.duration("DELIVERY_TIMEOUT", d.SendTimeout),
	}
	if err := errors.Join(p.errs...); err != nil {
		return c, err
	}
	if err := c.Challenge.Validate(); err != nil {
		return c, err
	}
	if !c.embedded() {
		// Production: nothing may silently fall back to a local default.
		if c.JWTSecret == "" {
			return c, errors.New("AUTH_JWT_SECRET is required when DATABASE_URL is set (use at least 32 random bytes)")
		}
		if c.RedisURL == "" {
			return c, errors.New("REDIS_URL is required when DATABASE_URL is set: instances must share one Redis")
		}

	}
	return c, nil
}

// envParser reads typed variables and collects every mistake.
type envParser struct{ errs []error }

func (p *envParser) int(key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("%s: want a whole number, got %q", key, v))
	}
	return n
}

func (p *envParser) duration(key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		p.errs = append(p.errs, fmt.Errorf("%s: want a positive Go duration such as 30s or 15m, got %q", key, v))
	}
	return d
}

func (p *envParser) bool(key string) bool {
	v := os.Getenv(key)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("%s: want true or false, got %q", key, v))
	}
	return b
}

// challengeOptions builds the code hasher, the assertion key and the
// senders. In embedded mode missing secrets are generated into DATA_DIR
// and missing senders write to the log.
func (c config) challengeOptions(logger *slog.Logger) (app.Options, error) {
	var o app.Options
	if !c.embedded() {
		// Instances must agree on these, so none may be made up locally.
		if c.CodeHMACKey == "" {
			return o, errors.New("CODE_HMAC_KEY is required when DATABASE_URL is set (at least 32 random bytes, the same on every instance)")
		}
		if c.AssertionKeyFile == "" {
			return o, errors.New("ASSERTION_PRIVATE_KEY_FILE is required when DATABASE_URL is set (a PKCS#8 PEM Ed25519 key, the same on every instance)")
		}
	}
	key := []byte(c.CodeHMACKey)
	if c.CodeHMACKey == "" {
		var err error
		if key, err = dataDirSecret(c.DataDir, "code_hmac_key"); err != nil {
			return o, err
		}
	}
	codes, err := otp.NewHasher(key, c.CodeLength)
	if err != nil {
		return o, fmt.Errorf("CODE_HMAC_KEY/CODE_LENGTH: %w", err)
	}
	keyFile := c.AssertionKeyFile
	load := assertion.LoadKey
	if keyFile == "" {
		keyFile, load = filepath.Join(c.DataDir, "assertion_ed25519.pem"), assertion.LoadOrCreateKey
	}
	priv, err := load(keyFile)
	if err != nil {
		return o, fmt.Errorf("ASSERTION_PRIVATE_KEY_FILE: %w", err)
	}
	o.Codes, o.AssertionKey, o.Issuer, o.Challenge = codes, priv, c.AssertionIssuer, c.Challenge

	client := &http.Client{Timeout: c.Challenge.SendTimeout}
	switch {
	case c.TwilioAccountSID != "":
		if c.TwilioAuthToken == "" || c.TwilioFrom == "" {
			return o, errors.New("TWILIO_ACCOUNT_SID needs TWILIO_AUTH_TOKEN and TWILIO_FROM")
		}
		o.SMS = delivery.Twilio{BaseURL: c.TwilioBaseURL, AccountSID: c.TwilioAccountSID,
			AuthToken: c.TwilioAuthToken, From: c.TwilioFrom, Client: client}
	case c.SMSWebhookURL != "":
		o.SMS = delivery.Webhook{URL: c.SMSWebhookURL, Secret: c.SMSWebhookSecret, Client: client}
	}
	if c.SMTPURL != "" {
		if o.Email, err = delivery.NewSMTP(c.SMTPURL, c.EmailFrom, nil); err != nil {
			return o, err
		}
	}
	devOK := c.embedded() || c.DevLogDelivery
	for _, ch := range []struct {
		name, how string
		sender    *delivery.Sender
	}{{"sms", "TWILIO_* or SMS_WEBHOOK_URL", &o.SMS}, {"email", "SMTP_URL", &o.Email}} {
		if *ch.sender != nil {
			continue
		}
		if !devOK {
			return o, fmt.Errorf("no %s sender is configured: set %s, or DEV_LOG_DELIVERY=true to write codes to the log (never in real production)", ch.name, ch.how)
		}
		*ch.sender = delivery.Log{Logger: logger, Channel: ch.name}
	}
	return o, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// tokens returns the caller-token signer. In embedded mode the secret is
// generated once and kept in DATA_DIR so tokens survive restarts.
func (c config) tokens() (*auth.Tokens, error) {
	secret := []byte(c.JWTSecret)
	if c.JWTSecret == "" {
		var err error
		if secret, err = dataDirSecret(c.DataDir, "auth_jwt_secret"); err != nil {
			return nil, err
		}
	}
	t, err := auth.NewTokens(secret)
	if err != nil {
		return nil, fmt.Errorf("AUTH_JWT_SECRET: %w", err)
	}
	return t, nil
}

// dataDirSecret reads DATA_DIR/name, creating it with 32 random bytes
// (hex) the first time. The file is written whole under a temporary name
// and linked into place, so a process starting at the same moment never
// reads half a secret.
func dataDirSecret(dir, name string) ([]byte, error) {
	path := filepath.Join(dir, name)
	if b, err := os.ReadFile(path); err == nil {
		return []byte(strings.TrimSpace(string(b))), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(dir, "."+name+"-*")
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(hex.EncodeToString(raw)); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	// Whoever linked first won; everyone reads the same secret.
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return []byte(strings.TrimSpace(string(b))), nil
}

func main() {
	args := os.Args[1:]
	var err error
	switch {
	case len(args) > 0 && args[0] == "token":
		err = runToken(args[1:], os.Stdout)
	case len(args) > 0 && args[0] != "serve" && !strings.HasPrefix(args[0], "-"):
		err = fmt.Errorf("unknown command %q (commands: serve, token)", args[0])
	default:
		err = runServe(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "twofactor:", err)
		os.Exit(1)
	}
}

func runToken(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	company := fs.String("company", "demo", "company id")
	role := fs.String("role", "admin", "admin, service or user")
	sub := fs.String("sub", "admin", "the caller's user id")
	name := fs.String("name", "", "display name for the audit log")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	t, err := cfg.tokens()
	if err != nil {
		return err
	}
	tok, err := t.Sign(auth.Caller{UserID: *sub, Company: *company, Role: auth.Role(*role), Name: *name}, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}

func runServe(out io.Writer) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	tokens, err := cfg.tokens()
	if err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	db, err := store.OpenDB(startCtx, cfg.DatabaseURL, cfg.DataDir)
	if err != nil {
		return err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return err
	}
	defer sqlDB.Close()
	rdb, err := store.OpenRedis(startCtx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()

	opts, err := cfg.challengeOptions(logger)
	if err != nil {
		return err
	}
	opts.DB, opts.Redis, opts.Tokens, opts.Logger, opts.AllowedOrigins = db, rdb, tokens, logger, cfg.AllowedOrigins
	opts.Embedded = cfg.embedded()
	var demoToken string
	if cfg.embedded() {
		demoToken, err = tokens.Sign(auth.Caller{UserID: "admin", Company: "demo", Role: auth.RoleAdmin, Name: "Demo Admin"}, 24*time.Hour)
		if err != nil {
			return err
		}
		_ = demoToken
	}
	a, err := app.New(opts)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	srv := &http.Server{
		Handler:           a.Handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// Request contexts must not derive from ctx: SIGTERM cancels it,
		// and in-flight requests are meant to finish, not fail.
	}
	// Shutdown does not wait for hijacked websockets: end their streams
	// with a resume hint instead of cutting them off silently.
	srv.RegisterOnShutdown(a.Close)
	mode := "production"
	if cfg.embedded() {
		mode = "embedded"
	}
	logger.Info("listening", "addr", ln.Addr().String(), "mode", mode)
	if cfg.embedded() {
		// Printed, not logged: the token is for the person at the terminal.
		fmt.Fprintf(out, "\nTwo-factor service (embedded mode: SQLite in %s, in-process Redis)\n", cfg.DataDir)
		fmt.Fprintf(out, "Playground: http://%s/\n", displayAddr(ln.Addr()))
		fmt.Fprintf(out, "Admin token for company \"demo\" (valid 24h, already filled in for this machine's browser):\n%s\n\n", demoToken)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests")
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelShutdown()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	logger.Info("stopped")
	return nil
}

func displayAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP.IsUnspecified() {
		if ok {
			return fmt.Sprintf("localhost:%d", tcp.Port)
		}
	}
	return a.String()
}
