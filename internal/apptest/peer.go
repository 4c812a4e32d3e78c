package apptest

import (
	"testing"

	"github.com/twofactor/service/internal/app"
)

// StartPeer runs a second instance of the service next to s, as another
// replica behind the same load balancer would be: the same database, the
// same Redis, the same token secret and keys, but its own app (its own
// live feed hub) and its own HTTP server. tweak changes the peer's options
// only.
func StartPeer(t testing.TB, s *Server, tweak ...func(*app.Options)) *Server {
	t.Helper()
	opts := s.opts
	for _, f := range tweak {
		f(&opts)
	}
	p := &Server{Tokens: s.Tokens, Backends: s.Backends, Clock: s.Clock, Outbox: s.Outbox, opts: opts}
	p.App, p.URL = serve(t, opts)
	return p
}
