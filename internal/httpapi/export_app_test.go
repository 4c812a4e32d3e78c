package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/testenv"
)

// evil is a display name a spreadsheet would run as a formula.
const evil = `=HYPERLINK("http://evil.example/","Click me")`

// exportCompany is a company with a varied log, and the admin who reads it.
type exportCompany struct {
	id    string
	admin *apptest.Client
}

// seedExportApp fills two companies' logs through the API and the log
// itself: users (one with a formula for a name), 2FA switches per app,
// and sign-in events at fixed times in January 2026.
func seedExportApp(t *testing.T, srv *apptest.Server) (exportCompany, exportCompany) {
	t.Helper()
	var out [2]exportCompany
	for i := range out {
		id := testenv.Company(t)
		// Actor names that a spreadsheet would also take for formulas.
		admin := srv.As(t, auth.Caller{UserID: "admin-" + id, Company: id, Role: auth.RoleAdmin, Name: []string{"@dmin", "-Ada"}[i]})
		out[i] = exportCompany{id: id, admin: admin}
		for _, u := range []map[string]any{
			{"id": "ann", "displayName": "Ann, \"the\" first\nof two lines"},
			{"id": "bob", "displayName": "+Bob"},
			{"id": "mallory", "displayName": evil},
		} {
			admin.Must(t, `mutation($input: CreateUserInput!) { createUser(input: $input) { userErrors { code } } }`,
				map[string]any{"input": u}, nil)
		}
		for _, s := range []struct{ user, app string }{{"ann", "WEB"}, {"bob", "MANAGER"}, {"ann", "MANAGER"}} {
			admin.Must(t, `mutation($input: SetUserTwoFactorInput!) { setUserTwoFactor(input: $input) { userErrors { code } } }`,
				map[string]any{"input": map[string]any{"userId": s.user, "app": s.app, "enabled": true}}, nil)
		}
		svc := audit.Party{ID: "svc-" + id, Role: auth.RoleService}
		for day, e := range []struct {
			action     audit.Action
			user, app  string
			detailJSON string
		}{
			{audit.CodeSent, "ann", "web", `{"channel":"SMS","destination":"+371 *** **12"}`},
			{audit.CodeRejected, "ann", "web", `{"attempt":1,"maxAttempts":3}`},
			{audit.CodeVerified, "bob", "manager", `{"channel":"EMAIL"}`},
			{audit.CodeSent, "bob", "manager", `{"channel":"EMAIL","destination":"b***@example.com"}`},
			{audit.FailedAttemptsLimitReached, "ann", "web", `{"lockedUntil":"2026-01-05T00:15:00Z"}`},
		} {
			err := srv.Audit.Record(context.Background(), &audit.Event{
				Company: id, Action: e.action, Actor: svc, Target: &audit.Party{ID: e.user}, App: e.app,
				Details: json.RawMessage(e.detailJSON), CreatedAt: time.Date(2026, 1, day+1, 0, 0, 0, 0, time.UTC),
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	return out[0], out[1]
}

const auditLogQuery = `query($after: String, $filter: AuditLogFilter) {
  auditLog(first: 100, after: $after, filter: $filter) {
    edges { node { id action actor { id displayName role } targetUser { id displayName role } app details createdAt } }
    pageInfo { hasNextPage endCursor }
  }
}`

// auditLogNodes walks auditLog to its end and returns the nodes, oldest
// first, as JSON objects.
func auditLogNodes(t *testing.T, c *apptest.Client, filter map[string]any) []map[string]json.RawMessage {
	t.Helper()
	var nodes []map[string]json.RawMessage
	vars := map[string]any{"filter": filter}
	for {
		var out struct {
			AuditLog struct {
				Edges    []struct{ Node map[string]json.RawMessage }
				PageInfo struct {
					HasNextPage bool
					EndCursor   string
				}
			}
		}
		c.Must(t, auditLogQuery, vars, &out)
		for _, e := range out.AuditLog.Edges {
			nodes = append(nodes, e.Node)
		}
		if !out.AuditLog.PageInfo.HasNextPage {
			break
		}
		vars["after"] = out.AuditLog.PageInfo.EndCursor
	}
	for i, j := 0, len(nodes)-1; i < j; i, j = i+1, j-1 {
		nodes[i], nodes[j] = nodes[j], nodes[i]
	}
	return nodes
}

// fetchExport GETs /audit/export?query with token and reads all of it.
func fetchExport(t *testing.T, base, token, query string) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/audit/export?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d, %v: %s", query, resp.StatusCode, err, body)
	}
	return body
}

// wantCSV is the CSV record of an auditLog node, built from the API's
// answer alone: the console's cells (web/admin/csv.js) in the issue's
// order, then the ids and the category, each neutralised as the console
// does.
func wantCSV(t *testing.T, n map[string]json.RawMessage) []string {
	t.Helper()
	str := func(raw json.RawMessage) string {
		var s *string
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if s == nil {
			return ""
		}
		return *s
	}
	party := func(raw json.RawMessage) (id, name string) {
		var p map[string]json.RawMessage
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		if p == nil {
			return "", ""
		}
		return str(p["id"]), str(p["displayName"])
	}
	actorID, actor := party(n["actor"])
	targetID, target := party(n["targetUser"])
	details := string(n["details"])
	if details == "null" {
		details = ""
	}
	category := string(audit.CategoryOf(audit.Action(str(n["action"]))))
	row := []string{actor, str(n["action"]), str(n["createdAt"]), str(n["app"]), target, details,
		actorID, targetID, str(n["id"]), category}
	for i, v := range row {
		if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
			row[i] = "'" + v
		}
	}
	return row
}

// checkExports compares both formats of an export with auditLog's nodes.
func checkExports(t *testing.T, srv *apptest.Server, c exportCompany, query string, want []map[string]json.RawMessage) {
	t.Helper()
	raw := fetchExport(t, srv.URL, c.admin.Token, "format=csv&"+query)
	if !bytes.HasPrefix(raw, []byte("\ufeff")) || !bytes.HasSuffix(raw, []byte("\r\n")) {
		t.Errorf("the CSV lacks its byte order mark or CRLF line ends: %q", raw[:min(len(raw), 40)])
	}
	records, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(raw, []byte("\ufeff")))).ReadAll()
	if err != nil {
		t.Fatalf("the CSV does not parse: %v", err)
	}
	header := []string{"User", "Action", "Time (UTC)", "App", "Target", "Details", "User id", "Target id", "Event id", "Category"}
	if !reflect.DeepEqual(records[0], header) {
		t.Errorf("header %q, want %q", records[0], header)
	}
	if len(records)-1 != len(want) {
		t.Fatalf("CSV has %d rows, auditLog %d", len(records)-1, len(want))
	}
	for i, n := range want {
		if w := wantCSV(t, n); !reflect.DeepEqual(records[i+1], w) {
			t.Errorf("CSV row %d\n%q\nwant\n%q", i, records[i+1], w)
		}
	}

	sc := bufio.NewScanner(bytes.NewReader(fetchExport(t, srv.URL, c.admin.Token, "format=ndjson&"+query)))
	line := 0
	for ; sc.Scan(); line++ {
		var got map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("NDJSON line %d does not parse: %v: %s", line, err, sc.Bytes())
		}
		if line >= len(want) {
			continue
		}
		var action string
		_ = json.Unmarshal(got["action"], &action)
		if cat := string(got["category"]); cat != `"`+string(audit.CategoryOf(audit.Action(action)))+`"` {
			t.Errorf("NDJSON line %d: category %s for %s", line, cat, action)
		}
		delete(got, "category")
		if !sameJSON(t, got, want[line]) {
			t.Errorf("NDJSON line %d\n%s\nwant auditLog's\n%v", line, sc.Bytes(), want[line])
		}
	}
	if line != len(want) {
		t.Errorf("NDJSON has %d lines, auditLog %d events", line, len(want))
	}
}

