package httpapi

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
)

// AuditExporter streams a company's audit log; *audit.Log is one.
type AuditExporter interface {
	Export(ctx context.Context, c auth.Caller, f audit.Filter, fn func(audit.Event) error) error
	PublicID(e audit.Event) string
}

// Streaming knobs of GET /audit/export.
const (
	// exportBuffer is the chunk handed to the connection at once.
	exportBuffer = 32 << 10
	// Rows are flushed to the client every exportFlushRows rows or
	// exportFlushEvery, whichever comes first, so a sparse filter over a
	// long log still shows progress.
	exportFlushRows  = 1000
	exportFlushEvery = time.Second
	// exportChunkTimeout is how long one chunk may take to reach the
	// client: the write deadline is pushed this far before each one, so
	// a long export lives while a client that stops reading is dropped.
	exportChunkTimeout = 30 * time.Second
)

// Bounds on the query string: hostile input never reaches the database
// unbounded.
const (
	maxExportQuery   = 2048
	maxExportActions = 32
	maxExportUserID  = 128 // audit_events.actor_id's size
)

// dateTimeLayout is graph/scalar's DateTime format: RFC 3339 in UTC with
// exactly three fractional digits, so exported times equal auditLog's.
const dateTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// exportAudit is GET /audit/export: the caller's company log, filtered as
// auditLog is, streamed oldest first as CSV or NDJSON. See README, "Export".
func (cfg Config) exportAudit(w http.ResponseWriter, r *http.Request) {
	c, ok := getAs(w, r, "only admin tokens may export the audit log", auth.RoleAdmin)
	if !ok {
		return
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		// Its read deadline (bodyDeadline) would cancel a long export.
		abandonBody(w, r)
		writeGraphQLError(w, http.StatusBadRequest, "BAD_REQUEST", "an export request has no body")
		return
	}
	q, err := parseExportQuery(r.URL.RawQuery)
	if err != nil {
		writeGraphQLError(w, http.StatusBadRequest, "BAD_REQUEST", err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", q.format.contentType)
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{
		"filename": "audit-log-" + time.Now().UTC().Format("2006-01-02") + "." + q.format.ext,
	}))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	s := newExportStream(w, q.format, cfg.Audit.PublicID)
	err = cfg.Audit.Export(r.Context(), c, q.filter, s.write)
	if err == nil {
		err = s.finish()
	}
	if err != nil {
		cfg.exportFailed(w, r, s, err)
	}
}

// exportFailed ends an export that failed. Before the first row it is an
// ordinary JSON error. After it, the status is sent: NDJSON gets a last
// {"error":{...}} line, and both formats lose the end of the chunked
// transfer (the connection is aborted), so every client sees a truncated
// download rather than a short file that looks whole.
func (cfg Config) exportFailed(w http.ResponseWriter, r *http.Request, s *exportStream, err error) {
	ctx, id := r.Context(), middleware.GetReqID(r.Context())
	gone := ctx.Err() != nil || s.writeErr != nil
	if gone {
		cfg.Logger.InfoContext(ctx, "audit export ended: client gone", "rows", s.rows, "request_id", id)
	} else {
		cfg.Logger.ErrorContext(ctx, "audit export failed", "rows", s.rows, "err", err, "request_id", id)
	}
	switch {
	case gone:
		// Nobody to tell; net/http closes the connection.
	case !s.started && errors.Is(err, auth.ErrForbidden):
		writeGraphQLError(w, http.StatusForbidden, "FORBIDDEN", "only admin tokens may export the audit log")
	case !s.started:
		// The X-Request-Id header names the log line.
		writeGraphQLError(w, http.StatusInternalServerError, "INTERNAL", "internal error")
	default:
		s.enc.fail(id)
		_ = s.flushAll()
		panic(http.ErrAbortHandler) // net/http closes the connection without logging
	}
}

// exportFormat is one output format.
type exportFormat struct {
	name, contentType, ext string
	encoder                func(w io.Writer, id func(audit.Event) string) rowEncoder
}

var exportFormats = []exportFormat{
	{name: "csv", contentType: "text/csv; charset=utf-8", ext: "csv", encoder: newCSVRows},
	{name: "ndjson", contentType: "application/x-ndjson", ext: "ndjson", encoder: newNDJSONRows},
}

// rowEncoder writes one format: a preamble, rows, and (when streaming
// failed midway) a trailer saying so.
type rowEncoder interface {
	begin() error
	row(e audit.Event) error
	flush() error
	fail(requestID string)
}

// exportStream writes rows as Export yields them. The status and headers
// go out with the first row (or at the end of an empty export), so an
// error before any row is still an ordinary error answer.
type exportStream struct {
	rc        *http.ResponseController
	w         http.ResponseWriter
	buf       *bufio.Writer
	enc       rowEncoder
	started   bool
	rows      int
	lastFlush time.Time
	writeErr  error // the client stopped taking data
}

func newExportStream(w http.ResponseWriter, f exportFormat, id func(audit.Event) string) *exportStream {
	s := &exportStream{rc: http.NewResponseController(w), w: w}
	s.buf = bufio.NewWriterSize(deadlineWriter{s}, exportBuffer)
	s.enc = f.encoder(s.buf, id)
	return s
}

