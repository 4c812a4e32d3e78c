package httpapi_test

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/httpapi"
	"github.com/twofactor/service/internal/metrics"
)

var errBroken = errors.New("database went away")

// fakeExporter yields rows made up on the spot, checking the role as
// audit.Log does. Rows < 0 is endless: only the client leaving ends it.
type fakeExporter struct {
	rows   int
	failAt int // fail with errBroken instead of yielding row failAt (0: never)

	mu      sync.Mutex
	filters []audit.Filter
	results chan error // each Export's outcome
}

func newFake(rows int) *fakeExporter { return &fakeExporter{rows: rows, results: make(chan error, 16)} }

func (f *fakeExporter) Export(ctx context.Context, c auth.Caller, filter audit.Filter, fn func(audit.Event) error) (err error) {
	defer func() {
		select {
		case f.results <- err:
		default: // nobody waits for it
		}
	}()
	if err := c.Require(auth.RoleAdmin); err != nil {
		return err
	}
	f.mu.Lock()
	f.filters = append(f.filters, filter)
	f.mu.Unlock()
	for i := 1; f.rows < 0 || i <= f.rows; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if i == f.failAt {
			return errBroken
		}
		if err := fn(fakeEvent(c.Company, i)); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeExporter) PublicID(e audit.Event) string {
	return fmt.Sprintf("ev-%s-%d", e.Company, e.ID)
}

func (f *fakeExporter) calls() []audit.Filter {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]audit.Filter(nil), f.filters...)
}

func fakeEvent(company string, i int) audit.Event {
	return audit.Event{
		ID: int64(i), Company: company, Action: audit.UserCreated,
		Actor:     audit.Party{ID: "admin", Name: "Ada", Role: auth.RoleAdmin},
		Target:    &audit.Party{ID: fmt.Sprintf("user-%d", i)},
		App:       "web",
		Details:   json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
		CreatedAt: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Millisecond),
	}
}

func exportServer(t *testing.T, f *fakeExporter, logs io.Writer) *httptest.Server {
	t.Helper()
	if logs == nil {
		logs = io.Discard
	}
	return server(t, func(c *httpapi.Config) { c.Audit, c.Logger = f, slog.New(slog.NewJSONHandler(logs, nil)) })
}

// errorCode is the code of a JSON error answer.
func errorCode(t *testing.T, body string) (code, msg string) {
	t.Helper()
	var out struct {
		Errors []struct {
			Message    string
			Extensions struct{ Code string }
		}
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Errors) != 1 {
		t.Fatalf("not one JSON error: %s", body)
	}
	return out.Errors[0].Extensions.Code, out.Errors[0].Message
}

func TestExportAuth(t *testing.T) {
	f := newFake(3)
	s := exportServer(t, f, nil)
	for _, tc := range []struct {
		token  string
		status int
		code   string
	}{
		{"", http.StatusUnauthorized, "UNAUTHENTICATED"},
		{"bad", http.StatusUnauthorized, "UNAUTHENTICATED"},
		{"user", http.StatusForbidden, "FORBIDDEN"},
		{"service", http.StatusForbidden, "FORBIDDEN"},
		{"good", http.StatusOK, ""},
	} {
		t.Run("token "+tc.token, func(t *testing.T) {
			h := map[string]string{}
			if tc.token != "" {
				h["Authorization"] = "Bearer " + tc.token
			}
			before := len(f.calls())
			resp, body := do(t, http.MethodGet, s.URL+"/audit/export?format=ndjson", h, "")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.code != "" {
				if code, _ := errorCode(t, body); code != tc.code {
					t.Errorf("code %s, want %s", code, tc.code)
				}
				if len(f.calls()) != before {
					t.Error("the log was read for a caller who may not export it")
				}
			}
		})
	}
}

