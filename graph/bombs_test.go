package graph_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/lexer"

	"github.com/twofactor/service/graph"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// hostile is a document from the red-team review of issue 8 (item 2,
// "query bombs before validation") and issue 7 ("introspection stays
// bounded"), and the code of the first error each role gets ("" for an
// answer without errors: such documents are there to show that what
// passes the limits stays cheap).
type hostile struct {
	name, query string
	admin, user string
}

const (
	tooManyTokens = graph.CodeTooManyTokens
	selections    = graph.CodeSelectionLimitExceeded
	introLimit    = graph.CodeIntrospectionLimitExceeded
	depthLimit    = graph.CodeDepthLimitExceeded
	invalid       = "GRAPHQL_VALIDATION_FAILED"
)

// hostileDocuments are every document of the review, each at most 64 KiB
// as a request body.
func hostileDocuments() []hostile {
	docs := []hostile{
		{"aliased __schema x2", aliasedSchema(2), introLimit, "FORBIDDEN"},
		{"aliased __schema x100", aliasedSchema(100), selections, selections},
		{"aliased __schema x2000", aliasedSchema(2000), tooManyTokens, tooManyTokens},
		{"fragment doubling 3 with a __schema leaf", doubling(3, schemaLeaf), "", "FORBIDDEN"},
		{"fragment doubling 3 with two aliased __schema", doubling(3, "a: "+schemaLeaf+" b: "+schemaLeaf), introLimit, "FORBIDDEN"},
		{"fragment doubling 5", doubling(5, "__typename"), "", ""},
		{"fragment doubling 2 of 400 fields", doubling(2, numbered(400, "", " a%d:__typename", "")), selections, selections},
		{"__typename x4900", "{" + strings.Repeat(" __typename", 4900) + "}", tooManyTokens, tooManyTokens},
		{"__typename x900", "{" + strings.Repeat(" __typename", 900) + "}", selections, selections},
		{"a:__typename x4900", "{" + strings.Repeat(" a:__typename", 4900) + "}", tooManyTokens, tooManyTokens},
		{"aliased __typename x600", numbered(600, "{", " a%d:__typename", "}"), selections, selections},
		{"aliased __typename x200", numbered(200, "{", " a%d:__typename", "}"), "", ""},
		{"user(id) x1400", "{" + strings.Repeat(` user(id:"x"){id twoFactor{web manager}}`, 1400) + "}", tooManyTokens, tooManyTokens},
		{"user(id) x100", "{" + strings.Repeat(` user(id:"x"){id twoFactor{web manager}}`, 100) + "}", selections, selections},
		{"spreads x10000", "{" + strings.Repeat(" ...F", 10000) + "} fragment F on Query{__typename}", tooManyTokens, tooManyTokens},
		{"spreads x900", "{" + strings.Repeat(" ...F", 900) + "} fragment F on Query{__typename}", selections, selections},
		{"distinct fragments x100", numbered(100, "{", " ...F%d", "}") + numbered(100, "", " fragment F%d on Query{__typename}", ""), selections, selections},
		{"fragment chain x200", chain(200), selections, selections},
		{"fragment cycle", "{...A} fragment A on Query{...B __typename} fragment B on Query{...A}", invalid, invalid},
		{"directives x3000", "{__typename" + strings.Repeat(" @include(if:true)", 3000) + "}", tooManyTokens, tooManyTokens},
		{"directives x250", "{__typename" + strings.Repeat(" @include(if:true)", 250) + "}", invalid, invalid},
		{"unused variables x6000", numbered(6000, "query(", "$v%d:Int,", "){__typename}"), tooManyTokens, tooManyTokens},
		{"unused variables x450", numbered(450, "query(", "$v%d:Int,", "){__typename}"), invalid, invalid},
		{"repeated arguments x600", `{user(id:"x"` + strings.Repeat(` id:"x"`, 600) + `){id}}`, invalid, invalid},
		{"operations x350", numbered(350, "", "query Q%d{__typename} ", ""), invalid, invalid},
		{"inline fragments 30 deep", nestedInline(30, "__typename"), "", ""},
		{"inline fragments 300 deep", nestedInline(300, "__typename"), depthLimit, depthLimit},
		{"deep introspection", nestedType(30), depthLimit, "FORBIDDEN"},
		{"deeper introspection", nestedType(200), depthLimit, depthLimit},
		{"introspection fan-out", `{__schema{types{fields{type{fields{type{fields{type{fields{name}}}}}}}}}}`, invalid, invalid},
		{"introspection inline 300 deep", "{__schema{types{" + strings.Repeat("...on __Type{", 300) + "name" + strings.Repeat("}", 300) + "}}}", depthLimit, depthLimit},
	}
	for _, n := range []int{20, 24, 30, 34, 40} {
		docs = append(docs,
			hostile{fmt.Sprintf("fragment doubling %d", n), doubling(n, "__typename"), selections, selections},
			hostile{fmt.Sprintf("fragment doubling %d with a __schema leaf", n), doubling(n, schemaLeaf), selections, selections})
	}
	return docs
}

