package graph_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twofactor/service/graph"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// TestSubscriptionsPerSocket: one websocket opened thousands of audit
// subscriptions, each with its goroutines (found by a red-team pass:
// 3,000 took the process from 17 to 6,000 goroutines). Past
// MaxSubscriptionsPerSocket it gets TOO_MANY_SUBSCRIPTIONS; a stream that
// ends makes room again.
func TestSubscriptionsPerSocket(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	ws := dialWS(t, s, admin.Token)
	const sub = `subscription { auditEventAdded { node { action } } }`
	// The socket runs subscribes concurrently: which one of these is
	// refused is not fixed, but exactly one is.
	for i := range graph.MaxSubscriptionsPerSocket + 1 {
		ws.send(t, map[string]any{"type": "subscribe", "id": fmt.Sprint("s", i), "payload": map[string]any{"query": sub}})
	}
	first := ws.read(t)
	if refused := ws.result(t, first.ID); !strings.Contains(string(first.Payload), "TOO_MANY_SUBSCRIPTIONS") {
		t.Fatalf("subscription %d on one socket: %s %s then %+v, want TOO_MANY_SUBSCRIPTIONS",
			graph.MaxSubscriptionsPerSocket+1, first.Type, first.Payload, refused)
	}

	// End one; a new one is taken once the server has let the old one go.
	live := "s0"
	if first.ID == live {
		live = "s1"
	}
	ws.send(t, map[string]any{"type": "complete", "id": live})
	createUser(t, admin, map[string]any{"id": "seed"})
	const resume = `subscription($after: String) { auditEventAdded(after: $after) { node { action } } }`
	for try := 0; ; try++ {
		if try == 50 {
			t.Fatal("no room for a subscription after one ended")
		}
		// From the newest cursor: the event made next reaches it even if
		// it joins the feed after the event is written.
		var log struct {
			AuditLog struct{ Edges []struct{ Cursor string } }
		}
		admin.Must(t, `{ auditLog(first: 1) { edges { cursor } } }`, nil, &log)
		id := fmt.Sprint("again", try)
		ws.send(t, map[string]any{"type": "subscribe", "id": id, "payload": map[string]any{
			"query": resume, "variables": map[string]any{"after": log.AuditLog.Edges[0].Cursor}}})
		createUser(t, admin, map[string]any{"id": fmt.Sprint("u", try)})
		if accepted(t, ws, id) {
			break
		}
	}
}

// accepted reads until id's fate shows: an event for it (true) or its
// refusal (false). Other subscriptions' events are skipped.
func accepted(t *testing.T, ws *gqlWS, id string) bool {
	t.Helper()
	for {
		m := ws.read(t)
		if m.ID != id || m.Type != "next" {
			continue
		}
		if !strings.Contains(string(m.Payload), "TOO_MANY_SUBSCRIPTIONS") {
			return true
		}
		ws.result(t, id) // its complete
		return false
	}
}
