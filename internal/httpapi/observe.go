package httpapi

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/twofactor/service/internal/metrics"
)

// observe logs each request and records its metrics. It never logs
// headers, so tokens stay out of the logs.
func (cfg Config) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := chi.RouteContext(r.Context()).RoutePattern()
		if route == "" {
			route = "unmatched"
		}
		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		elapsed := time.Since(start)
		// Labels from closed sets only: the route pattern (not the path),
		// a known method or OTHER, a three-digit status.
		cfg.Metrics.Requests.WithLabelValues(route, metrics.Method(r.Method), strconv.Itoa(status)).Inc()
		cfg.Metrics.RequestDuration.WithLabelValues(route).Observe(elapsed.Seconds())
		if route == "/healthz" || route == "/readyz" {
			return
		}
		cfg.Logger.InfoContext(r.Context(), "request",
			"method", metrics.Method(r.Method), "path", truncate(r.URL.Path, 256), "status", status,
			"duration_ms", float64(elapsed.Microseconds())/1000,
			"bytes", ww.BytesWritten(), "request_id", middleware.GetReqID(r.Context()))
	})
}

// recoverer turns a panic outside the GraphQL executor into a 500, so one
// bad request never takes the server down.
func (cfg Config) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				cfg.Logger.ErrorContext(r.Context(), "handler panicked", "panic", fmt.Sprint(p),
					"request_id", middleware.GetReqID(r.Context()))
				// The id lets a client's report be found in the log.
				writeJSON(w, http.StatusInternalServerError, map[string]any{"errors": []map[string]any{{
					"message":    "internal error",
					"extensions": map[string]string{"code": "INTERNAL", "requestId": middleware.GetReqID(r.Context())},
				}}})
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// readAll reads a body that MaxBytesReader already bounds, so the whole
// request is checked before the GraphQL handler sees any of it.
func readAll(r io.ReadCloser) (io.ReadCloser, error) {
	defer r.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return io.NopCloser(&buf), nil
}

// truncate keeps a client's string in a log line from growing it without
// bound.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