func (s *exportStream) start() error {
	s.started, s.lastFlush = true, time.Now()
	s.w.WriteHeader(http.StatusOK)
	return s.enc.begin()
}

func (s *exportStream) write(e audit.Event) error {
	if !s.started {
		if err := s.start(); err != nil {
			return err
		}
	}
	if err := s.enc.row(e); err != nil {
		return err
	}
	s.rows++
	if s.rows%exportFlushRows == 0 || time.Since(s.lastFlush) >= exportFlushEvery {
		return s.flushAll()
	}
	return nil
}

// finish sends what is buffered (and the headers of an empty export), and
// lifts the write deadline: the connection may serve more requests, and
// a deadline left behind would cut one of them.
func (s *exportStream) finish() error {
	if !s.started {
		if err := s.start(); err != nil {
			return err
		}
	}
	if err := s.flushAll(); err != nil {
		return err
	}
	_ = s.rc.SetWriteDeadline(time.Time{})
	return nil
}

func (s *exportStream) flushAll() error {
	s.lastFlush = time.Now()
	if err := s.enc.flush(); err != nil {
		return err
	}
	if err := s.buf.Flush(); err != nil {
		return err
	}
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.writeErr = err
		return err
	}
	return nil
}

// deadlineWriter pushes the connection's write deadline before each chunk.
type deadlineWriter struct{ s *exportStream }

func (d deadlineWriter) Write(p []byte) (int, error) {
	// Unsupported (a recorder in tests) leaves no deadline to push.
	_ = d.s.rc.SetWriteDeadline(time.Now().Add(exportChunkTimeout))
	n, err := d.s.w.Write(p)
	if err != nil {
		d.s.writeErr = err
	}
	return n, err
}

// exportQuery is a parsed query string.
type exportQuery struct {
	format exportFormat
	filter audit.Filter
}

// exportParams are the query parameters, in the order errors name them.
var exportParams = []string{"format", "actions", "category", "userId", "app", "from", "to"}

// parseExportQuery reads the format and auditLog's filter: every
// parameter at most once, nothing unknown, every value checked.
func parseExportQuery(raw string) (exportQuery, error) {
	var q exportQuery
	if len(raw) > maxExportQuery {
		return q, fmt.Errorf("the query string is longer than %d bytes", maxExportQuery)
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return q, errors.New("the query string is malformed (use & between parameters and %-escapes)")
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(exportParams, k) {
			return q, fmt.Errorf("unknown parameter %q; known: %s", truncate(k, 32), strings.Join(exportParams, ", "))
		}
		if len(vals[k]) > 1 {
			return q, fmt.Errorf("%s: give it once", k)
		}
	}
	get := func(k string) (string, bool) {
		v, ok := vals[k]
		if !ok {
			return "", false
		}
		return v[0], true
	}
	if q.format, err = parseFormat(get("format")); err != nil {
		return q, err
	}
	q.filter, err = parseExportFilter(get)
	return q, err
}

func parseFormat(v string, given bool) (exportFormat, error) {
	for _, f := range exportFormats {
		if given && strings.EqualFold(v, f.name) {
			return f, nil
		}
	}
	return exportFormat{}, errors.New("format: give csv or ndjson")
}

// parseExportFilter reads auditLog's filter; enum values are the GraphQL
// schema's, in any case.
func parseExportFilter(get func(string) (string, bool)) (audit.Filter, error) {
	var f audit.Filter
	var err error
	if v, ok := get("actions"); ok {
		if f.Actions, err = parseActions(v); err != nil {
			return f, err
		}
	}
	if v, ok := get("category"); ok {
		c := model.AuditCategory(strings.ToUpper(v))
		if !c.IsValid() {
			return f, fmt.Errorf("category: give one of %s", enumList(model.AllAuditCategory))
		}
		f.Category = audit.Category(c)
	}
	if v, ok := get("userId"); ok {
		if v == "" || len(v) > maxExportUserID || !utf8.ValidString(v) {
			return f, fmt.Errorf("userId: give 1 to %d bytes of UTF-8", maxExportUserID)
		}
		f.UserID = v
	}
	if v, ok := get("app"); ok {
		a, known := apps.Parse(strings.ToLower(v))
		if !known {
			return f, fmt.Errorf("app: give one of %s", enumList(apps.All()))
		}
		f.App = string(a)
	}
	for _, p := range []struct {
		name string
		to   **time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if v, ok := get(p.name); ok {
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return f, fmt.Errorf("%s: give an RFC 3339 time, e.g. 2026-01-02T15:04:05Z (a + in an offset is %%2B)", p.name)
			}
			t = t.UTC()
			*p.to = &t
		}
	}
	if f.From != nil && f.To != nil && !f.From.Before(*f.To) {
		return f, errors.New("to: must be after from")
	}
	return f, nil
}

