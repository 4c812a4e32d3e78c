package feed_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket/wsjson"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// The legacy graphql-ws subprotocol (connection_init, start, data, stop)
// still works for older Apollo clients.
func TestLegacyGraphQLWS(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	c := connect(t, s, admin(co), wsOptions{proto: legacyWS})
	c.primed(s, co, "1") // start with after, data
	createUsers(t, s, co, "legacy", 2)
	all, _ := logIDs(t, s, co, nil)
	if got := ids(c.edges("1", 2)); !slices.Equal(got, all[len(all)-2:]) {
		t.Fatalf("live events %v, want %v", got, all[len(all)-2:])
	}
	c.stop("1")
	if m := c.nextFor("1"); m.Type != "complete" {
		t.Fatalf("after stop got %s %s, want complete", m.Type, m.Payload)
	}
}

// sseEvent is one server-sent event.
type sseEvent struct {
	name string // next or complete
	data result
}

// sse posts the subscription with Accept: text/event-stream and returns
// its events as they arrive; the channel closes when the stream ends.
func sse(t *testing.T, s *apptest.Server, token string, vars map[string]any) <-chan sseEvent {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": subscription, "variables": vars})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/query", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", req.URL, err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		t.Fatalf("status %d, content type %q; want a 200 event stream", resp.StatusCode, ct)
	}
	events := make(chan sseEvent, 16)
	go func() {
		defer close(events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data); err != nil {
					ev.name = "undecodable: " + line
				}
			case line == "" && ev.name != "":
				events <- ev
				ev = sseEvent{}
			}
		}
	}()
	return events
}

// nextSSE returns the next event, failing if the stream ends or nothing
// comes within wait.
func nextSSE(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("event stream ended")
		}
		return ev
	case <-time.After(wait):
		t.Fatalf("no server-sent event within %v", wait)
	}
	return sseEvent{}
}

// Server-sent events carry the same stream: replay, live events, and an
// error when the token expires.
func TestServerSentEvents(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	createUsers(t, s, co, "before", 2)
	all, cursors := logIDs(t, s, co, nil)

	tok, err := s.Tokens.Sign(admin(co), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	events := sse(t, s, tok, map[string]any{"after": cursors[0]})
	ev := nextSSE(t, events)
	if ev.name != "next" || ev.data.Data == nil || ev.data.Data.AuditEventAdded.Node.ID != all[1] {
		t.Fatalf("first event %+v, want the replay of %s", ev, all[1])
	}
	createUsers(t, s, co, "live", 1)
	ev = nextSSE(t, events)
	if ev.name != "next" || ev.data.Data == nil || ev.data.Data.AuditEventAdded.Node.ID != lastID(t, s, co) {
		t.Fatalf("second event %+v, want the live %s", ev, lastID(t, s, co))
	}
	// The token lives two seconds (at most: expiry has whole seconds).
	ev = nextSSE(t, events)
	if ev.name != "next" || !slices.Equal(codes(ev.data.Errors), []string{"TOKEN_EXPIRED"}) {
		t.Fatalf("after expiry got %+v, want an error TOKEN_EXPIRED", ev)
	}
	if ev := nextSSE(t, events); ev.name != "complete" {
		t.Fatalf("after the error got %+v, want complete", ev)
	}

	// A token already expired, though within the verifier's leeway for
	// clock skew, gets the error and nothing replayed.
	expired, err := s.Tokens.Sign(admin(co), -5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	events = sse(t, s, expired, map[string]any{"after": cursors[0]})
	if ev := nextSSE(t, events); ev.name != "next" || ev.data.Data != nil || !slices.Equal(codes(ev.data.Errors), []string{"TOKEN_EXPIRED"}) {
		t.Fatalf("with an expired token got %+v, want only the error TOKEN_EXPIRED", ev)
	}
}

// The server pings graphql-transport-ws peers: one that stops answering is
// dropped, one that answers stays connected.
func TestPingPong(t *testing.T) {
	t.Parallel()
	// A peer silent for two intervals is dropped: 2 × 500 ms leaves a
	// loaded -race run room to answer (100 ms dropped answering peers).
	const interval = 500 * time.Millisecond
	s := apptest.Start(t, func(o *app.Options) { o.Websocket.PingInterval = interval })
	co := testenv.Company(t)

	// readRaw reads one message as is, without answering pings.
	readRaw := func(c *wsClient) (message, error) {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		var m message
		err := wsjson.Read(ctx, c.conn, &m)
		return m, err
	}

	dead := connect(t, s, admin(co), wsOptions{})
	dead.primed(s, co, "1")
	pings := 0
	for {
		m, err := readRaw(dead)
		if err != nil {
			if pings == 0 {
				t.Fatalf("connection ended before any ping: %v", err)
			}
			break
		}
		if m.Type == "ping" {
			pings++
		}
	}

	alive := connect(t, s, admin(co), wsOptions{})
	alive.primed(s, co, "1")
	for pings = 0; pings < 5; {
		m, err := readRaw(alive)
		if err != nil {
			t.Fatalf("connection answering pings ended after %d: %v", pings, err)
		}
		if m.Type == "ping" {
			pings++
			alive.send("pong", "", nil)
		}
	}
	createUsers(t, s, co, "after-pings", 1)
	if got := alive.edges("1", 1)[0].Node.ID; got != lastID(t, s, co) {
		t.Fatalf("live peer got %s, want %s", got, lastID(t, s, co))
	}
}