const schemaLeaf = "__schema{queryType{name}}"

// doubling is {...F0} where each of n fragments spreads the next twice,
// and the last holds leaf: 2^n leaves in 1 KB.
func doubling(n int, leaf string) string {
	var b strings.Builder
	b.WriteString("{...F0}")
	for i := range n {
		fmt.Fprintf(&b, " fragment F%d on Query{...F%d ...F%d}", i, i+1, i+1)
	}
	fmt.Fprintf(&b, " fragment F%d on Query{%s}", n, leaf)
	return b.String()
}

// nestedInline is leaf inside n inline fragments on Query.
func nestedInline(n int, leaf string) string {
	return "{" + strings.Repeat("...on Query{", n) + leaf + strings.Repeat("}", n) + "}"
}

// chain is {...F0} where each of n fragments spreads the next once.
func chain(n int) string {
	var b strings.Builder
	b.WriteString("{...F0}")
	for i := range n {
		fmt.Fprintf(&b, " fragment F%d on Query{...F%d}", i, i+1)
	}
	fmt.Fprintf(&b, " fragment F%d on Query{__typename}", n)
	return b.String()
}

// aliasedSchema asks for the whole schema n times by alias (the review's
// gen2.py).
func aliasedSchema(n int) string {
	const frag = "fragment S on __Schema{types{name description kind fields(includeDeprecated:true){name description " +
		"args{name description type{name kind ofType{name kind ofType{name kind}}}} type{name kind fields{name description " +
		"type{name kind ofType{name kind ofType{name}}} args{name type{name kind}}}}} interfaces{name} possibleTypes{name} " +
		"enumValues{name description} inputFields{name description type{name kind ofType{name}}}} directives{name description locations args{name}}}"
	return numbered(n, "{", " a%d:__schema{...S}", "}") + frag
}

// numbered is open, format filled with 0 to n-1, and close.
func numbered(n int, open, format, close string) string {
	var b strings.Builder
	b.WriteString(open)
	for i := range n {
		fmt.Fprintf(&b, format, i)
	}
	b.WriteString(close)
	return b.String()
}

// requestBody is the JSON body that carries query, which must fit the
// service's 64 KiB limit for the document to be a fair test.
func requestBody(t testing.TB, query string) []byte {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query})
	if err != nil {
		t.Fatal(err)
	}
	if len(body) > 64<<10 {
		t.Fatalf("the request body is %d bytes, over 64 KiB", len(body))
	}
	return body
}

// checkHostile checks one answer: the expected first code, at most
// graph.MaxErrors errors, all coded, and no data for a refusal.
func checkHostile(t *testing.T, want string, r apptest.Response) {
	t.Helper()
	codes := r.Codes()
	if want == "" {
		if len(r.Errors) > 0 || len(r.Data) < 3 {
			t.Fatalf("errors %+v, data %.100s; want an answer", r.Errors, r.Data)
		}
		return
	}
	if len(codes) == 0 || codes[0] != want {
		t.Fatalf("codes %v, want %s first; errors %.500v", codes, want, r.Errors)
	}
	if len(r.Errors) > graph.MaxErrors {
		t.Errorf("%d errors, want at most %d", len(r.Errors), graph.MaxErrors)
	}
	if slices.Contains(codes, "") {
		t.Errorf("an error without a code: %v", codes)
	}
	if len(r.Data) != 0 && string(r.Data) != "null" {
		t.Errorf("data = %.100s, want none", r.Data)
	}
}

