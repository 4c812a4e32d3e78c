package graph_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// marker is in request bodies that must not come back in error bodies.
const marker = "ECHO-MARKER-7f3a"

// transportCase is one raw request and the error it must get.
type transportCase struct {
	name, method, query, contentType, accept, body string
	status                                         int // 0: any status below 500
	code                                           string
}

// leaks are texts of libraries' error messages that must not reach a
// client.
var leaks = []string{marker, "invalid character", "could not be decoded", "transport not supported",
	"json:", "unexpected EOF", "cannot unmarshal", "body:"}

// Every refusal, from the transport layer up to validation, is a GraphQL
// error body with extensions.code, and none echoes the request or a
// library's message.
func TestTransportErrors(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	token := s.Admin(t, testenv.Company(t)).Token
	const sub = `subscription { auditEventAdded { cursor } }`
	get := func(q string) string { return "query=" + url.QueryEscape(q) }
	cases := []transportCase{
		{"text/plain", "POST", "", "text/plain", "", `{"query":"{ me { id } }"}`, 415, "BAD_REQUEST"},
		{"no content type", "POST", "", "", "", `{"query":"{ me { id } }"}`, 415, "BAD_REQUEST"},
		{"form", "POST", "", "application/x-www-form-urlencoded", "", "query=" + marker, 415, "BAD_REQUEST"},
		{"multipart", "POST", "", "multipart/form-data; boundary=x", "", marker, 415, "BAD_REQUEST"},
		{"not JSON", "POST", "", "application/json", "", "x" + marker, 400, "BAD_REQUEST"},
		{"truncated JSON", "POST", "", "application/json", "", `{"query":"{ me { id } }", "x": "` + marker, 400, "BAD_REQUEST"},
		{"query not a string", "POST", "", "application/json", "", `{"query": ["` + marker + `"]}`, 400, "BAD_REQUEST"},
		{"variables not an object", "POST", "", "application/json", "", `{"query":"{ me { id } }","variables":"` + marker + `"}`, 400, "BAD_REQUEST"},
		{"empty body", "POST", "", "application/json", "", "", 400, "BAD_REQUEST"},
		{"null", "POST", "", "application/json", "", "null", 400, "BAD_REQUEST"},
		{"missing query", "POST", "", "application/json", "", `{"variables":{}}`, 400, "BAD_REQUEST"},
		{"blank query", "POST", "", "application/json", "", `{"query":"  "}`, 400, "BAD_REQUEST"},
		{"SSE with bad JSON", "POST", "", "application/json", "text/event-stream", "x" + marker, 400, "BAD_REQUEST"},
		{"PUT", "PUT", "", "application/json", "", `{"query":"{ me { id } }"}`, 405, "BAD_REQUEST"},
		{"DELETE", "DELETE", "", "", "", "", 405, "BAD_REQUEST"},
		{"PATCH", "PATCH", "", "application/json", "", `{"query":"{ me { id } }"}`, 405, "BAD_REQUEST"},
		{"GET mutation", "GET", get(`mutation { createUser(input: {id: "g"}) { user { id } } }`), "", "", "", 0, "BAD_REQUEST"},
		{"GET subscription", "GET", get(sub), "", "", "", 0, "BAD_REQUEST"},
		{"GET without query", "GET", "", "", "", "", 400, "BAD_REQUEST"},
		{"GET bad escape", "GET", "query=%zz" + marker, "", "", "", 400, "BAD_REQUEST"},
		{"GET bad variables", "GET", get(`{ me { id } }`) + "&variables=" + marker, "", "", "", 400, "BAD_REQUEST"},
		{"GET bad extensions", "GET", get(`{ me { id } }`) + "&extensions=" + marker, "", "", "", 400, "BAD_REQUEST"},
		{"unknown operationName", "POST", "", "application/json", "", `{"query":"query A { me { id } }","operationName":"` + marker + `"}`, 422, "GRAPHQL_VALIDATION_FAILED"},
		{"two operations, no operationName", "POST", "", "application/json", "", `{"query":"query A { me { id } } query B { me { id } }"}`, 422, "GRAPHQL_VALIDATION_FAILED"},
		{"syntax error", "POST", "", "application/json", "", `{"query":"{ me { id "}`, 422, "GRAPHQL_PARSE_FAILED"},
		{"unknown field", "POST", "", "application/json", "", `{"query":"{ nope }"}`, 422, "GRAPHQL_VALIDATION_FAILED"},
		{"bad enum in variables", "POST", "", "application/json", "", `{"query":"query($f: AuditLogFilter) { auditLog(filter: $f) { edges { cursor } } }","variables":{"f":{"app":"NOPE"}}}`, 422, "GRAPHQL_VALIDATION_FAILED"},
		{"bad scalar argument", "POST", "", "application/json", "", `{"query":"{ auditLog(filter: {from: \"garbage\"}) { edges { cursor } } }"}`, 200, "BAD_USER_INPUT"},
		{"unsupported APQ version", "POST", "", "application/json", "", `{"extensions":{"persistedQuery":{"version":2,"sha256Hash":"x"}}}`, 0, "BAD_REQUEST"},
		{"unknown persisted query", "POST", "", "application/json", "", `{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"x"}}}`, 200, "PERSISTED_QUERY_NOT_FOUND"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"Authorization": "Bearer " + token}
			for k, v := range map[string]string{"Content-Type": tc.contentType, "Accept": tc.accept} {
				if v != "" {
					h[k] = v
				}
			}
			res := send(t, tc.method, s.URL+"/query?"+tc.query, h, strings.NewReader(tc.body))
			checkRefusal(t, tc, res)
		})
	}
}

