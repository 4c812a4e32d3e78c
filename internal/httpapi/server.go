package httpapi

import (
	"net/http"
	"time"
)

// Limits on how long and how much a client may take to send a request.
// The body's deadline is per request (Config.BodyTimeout), not the
// server's ReadTimeout: that one also cuts long-lived SSE streams.
const (
	HeaderTimeout  = 10 * time.Second
	IdleTimeout    = 2 * time.Minute
	MaxHeaderBytes = 16 << 10
	// DefaultBodyTimeout bounds reading a request body: 64 KiB fits in it
	// even on a slow mobile link.
	DefaultBodyTimeout = 10 * time.Second
)

// NewServer returns an http.Server for h with the service's timeouts and
// header limit; main and the tests build their servers with it.
// Request contexts do not derive from any caller's context: shutdown lets
// in-flight requests finish instead of failing them.
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: HeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}
