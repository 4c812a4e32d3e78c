package feed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"gorm.io/gorm"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/users"
)

// The two websocket subprotocols the server speaks.
const (
	transportWS = "graphql-transport-ws" // npm graphql-ws
	legacyWS    = "graphql-ws"           // subscriptions-transport-ws (older Apollo)
)

// wait bounds every wait for a message. Nothing is asserted about how long
// anything takes; it only keeps a broken server from hanging the suite.
const wait = 20 * time.Second

const subscription = `subscription($filter: AuditLogFilter, $after: String) {
  auditEventAdded(filter: $filter, after: $after) {
    cursor
    node { id action actor { id } targetUser { id } app details }
  }
}`

// edge is one auditEventAdded message.
type edge struct {
	Cursor string `json:"cursor"`
	Node   struct {
		ID     string `json:"id"`
		Action string `json:"action"`
		Actor  struct {
			ID string `json:"id"`
		} `json:"actor"`
		TargetUser *struct {
			ID string `json:"id"`
		} `json:"targetUser"`
		App *string `json:"app"`
	} `json:"node"`
}

func ids(edges []edge) []string {
	out := make([]string, len(edges))
	for i, e := range edges {
		out[i] = e.Node.ID
	}
	return out
}

// gqlError is one GraphQL error.
type gqlError struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions"`
}

func (e gqlError) code() string { s, _ := e.Extensions["code"].(string); return s }

func codes(errs []gqlError) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.code()
	}
	return out
}

// message is a server message of either subprotocol.
type message struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// wsOptions shape a dial.
type wsOptions struct {
	proto  string      // transportWS when empty
	header http.Header // e.g. Authorization, Origin
	client *http.Client
}

// wsClient speaks graphql-transport-ws or graphql-ws to the server. It
// demultiplexes messages by operation id, so one connection can carry
// several subscriptions.
type wsClient struct {
	t       testing.TB
	conn    *websocket.Conn
	proto   string
	pending map[string][]message // read but not yet asked for, by id
	ended   string               // the type of the message that ended the last operation
}

// dial opens a websocket to s's /query; the HTTP response comes back too,
// for refused upgrades.
func dial(t testing.TB, url string, o wsOptions) (*wsClient, *http.Response, error) {
	t.Helper()
	if o.proto == "" {
		o.proto = transportWS
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/query", &websocket.DialOptions{
		Subprotocols: []string{o.proto},
		HTTPHeader:   o.header,
		HTTPClient:   o.client,
	})
	if err != nil {
		return nil, resp, err
	}
	if got := conn.Subprotocol(); got != o.proto {
		_ = conn.CloseNow()
		return nil, resp, fmt.Errorf("negotiated subprotocol %q, want %q", got, o.proto)
	}
	conn.SetReadLimit(1 << 20)
	c := &wsClient{t: t, conn: conn, proto: o.proto, pending: map[string][]message{}}
	t.Cleanup(func() { _ = conn.CloseNow() })
	return c, resp, nil
}