func TestExportValidation(t *testing.T) {
	f := newFake(1)
	s := exportServer(t, f, nil)
	for _, tc := range []struct{ name, query, names string }{
		{"no format", "", "format"},
		{"unknown format", "format=xml", "format"},
		{"empty format", "format=", "format"},
		{"unknown parameter", "format=csv&limit=10", "limit"},
		{"a GraphQL name in another case", "format=csv&userid=ann", "userid"},
		{"repeated format", "format=csv&format=ndjson", "format"},
		{"repeated actions", "format=csv&actions=USER_CREATED&actions=CODE_SENT", "actions"},
		{"unknown action", "format=csv&actions=USER_CREATED,DROP_TABLE", "DROP_TABLE"},
		{"empty action", "format=csv&actions=USER_CREATED,", "actions"},
		{"no actions", "format=csv&actions=", "actions"},
		{"too many actions", "format=csv&actions=" + strings.Repeat("CODE_SENT,", 32) + "CODE_SENT", "actions"},
		{"unknown category", "format=csv&category=BILLING", "category"},
		{"empty user", "format=csv&userId=", "userId"},
		{"long user", "format=csv&userId=" + strings.Repeat("u", 129), "userId"},
		{"user not UTF-8", "format=csv&userId=%ff", "userId"},
		{"unknown app", "format=csv&app=desktop", "app"},
		{"from not a time", "format=csv&from=yesterday", "from"},
		{"unescaped plus in to", "format=csv&to=2026-01-01T00:00:00+02:00", "%2B"},
		{"to before from", "format=csv&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"},
		{"to equal to from", "format=csv&from=2026-02-01T00:00:00Z&to=2026-02-01T00:00:00Z", "to"},
		{"bad escape", "format=csv&userId=%zz", "malformed"},
		{"semicolon", "format=csv;userId=ann", "malformed"},
		{"long query", "format=csv&userId=" + strings.Repeat("u", 2100), "longer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, s.URL+"/audit/export?"+tc.query, map[string]string{"Authorization": "Bearer good"}, "")
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			code, msg := errorCode(t, body)
			if code != "BAD_REQUEST" || !strings.Contains(msg, tc.names) {
				t.Errorf("%s %q, want BAD_REQUEST naming %q", code, msg, tc.names)
			}
		})
	}
	if n := len(f.calls()); n != 0 {
		t.Errorf("the log was read %d times for invalid requests", n)
	}
}

// Every parameter reaches the filter, enum values in any case.
func TestExportFilterParameters(t *testing.T) {
	f := newFake(0)
	s := exportServer(t, f, nil)
	from, to := time.Date(2026, 1, 2, 1, 0, 0, 0, time.UTC), time.Date(2026, 1, 3, 0, 0, 0, 500_000_000, time.UTC)
	q := "format=NDJSON&actions=code_sent,+USER_CREATED,CODE_SENT&category=authentication&userId=ann%2B1&app=WEB" +
		"&from=2026-01-02T03:00:00%2B02:00&to=2026-01-03T00:00:00.5Z"
	resp, body := do(t, http.MethodGet, s.URL+"/audit/export?"+q, map[string]string{"Authorization": "Bearer good"}, "")
	if resp.StatusCode != http.StatusOK || body != "" {
		t.Fatalf("status %d: %q", resp.StatusCode, body)
	}
	want := audit.Filter{
		Actions: []audit.Action{audit.CodeSent, audit.UserCreated}, Category: audit.Authentication,
		UserID: "ann+1", App: "web", From: &from, To: &to,
	}
	if got := f.calls(); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Errorf("filter %+v, want %+v", got, want)
	}
}

func TestExportHeaders(t *testing.T) {
	f := newFake(2)
	s := exportServer(t, f, nil)
	admin := map[string]string{"Authorization": "Bearer good"}
	name := regexp.MustCompile(`^attachment; filename=audit-log-\d{4}-\d{2}-\d{2}\.(csv|ndjson)$`)
	for _, tc := range []struct{ format, contentType string }{
		{"csv", "text/csv; charset=utf-8"},
		{"ndjson", "application/x-ndjson"},
	} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			t.Run(method+" "+tc.format, func(t *testing.T) {
				before := len(f.calls())
				resp, body := do(t, method, s.URL+"/audit/export?format="+tc.format, admin, "")
				h := resp.Header
				if resp.StatusCode != http.StatusOK || h.Get("Content-Type") != tc.contentType ||
					h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" {
					t.Fatalf("status %d, headers %v", resp.StatusCode, h)
				}
				if d := h.Get("Content-Disposition"); !name.MatchString(d) || !strings.HasSuffix(d, tc.format) {
					t.Errorf("Content-Disposition %q", d)
				}
				if method == http.MethodHead && (body != "" || len(f.calls()) != before) {
					t.Errorf("HEAD read the log or sent a body: %q", body)
				}
				if method == http.MethodGet && body == "" {
					t.Error("GET sent no body")
				}
			})
		}
	}
	t.Run("POST", func(t *testing.T) {
		resp, body := do(t, http.MethodPost, s.URL+"/audit/export?format=csv", admin, "")
		if code, _ := errorCode(t, body); resp.StatusCode != http.StatusMethodNotAllowed || code != "BAD_REQUEST" ||
			resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("status %d, Allow %q, %s", resp.StatusCode, resp.Header.Get("Allow"), body)
		}
	})
	t.Run("GET with a body", func(t *testing.T) {
		resp, body := do(t, http.MethodGet, s.URL+"/audit/export?format=csv", admin, "x")
		if code, _ := errorCode(t, body); resp.StatusCode != http.StatusBadRequest || code != "BAD_REQUEST" {
			t.Errorf("status %d: %s", resp.StatusCode, body)
		}
	})
	t.Run("not mounted without a log", func(t *testing.T) {
		plain := server(t, nil)
		if resp, _ := do(t, http.MethodGet, plain.URL+"/audit/export?format=csv", admin, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("status %d, want 404", resp.StatusCode)
		}
	})
}

