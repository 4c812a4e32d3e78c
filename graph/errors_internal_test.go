package graph

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/vektah/gqlparser/v2/gqlerror"
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