func mustDial(t testing.TB, s *apptest.Server, o wsOptions) *wsClient {
	t.Helper()
	c, _, err := dial(t, s.URL, o)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

// connect dials and authenticates as caller with connection_init.
func connect(t testing.TB, s *apptest.Server, caller auth.Caller, o wsOptions) *wsClient {
	t.Helper()
	c := mustDial(t, s, o)
	c.init(map[string]any{"Authorization": "Bearer " + s.Token(t, caller)})
	return c
}

func (c *wsClient) send(typ, id string, payload any) {
	c.t.Helper()
	m := map[string]any{"type": typ}
	if id != "" {
		m["id"] = id
	}
	if payload != nil {
		m["payload"] = payload
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := wsjson.Write(ctx, c.conn, m); err != nil {
		c.t.Fatalf("send %s: %v", typ, err)
	}
}

// init sends connection_init with payload (nil for none) and waits for
// connection_ack.
func (c *wsClient) init(payload map[string]any) {
	c.t.Helper()
	c.send("connection_init", "", payload)
	m, err := c.read()
	if err != nil {
		c.t.Fatalf("waiting for connection_ack: %v", err)
	}
	if m.Type != "connection_ack" {
		c.t.Fatalf("got %s %s, want connection_ack", m.Type, m.Payload)
	}
}

// subscribe starts auditEventAdded as operation id with the given filter
// and after (nil and "" for none).
func (c *wsClient) subscribe(id string, filter map[string]any, after string) {
	c.t.Helper()
	vars := map[string]any{}
	if filter != nil {
		vars["filter"] = filter
	}
	if after != "" {
		vars["after"] = after
	}
	typ := "subscribe"
	if c.proto == legacyWS {
		typ = "start"
	}
	c.send(typ, id, map[string]any{"query": subscription, "variables": vars})
}

// read returns the next message that is not keep-alive chatter, answering
// pings as the protocol asks. It gives up after wait.
func (c *wsClient) read() (message, error) {
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		var m message
		err := wsjson.Read(ctx, c.conn, &m)
		cancel()
		if err != nil {
			return m, err
		}
		switch m.Type {
		case "ping":
			c.send("pong", "", nil)
		case "pong", "ka":
		default:
			return m, nil
		}
	}
}

// nextFor returns the next message of operation id.
func (c *wsClient) nextFor(id string) message {
	c.t.Helper()
	if q := c.pending[id]; len(q) > 0 {
		c.pending[id] = q[1:]
		return q[0]
	}
	deadline := time.Now().Add(wait)
	for {
		if time.Now().After(deadline) {
			c.t.Fatalf("no message of %q within %v", id, wait)
		}
		m, err := c.read()
		if err != nil {
			c.t.Fatalf("waiting for a message of %q: %v", id, err)
		}
		if m.ID == id {
			return m
		}
		if m.ID == "" {
			c.t.Fatalf("unexpected %s %s while waiting for %q", m.Type, m.Payload, id)
		}
		c.pending[m.ID] = append(c.pending[m.ID], m)
	}
}

// result is what one data message carries.
type result struct {
	Data *struct {
		AuditEventAdded edge `json:"auditEventAdded"`
	} `json:"data"`
	Errors []gqlError `json:"errors"`
}

// outcome reads id's next message: an event, or the errors that ended it
// (done is set when the operation ended, with or without errors).
func (c *wsClient) outcome(id string) (e *edge, errs []gqlError, done bool) {
	c.t.Helper()
	m := c.nextFor(id)
	switch m.Type {
	case "next", "data":
		var r result
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			c.t.Fatalf("decode %s: %v", m.Payload, err)
		}
		if len(r.Errors) > 0 || r.Data == nil {
			// An operation refused at the start: one response with errors,
			// then complete.
			if end := c.nextFor(id); end.Type != "complete" {
				c.t.Fatalf("after an error response got %s %s, want complete", end.Type, end.Payload)
			}
			c.ended = m.Type
			return nil, r.Errors, true
		}
		return &r.Data.AuditEventAdded, nil, false
	case "error":
		if err := json.Unmarshal(m.Payload, &errs); err != nil {
			c.t.Fatalf("decode error payload %s: %v", m.Payload, err)
		}
		c.ended = m.Type
		return nil, errs, true
	case "complete":
		c.ended = m.Type
		return nil, nil, true
	}
	c.t.Fatalf("unexpected message %s %s", m.Type, m.Payload)
	return nil, nil, false
}

// edges reads exactly n events of id, failing on anything else.
func (c *wsClient) edges(id string, n int) []edge {
	c.t.Helper()
	out := make([]edge, 0, n)
	for len(out) < n {
		e, errs, done := c.outcome(id)
		if done {
			c.t.Fatalf("%q ended after %d of %d events, errors %+v", id, len(out), n, errs)
		}
		out = append(out, *e)
	}
	return out
}

// until reads id's events up to and including event eventID.
func (c *wsClient) until(id, eventID string) []edge {
	c.t.Helper()
	var out []edge
	for {
		e := c.edges(id, 1)[0]
		out = append(out, e)
		if e.Node.ID == eventID {
			return out
		}
	}
}

// ending reads id's events until the operation ends, and returns them with
// the errors it ended with.
func (c *wsClient) ending(id string) ([]edge, []gqlError) {
	c.t.Helper()
	var out []edge
	for {
		e, errs, done := c.outcome(id)
		if done {
			return out, errs
		}
		out = append(out, *e)
	}
}

// failure reads id's events until it ends and asserts it ended with one
// error of code; the events before are returned. See ended for how.
func (c *wsClient) failure(id, code string) []edge {
	c.t.Helper()
	got, errs := c.ending(id)
	if !slices.Equal(codes(errs), []string{code}) {
		c.t.Fatalf("%q ended with errors %+v, want one %s", id, errs, code)
	}
	return got
}

// closeStatus reads until the server closes the connection and returns the
// close code.
func (c *wsClient) closeStatus() websocket.StatusCode {
	c.t.Helper()
	for {
		_, err := c.read()
		if err == nil {
			continue
		}
		code := websocket.CloseStatus(err)
		if code == -1 {
			c.t.Fatalf("connection ended without a close frame: %v", err)
		}
		return code
	}
}

// stop ends operation id from the client side.
func (c *wsClient) stop(id string) {
	c.t.Helper()
	typ := "complete"
	if c.proto == legacyWS {
		typ = "stop"
	}
	c.send(typ, id, nil)
}

// close ends the connection with a normal closure.
func (c *wsClient) close() { _ = c.conn.Close(websocket.StatusNormalClosure, "bye") }

// admin is company's admin caller.
func admin(company string) auth.Caller {
	return auth.Caller{UserID: "admin-" + company, Company: company, Role: auth.RoleAdmin, Name: "Admin"}
}