// parseActions reads a comma-separated list of AuditAction values.
func parseActions(v string) ([]audit.Action, error) {
	items := strings.Split(v, ",")
	if len(items) > maxExportActions {
		return nil, fmt.Errorf("actions: give at most %d", maxExportActions)
	}
	out := make([]audit.Action, 0, len(items))
	for _, it := range items {
		a := model.AuditAction(strings.ToUpper(strings.TrimSpace(it)))
		if !a.IsValid() {
			return nil, fmt.Errorf("actions: %q is not an AuditAction; give a comma-separated list of %s",
				truncate(it, 40), enumList(model.AllAuditAction))
		}
		if !slices.Contains(out, audit.Action(a)) {
			out = append(out, audit.Action(a))
		}
	}
	return out, nil
}

func enumList[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// csvHeader is the column names, in the order the console's Audit log
// shows them, then the ids. The console's Download CSV saves this file. Action, App and
// Category are the API's enum values.
var csvHeader = []string{"User", "Action", "Time (UTC)", "App", "Target", "Details", "User id", "Target id", "Event id", "Category"}

type csvRows struct {
	w      *csv.Writer
	raw    io.Writer
	id     func(audit.Event) string
	record []string // reused: one row's cells
}

func newCSVRows(w io.Writer, id func(audit.Event) string) rowEncoder {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true // RFC 4180
	return &csvRows{w: cw, raw: w, id: id, record: make([]string, len(csvHeader))}
}

func (c *csvRows) begin() error {
	// A byte order mark: spreadsheets then read the names as UTF-8.
	if _, err := io.WriteString(c.raw, "\ufeff"); err != nil {
		return err
	}
	return c.w.Write(csvHeader)
}

func (c *csvRows) row(e audit.Event) error {
	var target, targetID string
	if e.Target != nil {
		target, targetID = e.Target.Name, e.Target.ID
	}
	r := c.record
	r[0], r[1], r[2], r[3] = e.Actor.Name, string(e.Action), e.CreatedAt.UTC().Format(dateTimeLayout), strings.ToUpper(e.App)
	r[4], r[5], r[6], r[7] = target, string(e.Details), e.Actor.ID, targetID
	r[8], r[9] = c.id(e), string(e.Category())
	for i, v := range r {
		r[i] = neutralise(v)
	}
	return c.w.Write(r)
}

func (c *csvRows) flush() error {
	c.w.Flush()
	return c.w.Error()
}

// fail writes nothing: a CSV has no place for an error that the reader
// would not take for a row. The aborted transfer says it.
func (c *csvRows) fail(string) {}

// neutralise keeps a spreadsheet from running a cell as a formula: a
// cell starting with = + - @, a tab or a carriage return gets a leading
// quote.
func neutralise(v string) string {
	if v != "" && strings.IndexByte("=+-@\t\r", v[0]) >= 0 {
		return "'" + v
	}
	return v
}

type ndjsonRows struct {
	enc *json.Encoder
	id  func(audit.Event) string
}

func newNDJSONRows(w io.Writer, id func(audit.Event) string) rowEncoder {
	return &ndjsonRows{enc: json.NewEncoder(w), id: id}
}

// ndjsonActor and ndjsonEvent are the GraphQL AuditActor and AuditEvent,
// with the event's category.
type ndjsonActor struct {
	ID          string  `json:"id"`
	DisplayName *string `json:"displayName"`
	Role        *string `json:"role"`
}

type ndjsonEvent struct {
	ID         string          `json:"id"`
	Action     string          `json:"action"`
	Category   string          `json:"category"`
	Actor      ndjsonActor     `json:"actor"`
	TargetUser *ndjsonActor    `json:"targetUser"`
	App        *string         `json:"app"`
	Details    json.RawMessage `json:"details"`
	CreatedAt  string          `json:"createdAt"`
}

func (n *ndjsonRows) begin() error { return nil }

func (n *ndjsonRows) row(e audit.Event) error {
	role := strings.ToUpper(string(e.Actor.Role))
	out := ndjsonEvent{
		ID: n.id(e), Action: string(e.Action), Category: string(e.Category()),
		Actor:     ndjsonActor{ID: e.Actor.ID, DisplayName: optional(e.Actor.Name), Role: &role},
		App:       optional(strings.ToUpper(e.App)),
		Details:   e.Details,
		CreatedAt: e.CreatedAt.UTC().Format(dateTimeLayout),
	}
	if e.Target != nil {
		out.TargetUser = &ndjsonActor{ID: e.Target.ID, DisplayName: optional(e.Target.Name)}
	}
	if len(out.Details) == 0 {
		out.Details = nil // null, as auditLog answers
	} else if !json.Valid(out.Details) {
		// A row edited by hand must not end the export: its text, quoted.
		out.Details, _ = json.Marshal(string(e.Details))
	}
	return n.enc.Encode(out)
}

func (n *ndjsonRows) flush() error { return nil } // Encode writes each line through

func (n *ndjsonRows) fail(requestID string) {
	_ = n.enc.Encode(map[string]any{"error": map[string]string{
		"code": "INTERNAL", "message": "the export failed midway; this file is incomplete", "requestId": requestID,
	}})
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