// Each hostile document gets its code over HTTP POST, as an admin and as
// a user, and the server answers the next request as usual.
func TestQueryBombsOverHTTP(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	clients := map[string]*apptest.Client{"admin": s.Admin(t, co), "user": s.User(t, co, "u1")}
	for _, doc := range hostileDocuments() {
		requestBody(t, doc.query)
		for role, c := range clients {
			t.Run(role+"/"+doc.name, func(t *testing.T) {
				want := doc.admin
				if role == "user" {
					want = doc.user
				}
				checkHostile(t, want, c.Do(t, doc.query, nil))
			})
		}
	}
	wantData(t, clients["user"].Do(t, `{ __typename }`, nil), `{"__typename":"Query"}`)
}

func wantData(t *testing.T, r apptest.Response, want string) {
	t.Helper()
	if len(r.Errors) > 0 || string(r.Data) != want {
		t.Fatalf("data %s errors %+v, want %s", r.Data, r.Errors, want)
	}
}

// The same documents get the same codes over the websocket.
func TestQueryBombsOverWebsocket(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	for _, role := range []string{"admin", "user"} {
		c := s.Admin(t, co)
		if role == "user" {
			c = s.User(t, co, "u1")
		}
		ws := dialWS(t, s, c.Token)
		for i, doc := range hostileDocuments() {
			t.Run(role+"/"+doc.name, func(t *testing.T) {
				want := doc.admin
				if role == "user" {
					want = doc.user
				}
				checkHostile(t, want, ws.run(t, fmt.Sprint(i), doc.query))
			})
		}
		wantData(t, ws.run(t, "last", `{ __typename }`), `{"__typename":"Query"}`)
	}
}

// wsWait bounds each wait for a message; nothing is asserted about time.
const wsWait = 20 * time.Second

// gqlWS is a graphql-transport-ws connection.
type gqlWS struct{ conn *websocket.Conn }

// dialWS opens a graphql-transport-ws connection with token in
// connection_init, and waits for connection_ack.
func dialWS(t *testing.T, s *apptest.Server, token string) *gqlWS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/query",
		&websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	conn.SetReadLimit(1 << 20)
	ws := &gqlWS{conn: conn}
	ws.send(t, map[string]any{"type": "connection_init", "payload": map[string]any{"Authorization": "Bearer " + token}})
	if m := ws.read(t); m.Type != "connection_ack" {
		t.Fatalf("got %s %s, want connection_ack", m.Type, m.Payload)
	}
	return ws
}

type wsMessage struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (ws *gqlWS) send(t *testing.T, m any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	if err := wsjson.Write(ctx, ws.conn, m); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// read returns the next message that is not a ping or pong.
func (ws *gqlWS) read(t *testing.T) wsMessage {
	t.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wsWait)
		var m wsMessage
		err := wsjson.Read(ctx, ws.conn, &m)
		cancel()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		switch m.Type {
		case "ping":
			ws.send(t, map[string]any{"type": "pong"})
		case "pong":
		default:
			return m
		}
	}
}

// run subscribes with query as operation id and returns what it got
// until complete: the data and errors of its next message, or the errors
// of its error message.
func (ws *gqlWS) run(t *testing.T, id, query string) apptest.Response {
	t.Helper()
	ws.send(t, map[string]any{"type": "subscribe", "id": id, "payload": map[string]any{"query": query}})
	return ws.result(t, id)
}

// result reads operation id's messages until complete.
func (ws *gqlWS) result(t *testing.T, id string) apptest.Response {
	t.Helper()
	var out apptest.Response
	for {
		m := ws.read(t)
		if m.ID != id {
			t.Fatalf("got %s for %q, want a message for %q", m.Type, m.ID, id)
		}
		var err error
		switch m.Type {
		case "next":
			err = json.Unmarshal(m.Payload, &out)
		case "error": // gqlgen follows it with complete
			err = json.Unmarshal(m.Payload, &out.Errors)
		case "complete":
			return out
		}
		if err != nil {
			t.Fatalf("%s payload %s: %v", m.Type, m.Payload, err)
		}
	}
}