// createUsers makes n users in company as its admin: one USER_CREATED
// event each, written and announced the way a mutation does it.
func createUsers(t testing.TB, s *apptest.Server, company, prefix string, n int) {
	t.Helper()
	for i := range n {
		if _, err := s.App.Users.Create(context.Background(), admin(company), users.NewUser{ID: fmt.Sprintf("%s-%d", prefix, i)}); err != nil {
			t.Fatalf("create user: %v", err)
		}
	}
}

// writeRaw appends n audit rows to company's log in one transaction, each
// with details of about size bytes, and announces them when announce is
// set. It returns their ids.
func writeRaw(t testing.TB, s *apptest.Server, company string, n, size int, announce bool) []string {
	t.Helper()
	events := make([]*audit.Event, n)
	err := s.Backends.DB.Transaction(func(tx *gorm.DB) error {
		for i := range events {
			events[i] = &audit.Event{
				Company: company, Action: audit.GeneralSettingsChanged, Actor: audit.ActorOf(admin(company)),
				Details: audit.Details(map[string]string{"pad": strings.Repeat("x", size)}),
			}
			if err := s.App.Audit.Write(tx, events[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("write audit rows: %v", err)
	}
	if announce {
		s.App.Audit.Announce(context.Background(), events...)
	}
	out := make([]string, n)
	for i, e := range events {
		out[i] = s.App.Audit.PublicID(*e)
	}
	return out
}

const qAuditIDs = `query($after: String, $filter: AuditLogFilter) {
  auditLog(first: 100, after: $after, filter: $filter) {
    edges { cursor node { id } }
    pageInfo { hasNextPage endCursor }
  }
}`

// logIDs walks company's auditLog (filtered) through GraphQL and returns
// the event ids oldest first, with their cursors.
func logIDs(t testing.TB, s *apptest.Server, company string, filter map[string]any) (ids, cursors []string) {
	t.Helper()
	c := s.Admin(t, company)
	vars := map[string]any{"filter": filter}
	for {
		var out struct {
			AuditLog struct {
				Edges []struct {
					Cursor string `json:"cursor"`
					Node   struct {
						ID string `json:"id"`
					} `json:"node"`
				} `json:"edges"`
				PageInfo struct {
					HasNextPage bool   `json:"hasNextPage"`
					EndCursor   string `json:"endCursor"`
				} `json:"pageInfo"`
			} `json:"auditLog"`
		}
		c.Must(t, qAuditIDs, vars, &out)
		for _, e := range out.AuditLog.Edges {
			ids = append(ids, e.Node.ID)
			cursors = append(cursors, e.Cursor)
		}
		if !out.AuditLog.PageInfo.HasNextPage {
			slices.Reverse(ids)
			slices.Reverse(cursors)
			return ids, cursors
		}
		vars["after"] = out.AuditLog.PageInfo.EndCursor
	}
}

// after returns the ids in all that come after id.
func after(all []string, id string) []string {
	i := slices.Index(all, id)
	if i < 0 {
		panic(fmt.Sprintf("id %s not in the log", id))
	}
	return all[i+1:]
}

// cursorOf is the cursor of company's event id, as auditLog gives it.
func cursorOf(t testing.TB, s *apptest.Server, company, id string) string {
	t.Helper()
	n, err := s.App.Audit.ParseID(company, id)
	if err != nil {
		t.Fatalf("event id %q: %v", id, err)
	}
	return s.App.Audit.Cursor(audit.Event{ID: n, Company: company})
}

// lastID is the id of company's newest event.
func lastID(t testing.TB, s *apptest.Server, company string) string {
	t.Helper()
	id, err := s.App.Audit.LastID(context.Background(), company)
	if err != nil {
		t.Fatal(err)
	}
	return s.App.Audit.PublicID(audit.Event{ID: id, Company: company})
}

var primes atomic.Int64

// primed subscribes as operation id to company's whole log and returns
// once the stream runs, with the cursor of the one event it replayed: two
// events are written, and the stream resumes after the first. Whatever is
// written from now on reaches it live, through the hub.
func (c *wsClient) primed(s *apptest.Server, company, id string) string {
	c.t.Helper()
	n := primes.Add(1)
	createUsers(c.t, s, company, fmt.Sprintf("prime-%d-a", n), 1)
	first := lastID(c.t, s, company)
	createUsers(c.t, s, company, fmt.Sprintf("prime-%d-b", n), 1)
	second := lastID(c.t, s, company)
	c.subscribe(id, nil, cursorOf(c.t, s, company, first))
	got := c.edges(id, 1)
	if got[0].Node.ID != second {
		c.t.Fatalf("primed %q with event %s, want %s", id, got[0].Node.ID, second)
	}
	return got[0].Cursor
}

// idOf is the id of the event at company's cursor.
func idOf(t testing.TB, s *apptest.Server, company, cursor string) string {
	t.Helper()
	id, err := s.App.Audit.ParseCursor(company, cursor)
	if err != nil {
		t.Fatalf("cursor %q: %v", cursor, err)
	}
	return s.App.Audit.PublicID(audit.Event{ID: id, Company: company})
}
