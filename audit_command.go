package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/otp"
	"github.com/twofactor/service/internal/store"
)

const auditUsage = `Usage: twofactor audit verify --company ID [--from TIME] [--to TIME] [--category CATEGORY]
       twofactor audit retention

verify checks the hash chains of one company's audit log, as the auditLogIntegrity
query does: every row must hash, from the row before it in its chain, to its
stored hash. It reads the database the way serve does (DATABASE_URL, or the
SQLite file in DATA_DIR) and names events by the ids the API shows, so it
needs the same CURSOR_KEY or CODE_HMAC_KEY as the service.

Exit status 0: every checked row links. 1: a row does not (its id is
printed), or the check could not run. audit verify --help lists the flags.

retention removes expired sign-in rows once, as every instance does each
hour unless AUDIT_RETENTION_AUTHENTICATION is off: for a cron job whose
database role may delete them, when the service's role may not (README,
"Tamper evidence").
`

// runAudit picks the audit subcommand.
func runAudit(args []string, out, errOut io.Writer) error {
	if len(args) == 0 || isHelpFlag(args[0]) {
		if _, err := io.WriteString(out, auditUsage); err != nil || len(args) > 0 {
			return err
		}
		return errors.New("audit: name a subcommand: verify or retention (see audit --help)")
	}
	switch args[0] {
	case "verify":
		return runAuditVerify(args[1:], out, errOut)
	case "retention":
		return runAuditRetention(args[1:], out)
	}
	return fmt.Errorf("audit: unknown subcommand %q (subcommands: verify, retention)", args[0])
}

// runAuditRetention removes expired sign-in rows once, with the
// environment's AUDIT_RETENTION_AUTHENTICATION (which must not be off).
func runAuditRetention(args []string, out io.Writer) error {
	if len(args) > 0 {
		if isHelpFlag(args[0]) {
			_, err := io.WriteString(out, auditUsage)
			return err
		}
		return fmt.Errorf("audit retention takes no arguments; it reads AUDIT_RETENTION_AUTHENTICATION")
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if cfg.AuditRetention == 0 {
		return errors.New("audit retention: AUDIT_RETENTION_AUTHENTICATION is off: set how long to keep sign-in rows, such as 400d")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	db, err := store.OpenDB(ctx, cfg.DatabaseURL, cfg.DataDir)
	if err != nil {
		return err
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	n, err := audit.NewRetention(audit.NewLog(db, nil, nil), cfg.AuditRetention, nil).RunOnce(ctx)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "removed %d sign-in rows older than %s\n", n, cfg.AuditRetention)
	return err
}

func runAuditVerify(args []string, out, errOut io.Writer) error {
	fs := commandFlags("audit verify", auditUsage, out, errOut)
	company := fs.String("company", "", "the company id (required)")
	from := fs.String("from", "", "check rows created at or after this RFC 3339 time (default: the start)")
	to := fs.String("to", "", "check rows created before this RFC 3339 time (default: the end)")
	category := fs.String("category", "", "SETTINGS or AUTHENTICATION (default: both)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	w, err := auditWindow(*company, *from, *to, *category)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return verifyAudit(ctx, cfg, *company, w, out)
}

// auditWindow checks the flags' shapes; the log checks the rest.
func auditWindow(company, from, to, category string) (audit.Window, error) {
	var w audit.Window
	if company == "" || len(company) > 64 {
		return w, errors.New("--company is required (a company id of at most 64 bytes)")
	}
	for _, f := range []struct {
		name, v string
		dst     **time.Time
	}{{"--from", from, &w.From}, {"--to", to, &w.To}} {
		if f.v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, f.v)
		if err != nil {
			return w, fmt.Errorf("%s: want an RFC 3339 time such as 2025-01-31T00:00:00Z, got %.40q", f.name, f.v)
		}
		*f.dst = &t
	}
	w.Category = audit.Category(strings.ToUpper(category))
	return w, nil
}

// verifyAudit runs the check and reports it; a broken chain is an error,
// so the command exits 1.
func verifyAudit(ctx context.Context, cfg config, company string, w audit.Window, out io.Writer) error {
	codec, err := cfg.auditCodec()
	if err != nil {
		return err
	}
	db, err := store.OpenDB(ctx, cfg.DatabaseURL, cfg.DataDir)
	if err != nil {
		return err
	}
	if sqlDB, err := db.DB(); err == nil {
		defer sqlDB.Close()
	}
	log := audit.NewLog(db, nil, nil, audit.WithCodec(codec))
	res, err := log.Verify(ctx, company, w)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	if res.OK {
		_, err := fmt.Fprintf(out, "ok: %d rows checked; each links to the one before it\n", res.CheckedRows)
		return err
	}
	for _, p := range res.Problems {
		fmt.Fprintf(out, "BROKEN: %s\n", p)
	}
	if res.FirstBroken == nil {
		fmt.Fprintf(out, "BROKEN: %d rows checked; each links to the one before it, but see above\n", res.CheckedRows)
		return fmt.Errorf("audit verify: the audit log of %q is broken: %s", company, strings.Join(res.Problems, "; "))
	}
	e := *res.FirstBroken
	id := log.PublicID(e)
	fmt.Fprintf(out, "BROKEN: %d rows checked; the first that does not link is event %s (%s, %s, %s)\n",
		res.CheckedRows, id, e.Category(), e.Action, e.CreatedAt.Format(time.RFC3339Nano))
	return fmt.Errorf("audit verify: the audit log of %q is broken at event %s", company, id)
}

// auditCodec is the key that names events as the service does: CURSOR_KEY,
// or else the one derived from the code HMAC key (in embedded mode, the
// one in DATA_DIR).
func (c config) auditCodec() (*cursor.Codec, error) {
	if c.CursorKey != "" {
		return app.CursorCodec([]byte(c.CursorKey), nil)
	}
	key := []byte(c.CodeHMACKey)
	if c.CodeHMACKey == "" {
		if !c.embedded() {
			return nil, errors.New("CURSOR_KEY or CODE_HMAC_KEY is required to name events as the service does")
		}
		var err error
		if key, _, err = dataDirSecret(c.DataDir, "code_hmac_key"); err != nil {
			return nil, err
		}
	}
	codes, err := otp.NewHasher(key, c.CodeLength)
	if err != nil {
		return nil, fmt.Errorf("CODE_HMAC_KEY/CODE_LENGTH: %w", err)
	}
	return app.CursorCodec(nil, codes)
}
