// Command twofactor runs the two-factor authentication service.
//
//	go run .                     serve (embedded SQLite + in-process Redis unless configured)
//	go run . token [flags]       print a signed caller token
//	go run . audit verify ...    check a company's audit hash chains
//	go run . help                list the commands; COMMAND --help tells more
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

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/assertion"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/demo"
	"github.com/twofactor/service/internal/httpapi"
	"github.com/twofactor/service/internal/otp"
	"github.com/twofactor/service/internal/store"
)

// config is the service's environment.
type config struct {
	ListenAddr     string
	MetricsAddr    string
	DatabaseURL    string
	RedisURL       string
	RedisCAFile    string // REDIS_CA_FILE: PEM CAs for rediss:// (a private CA)
	DataDir        string
	JWTSecret      string
	AuthIssuer     string        // AUTH_ISSUER: required iss of caller tokens
	AuthAudience   string        // AUTH_AUDIENCE: required aud of caller tokens
	AuthMaxTTL     time.Duration // AUTH_MAX_TOKEN_TTL: how far ahead exp may be
	AllowedOrigins []string
	AllowedHeaders []string
	LogLevel       slog.Level

	CodeHMACKey      string
	CursorKey        string // CURSOR_KEY: seals cursors and audit ids; empty derives one from CodeHMACKey
	CodeLength       int
	AssertionKeyFile string
	AssertionIssuer  string
	Challenge        challenge.Config
	DevLogDelivery   bool
	DemoPages        bool
	AuditRetention   time.Duration // AUDIT_RETENTION_AUTHENTICATION; 0 keeps sign-in rows
	MigrateTimeout   time.Duration // MIGRATE_TIMEOUT: how long startup migrations may take

	TwilioAccountSID, TwilioAuthToken, TwilioFrom, TwilioBaseURL string
	SMSWebhookURL, SMSWebhookSecret                              string
	SMTPURL, EmailFrom                                           string

	JWKSURL    string          // AUTH_JWKS_URL: the identity provider's key set
	JWKSFile   string          // AUTH_JWKS_FILE: the same, on disk
	ClaimNames auth.ClaimNames // AUTH_CLAIM_COMPANY, AUTH_CLAIM_ROLE, AUTH_CLAIM_NAME
}

func (c config) embedded() bool { return c.DatabaseURL == "" }

func loadConfig() (config, error) {
	c := config{
		ListenAddr:     os.Getenv("LISTEN_ADDR"),
		DatabaseURL:    os.Getenv("DATABASE_URL"),
		RedisURL:       os.Getenv("REDIS_URL"),
		RedisCAFile:    os.Getenv("REDIS_CA_FILE"),
		DataDir:        envOr("DATA_DIR", "./data"),
		JWTSecret:      os.Getenv("AUTH_JWT_SECRET"),
		AllowedOrigins: envList("ALLOWED_ORIGINS"),
		AllowedHeaders: envList("ALLOWED_HEADERS"),
	}
	c.readListeners()
	if err := c.LogLevel.UnmarshalText([]byte(envOr("LOG_LEVEL", "info"))); err != nil {
		return c, fmt.Errorf("LOG_LEVEL: %w", err)
	}
	p := envParser{}
	c.readAuth(&p)
	c.readChallenge(&p)
	c.DemoPages = p.bool("DEMO_PAGES")
	c.MigrateTimeout = p.duration("MIGRATE_TIMEOUT", defaultMigrateTimeout)
	if d, err := audit.ParseRetention(os.Getenv("AUDIT_RETENTION_AUTHENTICATION")); err != nil {
		p.errs = append(p.errs, fmt.Errorf("AUDIT_RETENTION_AUTHENTICATION: %w", err))
	} else {
		c.AuditRetention = d
	}
	if err := errors.Join(p.errs...); err != nil {
		return c, err
	}
	if err := c.Challenge.Validate(); err != nil {
		return c, err
	}
	return c, c.check()
}