// sameJSON compares two objects by value, whatever their spacing.
func sameJSON(t *testing.T, a, b map[string]json.RawMessage) bool {
	t.Helper()
	var va, vb any
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if json.Unmarshal(ja, &va) != nil || json.Unmarshal(jb, &vb) != nil {
		t.Fatal("not JSON")
	}
	return reflect.DeepEqual(va, vb)
}

// Every filter parameter exports exactly what auditLog lists with the
// same filter, in both formats, and only the caller's company.
func TestExportMatchesAuditLog(t *testing.T) {
	srv := apptest.Start(t)
	acme, globex := seedExportApp(t, srv)
	for _, tc := range []struct {
		name, query string
		filter      map[string]any
	}{
		{"everything", "", nil},
		{"actions", "actions=USER_CREATED,CODE_SENT", map[string]any{"actions": []string{"USER_CREATED", "CODE_SENT"}}},
		{"authentication", "category=AUTHENTICATION", map[string]any{"category": "AUTHENTICATION"}},
		{"settings", "category=settings", map[string]any{"category": "SETTINGS"}},
		{"user", "userId=bob", map[string]any{"userId": "bob"}},
		{"app", "app=web", map[string]any{"app": "WEB"}},
		{"from", "from=2026-01-03T00:00:00Z", map[string]any{"from": "2026-01-03T00:00:00Z"}},
		{"to", "to=2026-01-03T00:00:00Z", map[string]any{"to": "2026-01-03T00:00:00Z"}},
		{"everything at once", "actions=CODE_SENT,CODE_REJECTED&category=AUTHENTICATION&userId=ann&app=WEB" +
			"&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00.001Z",
			map[string]any{"actions": []string{"CODE_SENT", "CODE_REJECTED"}, "category": "AUTHENTICATION", "userId": "ann",
				"app": "WEB", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00.001Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []exportCompany{acme, globex} {
				want := auditLogNodes(t, c.admin, tc.filter)
				all := len(auditLogNodes(t, c.admin, nil))
				if len(want) == 0 || (len(want) == all) != (tc.filter == nil) {
					t.Fatalf("the filter matches %d of %d events: it tests nothing", len(want), all)
				}
				checkExports(t, srv, c, tc.query, want)
			}
		})
	}
	t.Run("neutralised formulas", func(t *testing.T) {
		raw := string(fetchExport(t, srv.URL, acme.admin.Token, "format=csv&actions=USER_CREATED"))
		for _, cell := range []string{`"'=HYPERLINK(""http://evil.example/"",""Click me"")"`, "'@dmin", "'+Bob"} {
			if !strings.Contains(raw, cell) {
				t.Errorf("no cell %s in\n%s", cell, raw)
			}
		}
	})
	t.Run("roles", func(t *testing.T) {
		for _, tc := range []struct {
			token  string
			status int
		}{
			{"", http.StatusUnauthorized},
			{srv.User(t, acme.id, "ann").Token, http.StatusForbidden},
			{srv.Service(t, acme.id).Token, http.StatusForbidden},
			{acme.admin.Token, http.StatusOK},
		} {
			h := map[string]string{}
			if tc.token != "" {
				h["Authorization"] = "Bearer " + tc.token
			}
			if resp, body := do(t, http.MethodGet, srv.URL+"/audit/export?format=csv", h, ""); resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %.200s", resp.StatusCode, tc.status, body)
			}
		}
	})
	t.Run("tenant isolation", func(t *testing.T) {
		raw := fetchExport(t, srv.URL, acme.admin.Token, "format=ndjson")
		if bytes.Contains(raw, []byte(globex.id)) || !bytes.Contains(raw, []byte(acme.id)) {
			t.Errorf("acme's export names globex (%s) or not acme", globex.id)
		}
		for _, id := range []string{"ann", "bob"} {
			// The same user id in both companies: only acme's rows.
			want := auditLogNodes(t, acme.admin, map[string]any{"userId": id})
			checkExports(t, srv, acme, "userId="+id, want)
		}
	})
}