func TestExportEmptyLog(t *testing.T) {
	s := exportServer(t, newFake(0), nil)
	admin := map[string]string{"Authorization": "Bearer good"}
	if _, body := do(t, http.MethodGet, s.URL+"/audit/export?format=csv", admin, ""); body !=
		"\ufeffUser,Action,Time (UTC),App,Target,Details,User id,Target id,Event id,Category\r\n" {
		t.Errorf("empty CSV = %q: want the header alone", body)
	}
	if _, body := do(t, http.MethodGet, s.URL+"/audit/export?format=ndjson", admin, ""); body != "" {
		t.Errorf("empty NDJSON = %q", body)
	}
}

// getStream GETs an export as the admin and reads it to the end.
func getStream(t *testing.T, url string) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer good")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// A failure after the first row cannot change the status: the transfer
// is cut short, and NDJSON says why on its last line.
func TestExportFailsMidway(t *testing.T) {
	const failAt = 2500
	f := newFake(10_000)
	f.failAt = failAt
	logs := &apptest.Buffer{}
	s := exportServer(t, f, logs)

	resp, body, err := getStream(t, s.URL+"/audit/export?format=ndjson")
	if resp.StatusCode != http.StatusOK || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("status %d, read error %v: want 200 and a truncated transfer", resp.StatusCode, err)
	}
	lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	if len(lines) != failAt {
		t.Fatalf("%d lines, want %d rows and the error", len(lines), failAt-1)
	}
	var last struct {
		Error struct{ Code, Message, RequestID string }
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last.Error.Code != "INTERNAL" ||
		last.Error.RequestID != resp.Header.Get("X-Request-Id") {
		t.Errorf("last line %s: want an INTERNAL error with the request id", lines[len(lines)-1])
	}
	if !strings.Contains(logs.String(), errBroken.Error()) {
		t.Error("the failure is not logged")
	}

	resp, body, err = getStream(t, s.URL+"/audit/export?format=csv")
	if resp.StatusCode != http.StatusOK || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("CSV: status %d, read error %v: want 200 and a truncated transfer", resp.StatusCode, err)
	}
	if strings.Contains(string(body), "INTERNAL") {
		t.Error("the CSV has an error row a spreadsheet would take for data")
	}

	f.failAt = 1 // before any row: an ordinary error answer
	resp, body, err = getStream(t, s.URL+"/audit/export?format=csv")
	if err != nil || resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	if code, msg := errorCode(t, string(body)); code != "INTERNAL" || strings.Contains(msg, errBroken.Error()) {
		t.Errorf("%s %q: want INTERNAL without the cause", code, msg)
	}
}