// envList reads a comma-separated variable.
func envList(key string) []string {
	var out []string
	for _, v := range strings.Split(os.Getenv(key), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (c *config) readListeners() {
	switch {
	case c.ListenAddr != "":
	case c.embedded():
		// Embedded mode hands admin tokens to pages opened on this
		// machine, so by default only this machine can reach it.
		c.ListenAddr = "127.0.0.1:8080"
	default:
		c.ListenAddr = ":8080"
	}
	// /metrics has a listener of its own, on this machine unless set;
	// METRICS_ADDR set to nothing turns it off.
	c.MetricsAddr = "127.0.0.1:9464"
	if v, ok := os.LookupEnv("METRICS_ADDR"); ok {
		c.MetricsAddr = v
	}
}

func (c *config) readAuth(p *envParser) {
	c.CursorKey = os.Getenv("CURSOR_KEY")
	c.AuthIssuer, c.AuthAudience = os.Getenv("AUTH_ISSUER"), os.Getenv("AUTH_AUDIENCE")
	c.AuthMaxTTL = p.duration("AUTH_MAX_TOKEN_TTL", auth.DefaultMaxTTL)
	c.JWKSURL, c.JWKSFile = os.Getenv("AUTH_JWKS_URL"), os.Getenv("AUTH_JWKS_FILE")
	c.ClaimNames = auth.ClaimNames{Company: os.Getenv("AUTH_CLAIM_COMPANY"), Role: os.Getenv("AUTH_CLAIM_ROLE"), Name: os.Getenv("AUTH_CLAIM_NAME")}
}

// readChallenge reads the code, delivery and limit settings.
func (c *config) readChallenge(p *envParser) {
	c.CodeHMACKey = os.Getenv("CODE_HMAC_KEY")
	c.AssertionKeyFile = os.Getenv("ASSERTION_PRIVATE_KEY_FILE")
	c.AssertionIssuer = envOr("ASSERTION_ISSUER", app.DefaultIssuer)
	c.TwilioAccountSID, c.TwilioAuthToken = os.Getenv("TWILIO_ACCOUNT_SID"), os.Getenv("TWILIO_AUTH_TOKEN")
	c.TwilioFrom, c.TwilioBaseURL = os.Getenv("TWILIO_FROM"), os.Getenv("TWILIO_BASE_URL")
	c.SMSWebhookURL, c.SMSWebhookSecret = os.Getenv("SMS_WEBHOOK_URL"), os.Getenv("SMS_WEBHOOK_SECRET")
	c.SMTPURL, c.EmailFrom = os.Getenv("SMTP_URL"), os.Getenv("EMAIL_FROM")
	c.CodeLength = p.int("CODE_LENGTH", 6)
	c.DevLogDelivery = p.bool("DEV_LOG_DELIVERY")
	d := challenge.DefaultConfig
	lock := p.duration("LOCK_DURATION", d.LockDuration)
	c.Challenge = challenge.Config{
		CodeTTL:              p.duration("CODE_TTL", d.CodeTTL),
		ResendCooldown:       p.duration("RESEND_COOLDOWN", d.ResendCooldown),
		MaxCodesPerWindow:    p.int("MAX_CODES_PER_WINDOW", d.MaxCodesPerWindow),
		LoginWindow:          p.duration("LOGIN_WINDOW", d.LoginWindow),
		MaxFailedAttempts:    p.int("MAX_FAILED_ATTEMPTS", d.MaxFailedAttempts),
		LockDuration:         lock,
		SMSPerCompanyPerHour: p.int("SMS_PER_COMPANY_PER_HOUR", d.SMSPerCompanyPerHour),
		SendTimeout:          p.duration("DELIVERY_TIMEOUT", d.SendTimeout),

		// Unset, the cap is never below the first lock.
		MaxLockDuration:        p.duration("MAX_LOCK_DURATION", max(d.MaxLockDuration, lock)),
		MaxConsecutiveFailures: p.int("MAX_CONSECUTIVE_FAILURES", d.MaxConsecutiveFailures),
	}
}

// check refuses combinations that cannot work. In production nothing may
// silently fall back to a local default.
func (c config) check() error {
	if c.JWKSURL != "" && c.JWKSFile != "" {
		return errors.New("set one of AUTH_JWKS_URL and AUTH_JWKS_FILE, not both")
	}
	if c.RedisURL != "" {
		// A malformed REDIS_URL is refused before anything is opened.
		rdb, err := store.NewRedisClient(c.RedisURL, nil)
		if err != nil {
			return err
		}
		_ = rdb.Close()
	}
	if c.embedded() {
		return nil
	}
	if c.JWTSecret == "" && c.JWKSURL == "" && c.JWKSFile == "" {
		return errors.New("AUTH_JWT_SECRET (at least 32 random bytes) or AUTH_JWKS_URL/AUTH_JWKS_FILE is required when DATABASE_URL is set")
	}
	if c.RedisURL == "" {
		return errors.New("REDIS_URL is required when DATABASE_URL is set: instances must share one Redis")
	}
	return nil
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
		if key, _, err = dataDirSecret(c.DataDir, "code_hmac_key"); err != nil {
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
		smtp, err := delivery.NewSMTP(c.SMTPURL, c.EmailFrom, nil)
		if err != nil {
			return o, err
		}
		if smtp.Plaintext() {
			logger.Warn("SMTP_URL has tls=none: codes are emailed unencrypted and can be read on the network")
		}
		o.Email = smtp
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

// tokens returns the caller-token signer and verifier. In embedded mode
// the secret is generated once and kept in DATA_DIR so tokens survive
// restarts; created tells that this call generated it. With a logger it
// also loads the identity provider's key set (AUTH_JWKS_URL/FILE); nil
// (the token command, which only signs) skips it.
func (c config) tokens(logger *slog.Logger) (t *auth.Tokens, created bool, err error) {
	secret := []byte(c.JWTSecret)
	if c.JWTSecret == "" && c.embedded() {
		if secret, created, err = dataDirSecret(c.DataDir, "auth_jwt_secret"); err != nil {
			return nil, false, err
		}
	}
	opts := []auth.Option{auth.WithIssuer(c.AuthIssuer), auth.WithAudience(c.AuthAudience),
		auth.WithMaxTTL(c.AuthMaxTTL), auth.WithClaimNames(c.ClaimNames)}
	if logger != nil && (c.JWKSURL != "" || c.JWKSFile != "") {
		jwks, err := auth.NewJWKS(auth.JWKSOptions{URL: c.JWKSURL, File: c.JWKSFile, Logger: logger})
		if err != nil {
			return nil, false, fmt.Errorf("AUTH_JWKS_URL/AUTH_JWKS_FILE: %w", err)
		}
		opts = append(opts, auth.WithJWKS(jwks))
	}
	if t, err = auth.NewTokens(secret, opts...); err != nil {
		return nil, false, fmt.Errorf("AUTH_JWT_SECRET or AUTH_CLAIM_*: %w", err)
	}
	return t, created, nil
}

// dataDirSecret reads DATA_DIR/name, creating it with 32 random bytes
// (hex) the first time. The file is written whole under a temporary name
// and linked into place, so a process starting at the same moment never
// reads half a secret. created tells that this call made the file.
func dataDirSecret(dir, name string) (secret []byte, created bool, err error) {
	path := filepath.Join(dir, name)
	if b, err := os.ReadFile(path); err == nil {
		return []byte(strings.TrimSpace(string(b))), false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("read %s: %w", path, err)
	}
	secret, err = createSecret(dir, name)
	return secret, err == nil, err
}

// createSecret writes a new secret unless another process won the race,
// and returns whichever is in place.
func createSecret(dir, name string) ([]byte, error) {
	path := filepath.Join(dir, name)
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
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "twofactor:", err)
		os.Exit(1)
	}
}

// run picks the command: serve when none is named.
func run(args []string, stdout, stderr io.Writer) error {
	cmd, rest := "serve", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, rest = args[0], args[1:]
	}
	switch {
	case cmd == "help" || (cmd == "serve" && len(args) > 0 && isHelpFlag(args[0])):
		_, err := io.WriteString(stdout, usage)
		return err
	case cmd == "serve":
		return runServe(rest, stdout, stderr)
	case cmd == "token":
		return runToken(rest, stdout, stderr)
	case cmd == "audit":
		return runAudit(rest, stdout, stderr)
	}
	return fmt.Errorf("unknown command %q (commands: serve, token, audit, help)", cmd)
}

func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

const usage = `twofactor: the two-factor authentication service

Usage:
  twofactor [serve]          run the service (the default command)
  twofactor token [flags]    print a caller token signed with the server's secret
  twofactor audit verify     check a company's audit hash chains (see audit --help)
  twofactor help             show this help
  twofactor COMMAND --help   show a command's help

With nothing configured, serve runs in embedded mode: SQLite and generated
secrets in DATA_DIR (./data), an in-process Redis, codes written to the log.
Production sets DATABASE_URL, REDIS_URL and the secrets. All configuration
is environment variables: see README.md, "Configuration".
`

const serveUsage = `Usage: twofactor serve

Runs the service on LISTEN_ADDR (default :8080; 127.0.0.1:8080 in embedded
mode, which only this machine can reach) until SIGINT or SIGTERM,
then lets in-flight requests finish. It serves:
  /query                 the GraphQL API (POST, GET, websockets, SSE)
  /                      the GraphQL playground (also /playground)
  /admin/                the admin console
  /demo/login            the reference login screen (embedded mode, or DEMO_PAGES=true)
  /schema.graphql        the schema, for codegen (admin or service token)
  /audit/export          the audit log as CSV or NDJSON, streamed (admin token)
  /.well-known/jwks.json keys that verify challenge assertions
  /healthz, /readyz      liveness and readiness
and Prometheus metrics at /metrics on METRICS_ADDR (default 127.0.0.1:9464;
empty turns them off), never on LISTEN_ADDR.

In embedded mode (no DATABASE_URL) it prints an admin token for company
"demo", and pages opened from this machine get one filled in.
Configuration is read from the environment: see README.md, "Configuration".
`

const tokenUsage = `Usage: twofactor token [flags]

Prints a caller token signed with the server's secret: AUTH_JWT_SECRET, or in
embedded mode DATA_DIR/auth_jwt_secret. Run it where the server runs, with the
same environment, or the server will reject the token.
`

// commandFlags is a command's flag set: errors go to errOut, and --help
// prints usage and the flags to out.
func commandFlags(name, usage string, out, errOut io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() {
		fmt.Fprint(out, usage)
		if hasFlags(fs) {
			fmt.Fprint(out, "\nFlags:\n")
			fs.SetOutput(out)
			fs.PrintDefaults()
			fs.SetOutput(errOut)
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseFlags parses args; a command takes flags only, no arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q (see %s --help)", fs.Name(), fs.Arg(0), fs.Name())
	}
	return nil
}

func runToken(args []string, out, errOut io.Writer) error {
	fs := commandFlags("token", tokenUsage, out, errOut)
	company := fs.String("company", demo.Company, "company id")
	role := fs.String("role", "admin", "admin, service or user")
	sub := fs.String("sub", "admin", "the caller's user id")
	name := fs.String("name", "", "display name for the audit log")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if !auth.Role(*role).Valid() {
		return fmt.Errorf("token: --role must be admin, service or user, not %q", *role)
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if cfg.JWTSecret == "" && !cfg.embedded() {
		return errors.New("token: AUTH_JWT_SECRET is required: this command signs HS256 tokens (tokens for AUTH_JWKS_URL keys come from the identity provider)")
	}
	t, created, err := cfg.tokens(nil)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(errOut, "twofactor token: warning: no secret was configured, so a new one was created in %s.\n"+
			"A server that uses another DATA_DIR or AUTH_JWT_SECRET will reject this token: run this command\n"+
			"where the server runs, with the same environment.\n", filepath.Join(cfg.DataDir, "auth_jwt_secret"))
	}
	tok, err := t.Sign(auth.Caller{UserID: *sub, Company: *company, Role: auth.Role(*role), Name: *name}, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}

func runServe(args []string, out, errOut io.Writer) error {
	if err := parseFlags(commandFlags("serve", serveUsage, out, errOut), args); err != nil {
		return err
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewJSONHandler(errOut, &slog.HandlerOptions{Level: cfg.LogLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	a, tokens, closeBackends, err := build(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer closeBackends()
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	logger.Info("listening", "addr", ln.Addr().String(), "mode", cfg.mode())
	metricsLn, err := listenMetrics(cfg.MetricsAddr, logger)
	if err != nil {
		ln.Close()
		return err
	}
	if cfg.embedded() {
		if err := banner(out, cfg, ln.Addr(), tokens); err != nil {
			return err
		}
	}
	return serveUntilSignal(ctx, a, ln, metricsLn, logger)
}

// listenMetrics opens METRICS_ADDR, or returns nil when it is empty.
func listenMetrics(addr string, logger *slog.Logger) (net.Listener, error) {
	if addr == "" {
		logger.Info("metrics are off (METRICS_ADDR is empty)")
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on METRICS_ADDR %s: %w", addr, err)
	}
	logger.Info("metrics listening", "addr", ln.Addr().String())
	return ln, nil
}

func (c config) mode() string {
	if c.embedded() {
		return "embedded"
	}
	return "production"
}

// build opens the backends and assembles the app; closeBackends releases
// them after the server has stopped.
func build(ctx context.Context, cfg config, logger *slog.Logger) (a *app.App, tokens *auth.Tokens, closeBackends func(), err error) {
	closeBackends = func() {}
	if tokens, _, err = cfg.tokens(logger); err != nil {
		return nil, nil, closeBackends, err
	}
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	db, err := openMigrated(ctx, startCtx, cfg)
	if err != nil {
		return nil, nil, closeBackends, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, nil, closeBackends, err
	}
	rdb, err := store.OpenRedis(startCtx, cfg.RedisURL, store.WithCAFile(cfg.RedisCAFile))
	if err != nil {
		sqlDB.Close()
		return nil, nil, closeBackends, err
	}
	closeBackends = func() { rdb.Close(); sqlDB.Close() }
	opts, err := cfg.challengeOptions(logger)
	if err != nil {
		return nil, nil, closeBackends, err
	}
	opts.DB, opts.Redis, opts.Tokens, opts.Logger = db, rdb, tokens, logger
	opts.AllowedOrigins, opts.Embedded, opts.DemoPages = cfg.AllowedOrigins, cfg.embedded(), cfg.DemoPages
	opts.AllowedHeaders = cfg.AllowedHeaders
	opts.CursorKey = []byte(cfg.CursorKey)
	opts.AuditRetention = cfg.AuditRetention
	// Embedded mode on a loopback address answers to this machine's names
	// only, against DNS rebinding; a LISTEN_ADDR open to the network
	// serves whatever name it is reached by.
	opts.LoopbackHostsOnly = cfg.embedded() && httpapi.LoopbackHost(cfg.ListenAddr)
	a, err = app.New(opts)
	return a, tokens, closeBackends, err
}

// defaultMigrateTimeout is MIGRATE_TIMEOUT's default. Migration 0004
// hashes every audit row: 1,000,000 rows took 85 s on PostgreSQL, far
// past the 30 s that connecting gets.
const defaultMigrateTimeout = 10 * time.Minute

// openMigrated opens and migrates the database: PostgreSQL must answer
// within startCtx, and the migrations then get MIGRATE_TIMEOUT of their
// own, so an unreachable database still fails fast.
func openMigrated(ctx, startCtx context.Context, cfg config) (*gorm.DB, error) {
	if !cfg.embedded() {
		probe, err := store.OpenPostgres(startCtx, cfg.DatabaseURL)
		if err != nil {
			return nil, err
		}
		if sqlDB, err := probe.DB(); err == nil {
			sqlDB.Close()
		}
	}
	migrateCtx, cancel := context.WithTimeout(ctx, cfg.MigrateTimeout)
	defer cancel()
	return store.OpenDB(migrateCtx, cfg.DatabaseURL, cfg.DataDir)
}

// banner tells the person at the terminal where to go, with a demo admin
// token. Printed, not logged: the token is for them.
func banner(out io.Writer, cfg config, addr net.Addr, tokens *auth.Tokens) error {
	ttl := min(24*time.Hour, tokens.MaxTTL())
	tok, err := tokens.Sign(demo.Admin, ttl)
	if err != nil {
		return err
	}
	base := "http://" + displayAddr(addr)
	_, err = fmt.Fprintf(out, "\nTwo-factor service (embedded mode: SQLite in %s, in-process Redis)\n"+
		"Playground:    %s/\n"+
		"Admin console: %s/admin/\n"+
		"Demo login:    %s/demo/login\n"+
		"Admin token for company %q (valid %s; pages opened on this machine get one filled in):\n%s\n\n",
		cfg.DataDir, base, base, base, demo.Company, strings.TrimSuffix(strings.TrimSuffix(ttl.String(), "0s"), "0m"), tok)
	return err
}

// serveUntilSignal serves until SIGINT or SIGTERM, then lets in-flight
// requests finish. metricsLn, if not nil, serves /metrics.
func serveUntilSignal(ctx context.Context, a *app.App, ln, metricsLn net.Listener, logger *slog.Logger) error {
	// Timeouts and header limits are httpapi's. Request contexts must not
	// derive from ctx: SIGTERM cancels it, and in-flight requests are
	// meant to finish, not fail.
	srv := httpapi.NewServer(a.Handler)
	// Shutdown does not wait for hijacked websockets: end their streams
	// with a resume hint instead of cutting them off silently.
	srv.RegisterOnShutdown(a.Close)
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	metricsSrv := serveMetrics(a, metricsLn, errc)
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
	if metricsSrv != nil {
		if err := metricsSrv.Shutdown(shutdownCtx); err != nil {
			return fmt.Errorf("shutdown metrics: %w", err)
		}
	}
	logger.Info("stopped")
	return nil
}

// serveMetrics serves GET /metrics on ln, apart from the public
// listener; nil ln serves nothing.
func serveMetrics(a *app.App, ln net.Listener, errc chan<- error) *http.Server {
	if ln == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.Metrics.Handler())
	srv := httpapi.NewServer(mux)
	go func() { errc <- fmt.Errorf("metrics: %w", srv.Serve(ln)) }()
	return srv
}

// displayAddr is an address to open in a browser on this machine.
func displayAddr(a net.Addr) string {
	if tcp, ok := a.(*net.TCPAddr); ok && (tcp.IP.IsUnspecified() || tcp.IP.IsLoopback()) {
		return fmt.Sprintf("localhost:%d", tcp.Port)
	}
	return a.String()
}