// A client that leaves midway stops the export on real backends: the
// handler returns and no goroutine is left exporting.
func TestExportClientGoneStopsQuery(t *testing.T) {
	const rows = 150_000 // some 25 MB of CSV: more than the socket buffers hold
	logs := &apptest.Buffer{}
	srv := apptest.Start(t, func(o *app.Options) { o.Logger = slog.New(slog.NewJSONHandler(logs, nil)) })
	company := testenv.Company(t)
	fillLog(t, srv, company, rows)

	req, err := http.NewRequest(http.MethodGet, srv.URL+"/audit/export?format=csv", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+srv.Admin(t, company).Token)
	req.Header.Set("X-Request-Id", "export-gone-"+company)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 64<<10); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	deadline := time.Now().Add(30 * time.Second)
	for !loggedRequest(t, logs, "export-gone-"+company) || exporting() {
		if time.Now().After(deadline) {
			t.Fatalf("the export still runs 30s after its client left:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var gone struct{ Rows int }
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "audit export ended: client gone") {
			_ = json.Unmarshal([]byte(line), &gone)
		}
	}
	if gone.Rows == 0 || gone.Rows >= rows {
		t.Errorf("the export wrote %d of %d rows before stopping; want it cut short", gone.Rows, rows)
	}
}

// exporting reports whether any goroutine is inside the export handler.
func exporting() bool {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return bytes.Contains(buf[:n], []byte("exportAudit")) || bytes.Contains(buf[:n], []byte("(*Log).Export"))
		}
		buf = make([]byte, 2*len(buf))
	}
}

// fillLog inserts n rows for company in one statement (a recursive CTE,
// which PostgreSQL and SQLite both run).
func fillLog(t *testing.T, srv *apptest.Server, company string, n int) {
	t.Helper()
	err := srv.Backends.DB.Exec(`
		WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < ?)
		INSERT INTO audit_events (company_id, action, actor_id, actor_name, actor_role, target_user_id,
			target_user_name, app, details, created_at, category)
		SELECT ?, 'USER_TWO_FACTOR_ENABLED', 'admin', 'Admin', 'admin', 'user-' || n, 'User ' || n, 'web',
			'{"before":{"enabled":false},"after":{"enabled":true}}', ?, 'SETTINGS'
		FROM g`, n, company, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)).Error
	if err != nil {
		t.Fatalf("fill the log: %v", err)
	}
	var count int64
	if err := srv.Backends.DB.Table("audit_events").Where("company_id = ?", company).Count(&count).Error; err != nil || count != int64(n) {
		t.Fatalf("filled %d rows (%v), want %d", count, err, n)
	}
}
