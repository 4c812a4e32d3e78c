package main

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/cursor"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/models"
)

// TestAuditVerifyCommand: `audit verify` checks the database the service
// uses, exits 0 on an intact log and 1 naming the changed row by the id
// the API shows, and honours --category and --from.
func TestAuditVerifyCommand(t *testing.T) {
	b := testenv.Open(t)
	const cursorKey = "audit-verify-cursor-key-0123456789abcdef"
	codec, err := cursor.New([]byte(cursorKey))
	if err != nil {
		t.Fatal(err)
	}
	log := audit.NewLog(b.DB, nil, nil, audit.WithCodec(codec))
	company := testenv.Company(t)
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	var events []*audit.Event
	for i := range 12 {
		action := audit.UserUpdated
		if i%3 == 0 {
			action = audit.CodeVerified
		}
		events = append(events, &audit.Event{Company: company, Action: action, CreatedAt: base.Add(time.Duration(i) * time.Minute),
			Actor: audit.Party{ID: "admin", Role: auth.RoleAdmin}, Details: audit.Details(map[string]int{"n": i})})
	}
	if err := b.DB.Transaction(func(tx *gorm.DB) error { return log.WriteMany(tx, events) }); err != nil {
		t.Fatal(err)
	}
	env := cleanEnv("DATA_DIR="+b.DataDir, "CURSOR_KEY="+cursorKey)
	if b.DatabaseURL != "" {
		env = append(env, "DATABASE_URL="+b.DatabaseURL, "REDIS_URL="+b.RedisURL,
			"AUTH_JWT_SECRET=audit-verify-test-secret-0123456789abcdef")
	}
	bin := buildBinary(t)
	run := func(args ...string) (string, int) {
		t.Helper()
		out, err := runBinary(t, bin, t.TempDir(), env, append([]string{"audit", "verify", "--company", company}, args...)...)
		if ee, ok := err.(*exec.ExitError); ok {
			return out, ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out, 0
	}
	if out, code := run(); code != 0 || !strings.Contains(out, "ok: 12 rows checked") {
		t.Fatalf("intact log: exit %d, output %q", code, out)
	}
	if err := b.DB.Exec(`UPDATE audit_events SET details = '{"n":0}' WHERE company_id = ? AND id = ?`,
		company, events[7].ID).Error; err != nil {
		t.Fatal(err)
	}
	broken := log.PublicID(*events[7])
	cases := []struct {
		args     []string
		wantExit int
		want     string
	}{
		{nil, 1, broken},
		{[]string{"--category", "settings"}, 1, broken},
		{[]string{"--category", "AUTHENTICATION"}, 0, "ok: 4 rows checked"},
		// A window also checks the row before it and the row after it.
		{[]string{"--from", base.Add(9 * time.Minute).Format(time.RFC3339)}, 0, "ok: 5 rows checked"},
		{[]string{"--from", base.Add(8 * time.Minute).Format(time.RFC3339)}, 1, broken},
		{[]string{"--to", base.Add(5 * time.Minute).Format(time.RFC3339)}, 0, "ok: 7 rows checked"},
		{[]string{"--to", base.Add(7 * time.Minute).Format(time.RFC3339)}, 1, broken},
		{[]string{"--from", base.Add(5 * time.Minute).Format(time.RFC3339), "--to", base.Add(9 * time.Minute).Format(time.RFC3339)}, 1, broken},
		{[]string{"--from", "yesterday"}, 1, "RFC 3339"},
		{[]string{"--category", "ALL"}, 1, "must be SETTINGS or AUTHENTICATION"},
	}
	for _, tc := range cases {
		out, code := run(tc.args...)
		if code != tc.wantExit || !strings.Contains(out, tc.want) {
			t.Errorf("audit verify %v: exit %d, output %q; want exit %d and %q", tc.args, code, out, tc.wantExit, tc.want)
		}
	}
	if out, code := run("extra"); code != 1 || !strings.Contains(out, "unexpected argument") {
		t.Errorf("an extra argument: exit %d, %q", code, out)
	}
	// Retention never cuts the settings chain: a checkpoint for it is
	// reported, even when no row is named.
	if err := b.DB.Exec(`INSERT INTO audit_checkpoints (company_id, category, last_id, hash, updated_at) VALUES (?, 'SETTINGS', ?, '00', ?)`,
		company, events[7].ID, time.Now()).Error; err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{nil, {"--from", base.Add(9 * time.Minute).Format(time.RFC3339)}} {
		if out, code := run(args...); code != 1 || !strings.Contains(out, "BROKEN: SETTINGS: it has a retention checkpoint") {
			t.Errorf("audit verify %v with a settings checkpoint: exit %d, output %q", args, code, out)
		}
	}
}

// TestAuditRetentionCommand: one pass removes expired sign-in rows and
// keeps settings rows; off is refused rather than doing nothing quietly.
func TestAuditRetentionCommand(t *testing.T) {
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	company := testenv.Company(t)
	old := time.Now().Add(-500 * 24 * time.Hour)
	events := []*audit.Event{
		{Company: company, Action: audit.CodeSent, CreatedAt: old, Actor: audit.Party{ID: "svc", Role: auth.RoleService}},
		{Company: company, Action: audit.UserCreated, CreatedAt: old, Actor: audit.Party{ID: "a", Role: auth.RoleAdmin}},
		{Company: company, Action: audit.CodeVerified, Actor: audit.Party{ID: "svc", Role: auth.RoleService}},
	}
	if err := b.DB.Transaction(func(tx *gorm.DB) error { return log.WriteMany(tx, events) }); err != nil {
		t.Fatal(err)
	}
	env := cleanEnv("DATA_DIR=" + b.DataDir)
	if b.DatabaseURL != "" {
		env = append(env, "DATABASE_URL="+b.DatabaseURL, "REDIS_URL="+b.RedisURL,
			"AUTH_JWT_SECRET=audit-verify-test-secret-0123456789abcdef")
	}
	bin := buildBinary(t)
	out, err := runBinary(t, bin, t.TempDir(), append(env, "AUDIT_RETENTION_AUTHENTICATION=off"), "audit", "retention")
	if err == nil || !strings.Contains(out, "is off") {
		t.Errorf("retention off: %v, %q; want a refusal", err, out)
	}
	out, err = runBinary(t, bin, t.TempDir(), env, "audit", "retention")
	if err != nil || !strings.Contains(out, "removed 1 sign-in rows") {
		t.Fatalf("audit retention: %v, %q", err, out)
	}
	var left []string
	if err := b.DB.Model(&models.AuditEvent{}).Where("company_id = ?", company).Order("id").Pluck("action", &left).Error; err != nil {
		t.Fatal(err)
	}
	if strings.Join(left, ",") != "USER_CREATED,CODE_VERIFIED" {
		t.Errorf("rows left: %v, want the settings row and the recent sign-in", left)
	}
	if res, err := log.Verify(t.Context(), company, audit.Window{}); err != nil || !res.OK || res.CheckedRows != 2 {
		t.Errorf("after retention: %+v, %v", res, err)
	}
}