func checkRefusal(t *testing.T, tc transportCase, res httpResult) {
	t.Helper()
	if tc.status != 0 && res.Status != tc.status || tc.status == 0 && (res.Status < 200 || res.Status >= 500) {
		t.Errorf("status %d, want %d", res.Status, tc.status)
	}
	if ct := res.Header.Get("Content-Type"); !strings.Contains(ct, "json") {
		t.Errorf("Content-Type %q", ct)
	}
	r := res.gql(t)
	if len(r.Errors) == 0 || r.Errors[0].Code() != tc.code {
		t.Fatalf("body %s, want code %s", res.Body, tc.code)
	}
	for _, e := range r.Errors {
		if e.Code() == "" || e.Message == "" {
			t.Errorf("error without a code or message: %+v", e)
		}
	}
	if len(r.Data) != 0 && string(r.Data) != "null" {
		t.Errorf("data = %s", r.Data)
	}
	for _, leak := range leaks {
		if strings.Contains(string(res.Body), leak) {
			t.Errorf("body contains %q: %s", leak, res.Body)
		}
	}
}

// A subscription by plain POST or GET is refused rather than answered
// with one event; by POST with Accept: text/event-stream it streams.
func TestSubscriptionOverPlainHTTP(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	admin := s.Admin(t, testenv.Company(t))
	const sub = `subscription { auditEventAdded { cursor } }`
	if r := admin.Do(t, sub, nil); len(r.Errors) != 1 || r.Errors[0].Code() != "BAD_REQUEST" ||
		!strings.Contains(r.Errors[0].Message, "text/event-stream") || r.Status != http.StatusUnprocessableEntity {
		t.Errorf("plain POST: status %d errors %+v", r.Status, r.Errors)
	}
	h := send(t, http.MethodGet, s.URL+"/query?query="+url.QueryEscape(sub), map[string]string{"Authorization": "Bearer " + admin.Token}, nil)
	if r := h.gql(t); len(r.Errors) != 1 || r.Errors[0].Code() != "BAD_REQUEST" || !strings.Contains(r.Errors[0].Message, "websocket") {
		t.Errorf("GET: status %d body %s", h.Status, h.Body)
	}

	// SSE still works: the stream opens (events are tested in internal/feed).
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/query", strings.NewReader(`{"query":"`+sub+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+admin.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("SSE: status %d, Content-Type %q", resp.StatusCode, ct)
	}
}

// A request that asks for a websocket but is not a valid handshake gets
// BAD_REQUEST in JSON, with nothing of the request in it; gqlgen's
// websocket transport answered 426 text/plain quoting the headers. A
// valid handshake still opens a websocket, and an Upgrade to another
// protocol (curl --http2 sends Upgrade: h2c) is ignored, as HTTP allows.
func TestWebsocketHandshakeRefusals(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	key := "dGhlIHNhbXBsZSBub25jZQ==" // 16 bytes, from RFC 6455
	valid := func(change map[string]string) map[string]string {
		h := map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key}
		for k, v := range change {
			h[k] = v
		}
		return h
	}
	cases := []struct {
		name, method string
		header       map[string]string
		body         string
	}{
		{"POST", "POST", valid(map[string]string{"Content-Type": "application/json"}), `{"query":"` + marker + `"}`},
		{"POST without the other headers", "POST", map[string]string{"Upgrade": "websocket"}, `{}`},
		{"no Connection: upgrade", "GET", valid(map[string]string{"Connection": "keep-alive, " + marker}), ""},
		{"version 8", "GET", valid(map[string]string{"Sec-WebSocket-Version": "8" + marker}), ""},
		{"no version", "GET", valid(map[string]string{"Sec-WebSocket-Version": ""}), ""},
		{"key not base64", "GET", valid(map[string]string{"Sec-WebSocket-Key": marker}), ""},
		{"key of 8 bytes", "GET", valid(map[string]string{"Sec-WebSocket-Key": "AAAAAAAAAAA="}), ""},
		{"no key", "GET", valid(map[string]string{"Sec-WebSocket-Key": ""}), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			for k, v := range tc.header {
				if v != "" {
					h[k] = v
				}
			}
			res := send(t, tc.method, s.URL+"/query", h, strings.NewReader(tc.body))
			checkRefusal(t, transportCase{status: http.StatusBadRequest, code: "BAD_REQUEST"}, res)
			if r := res.gql(t); len(r.Errors) != 1 || !strings.Contains(r.Errors[0].Message, "websocket handshake") {
				t.Errorf("errors %+v", r.Errors)
			}
		})
	}

	admin := s.Admin(t, testenv.Company(t))
	h2c := map[string]string{"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQAoAAAAAIAAAAA",
		"Content-Type": "application/json", "Authorization": "Bearer " + admin.Token}
	res := send(t, "POST", s.URL+"/query", h2c, strings.NewReader(`{"query":"{ __typename }"}`))
	if r := res.gql(t); res.Status != http.StatusOK || string(r.Data) != `{"__typename":"Query"}` {
		t.Errorf("Upgrade: h2c: status %d body %s", res.Status, res.Body)
	}
	delete(h2c, "Authorization")
	if res := send(t, "POST", s.URL+"/query", h2c, strings.NewReader(`{"query":"{ __typename }"}`)); res.Status != http.StatusUnauthorized {
		t.Errorf("Upgrade: h2c without a token: status %d body %s", res.Status, res.Body)
	}
	ws := dialWS(t, s, admin.Token)
	wantData(t, ws.run(t, "1", `{ __typename }`), `{"__typename":"Query"}`)
}