// A websocket message of 64 KiB is read; one byte more closes the
// connection with 1009 (message too big), and nothing in it runs.
func TestWebsocketMessageLimit(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	// sized is a subscribe message of size bytes: spaces after the query
	// keep it the same document.
	sized := func(id, query string, size int) []byte {
		msg := func(pad int) string {
			return `{"type":"subscribe","id":"` + id + `","payload":{"query":"` + query + strings.Repeat(" ", pad) + `"}}`
		}
		return []byte(msg(size - len(msg(0))))
	}
	ws := dialWS(t, s, admin.Token)
	ws.write(t, sized("at", `{ __typename }`, graph.MaxWebsocketMessage))
	if r := ws.result(t, "at"); len(r.Errors) > 0 || string(r.Data) != `{"__typename":"Query"}` {
		t.Fatalf("at the limit: %+v", r)
	}

	ws.write(t, sized("over", `mutation { createUser(input: {id: \"ws-big\"}) { user { id } } }`, graph.MaxWebsocketMessage+1))
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	for {
		_, _, err := ws.conn.Read(ctx) // pings may come first
		if err != nil {
			if got := websocket.CloseStatus(err); got != websocket.StatusMessageTooBig {
				t.Fatalf("read after an oversized message: %v (close status %d), want 1009", err, got)
			}
			break
		}
	}
	wantCode(t, admin.Do(t, `{ user(id: "ws-big") { id } }`, nil), "NOT_FOUND")
}

func (ws *gqlWS) write(t *testing.T, msg []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wsWait)
	defer cancel()
	if err := ws.conn.Write(ctx, websocket.MessageText, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// A document of exactly MaxTokens tokens is taken; one more token is
// refused before gqlgen parses it, with TOO_MANY_TOKENS.
func TestTokenLimit(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	admin := s.Admin(t, testenv.Company(t))
	// A list value: tokens that cost no selections.
	doc := func(n int) string {
		return "{ auditLog(first: 1, filter: {actions: [" + strings.Repeat("USER_CREATED ", n) + "]}) { edges { cursor } } }"
	}
	n := 0
	for tokens(t, doc(n)) < graph.MaxTokens {
		n++
	}
	if tokens(t, doc(n)) != graph.MaxTokens {
		t.Fatalf("no document of exactly %d tokens", graph.MaxTokens)
	}
	wantData(t, admin.Do(t, doc(n), nil), `{"auditLog":{"edges":[]}}`)
	r := admin.Do(t, doc(n+1), nil)
	wantCode(t, r, tooManyTokens)
	if !strings.Contains(r.Errors[0].Message, fmt.Sprint(graph.MaxTokens)) {
		t.Errorf("message %q does not name the limit", r.Errors[0].Message)
	}
}

// tokens counts q's tokens as gqlparser's token limit does.
func tokens(t *testing.T, q string) int {
	t.Helper()
	l := lexer.New(&ast.Source{Input: q})
	n := 0
	for {
		tok, err := l.ReadToken()
		if err != nil {
			t.Fatal(err)
		}
		if tok.Kind == lexer.EOF {
			return n
		}
		n++
	}
}

// Validation errors past MaxErrors are summed up in one error, so that a
// document's errors are not many times its size.
func TestErrorCap(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	user := s.User(t, testenv.Company(t), "u1")
	for _, q := range []string{
		"{__typename" + strings.Repeat(" @include(if:true)", 250) + "}",
		numbered(450, "query(", "$v%d:Int,", "){__typename}"),
	} {
		r := user.Do(t, q, nil)
		codes := r.Codes()
		if r.Status != 422 || len(codes) != graph.MaxErrors || codes[0] != invalid || codes[graph.MaxErrors-1] != "TOO_MANY_ERRORS" {
			t.Fatalf("%.40s: status %d codes %v", q, r.Status, codes)
		}
		if msg := r.Errors[graph.MaxErrors-1].Message; !strings.Contains(msg, "more errors not shown") {
			t.Errorf("summary %q", msg)
		}
		if b, _ := json.Marshal(r.Errors); len(b) > len(q) {
			t.Errorf("%d bytes of errors for a %d-byte document", len(b), len(q))
		}
	}
}