// A client that leaves midway ends the export: an endless log is read
// only as long as someone takes it.
func TestExportClientGone(t *testing.T) {
	for _, format := range []string{"csv", "ndjson"} {
		t.Run(format, func(t *testing.T) {
			f := newFake(-1)
			s := exportServer(t, f, nil)
			req, err := http.NewRequest(http.MethodGet, s.URL+"/audit/export?format="+format, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer good")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(io.Discard, resp.Body, 256<<10); err != nil {
				t.Fatal(err)
			}
			resp.Body.Close() // unread: the connection closes
			select {
			case err := <-f.results:
				if err == nil {
					t.Error("the endless export ended without an error")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the export still runs 30s after its client left")
			}
		})
	}
}

// The write deadline moves with each chunk: an export outlives any fixed
// deadline that was set before it began, and leaves none behind.
func TestExportOutlivesWriteDeadline(t *testing.T) {
	f := newFake(3000)
	h := httpapi.New(httpapi.Config{
		GraphQL: echo, Tokens: verifier{}, Metrics: metrics.New(), Logger: slog.New(slog.DiscardHandler),
		Ready: func(context.Context) error { return nil }, Audit: slowRows{f},
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Config = httpapi.NewServer(h)
	srv.Config.WriteTimeout = 200 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)

	resp, body, err := getStream(t, srv.URL+"/audit/export?format=ndjson")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	if n := strings.Count(string(body), "\n"); n != 3000 {
		t.Errorf("%d rows, want 3000", n)
	}
}

// slowRows yields its rows over about a second, five times the server's
// write timeout in TestExportOutlivesWriteDeadline.
type slowRows struct{ *fakeExporter }

func (s slowRows) Export(ctx context.Context, c auth.Caller, f audit.Filter, fn func(audit.Event) error) error {
	return s.fakeExporter.Export(ctx, c, f, func(e audit.Event) error {
		if e.ID%300 == 0 {
			time.Sleep(100 * time.Millisecond)
		}
		return fn(e)
	})
}

// The rows as written: NDJSON lines and CSV records of the fake's events.
func TestExportRowFormats(t *testing.T) {
	s := exportServer(t, newFake(2), nil)
	_, body, err := getStream(t, s.URL+"/audit/export?format=ndjson")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"ev-c-1","action":"USER_CREATED","category":"SETTINGS",` +
		`"actor":{"id":"admin","displayName":"Ada","role":"ADMIN"},"targetUser":{"id":"user-1","displayName":null,"role":null},` +
		`"app":"WEB","details":{"n":1},"createdAt":"2026-01-01T00:00:00.001Z"}`
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	if !sc.Scan() || sc.Text() != want {
		t.Errorf("first line\n%s\nwant\n%s", sc.Text(), want)
	}
	_, body, err = getStream(t, s.URL+"/audit/export?format=csv")
	if err != nil {
		t.Fatal(err)
	}
	records, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(body), "\ufeff"))).ReadAll()
	if err != nil || len(records) != 3 {
		t.Fatalf("%d records, %v", len(records), err)
	}
	wantRow := []string{"Ada", "USER_CREATED", "2026-01-01T00:00:00.002Z", "WEB", "", `{"n":2}`, "admin", "user-2", "ev-c-2", "SETTINGS"}
	if !reflect.DeepEqual(records[2], wantRow) {
		t.Errorf("row %q, want %q", records[2], wantRow)
	}
}

// FuzzExportQuery: whatever the query string, the answer is a 400 with a
// JSON error or a 200 with the format asked for; never a 5xx.
//
//	go test -run '^$' -fuzz '^FuzzExportQuery$' -fuzztime 30s ./internal/httpapi
func FuzzExportQuery(f *testing.F) {
	for _, q := range []string{
		"format=csv", "format=ndjson&actions=CODE_SENT,USER_CREATED&category=SETTINGS&userId=a&app=web",
		"format=csv&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", "format=csv&format=csv", "%00=%ff",
	} {
		f.Add(q)
	}
	h := httpapi.New(httpapi.Config{
		GraphQL: echo, Tokens: verifier{}, Metrics: metrics.New(), Logger: slog.New(slog.DiscardHandler),
		Ready: func(context.Context) error { return nil }, Audit: newFake(1),
	})
	f.Fuzz(func(t *testing.T, q string) {
		req, err := http.NewRequest(http.MethodGet, "http://localhost/audit/export", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.RawQuery = q
		req.Header.Set("Authorization", "Bearer good")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		ct := rec.Header().Get("Content-Type")
		switch rec.Code {
		case http.StatusOK:
			if ct != "text/csv; charset=utf-8" && ct != "application/x-ndjson" {
				t.Fatalf("200 with Content-Type %q", ct)
			}
		case http.StatusBadRequest:
			if ct != "application/json" {
				t.Fatalf("400 with Content-Type %q", ct)
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, q, rec.Body.String())
		}
	})
}
