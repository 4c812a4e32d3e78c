package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/twofactor/service/internal/auth"
)

// Finding 11: an INTERNAL error names the request (extensions.requestId,
// the X-Request-Id the client got), and so does its log line; other
// errors carry no id.
func TestInternalErrorRequestID(t *testing.T) {
	var logs bytes.Buffer
	r := &Resolver{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}
	ctx := context.WithValue(context.Background(), middleware.RequestIDKey, "req-42")

	e, ok := r.toGQL(ctx, errors.New("database is on fire")).(*gqlerror.Error)
	if !ok || e.Extensions["code"] != CodeInternal || e.Extensions["requestId"] != "req-42" {
		t.Fatalf("toGQL = %#v, want INTERNAL with requestId req-42", e)
	}
	if strings.Contains(e.Message, "fire") {
		t.Errorf("message %q shows the cause", e.Message)
	}
	if !strings.Contains(logs.String(), `"request_id":"req-42"`) {
		t.Errorf("log line lacks the request id: %s", logs.String())
	}

	// Errors made elsewhere (a panic, a null for a non-null field) get it
	// on the way out; other codes do not.
	list := gqlerror.List{
		{Message: "internal error", Extensions: map[string]any{"code": CodeInternal}},
		{Message: "not found", Extensions: map[string]any{"code": CodeNotFound}},
		{Message: "no extensions"},
	}
	withRequestID(ctx, list)
	if list[0].Extensions["requestId"] != "req-42" || list[1].Extensions["requestId"] != nil || list[2].Extensions != nil {
		t.Errorf("withRequestID: %+v", list)
	}
}

// The request id reaches a panic's INTERNAL error whether or not the
// handler has metrics to count it with.
func TestPanicRequestIDWithoutMetrics(t *testing.T) {
	h := NewHandler(&Resolver{Logger: slog.New(slog.DiscardHandler)}, DefaultLimits, nil, WebsocketOptions{})
	req := httptest.NewRequest(http.MethodPost, "/query", strings.NewReader(`{"query":"{ twoFactorSettings { updatedAt } }"}`))
	req.Header.Set("Content-Type", "application/json")
	ctx := context.WithValue(req.Context(), middleware.RequestIDKey, "req-43")
	ctx = auth.WithCaller(ctx, auth.Caller{UserID: "u", Company: "c", Role: auth.RoleAdmin})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req.WithContext(ctx))
	var out struct{ Errors gqlerror.List }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || len(out.Errors) != 1 {
		t.Fatalf("status %d body %s", rec.Code, rec.Body)
	}
	if e := out.Errors[0].Extensions; e["code"] != CodeInternal || e["requestId"] != "req-43" {
		t.Errorf("extensions %v, want INTERNAL with requestId req-43", e)
	}
}
