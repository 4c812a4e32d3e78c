package graph

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// CodeBadRequest marks a request that is not a GraphQL request this
// service takes: wrong method or content type, undecodable JSON, no query,
// or an operation its transport cannot carry.
const CodeBadRequest = "BAD_REQUEST"

func init() {
	// Like parse and validation failures: an HTTP 4xx, not a 200.
	errcode.RegisterErrorType(CodeBadRequest, errcode.KindProtocol)
}

// requestGate answers with BAD_REQUEST what gqlgen's transports would
// answer with no code, or by echoing the body and the decoder's error. It
// decodes exactly as gqlgen's transports do, so what passes here decodes
// there too.
type requestGate struct{ next http.Handler }

// transportKey holds how an HTTP request came, for transportFit.
type transportKey struct{}

type transportInfo struct {
	get    bool // GET: queries only
	stream bool // POST with Accept: text/event-stream (SSE)
}

// requestError is a refusal with its HTTP status.
type requestError struct {
	status int
	msg    string
}

func (g requestGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if up := r.Header.Get("Upgrade"); up != "" {
		if strings.EqualFold(up, "websocket") {
			g.upgrade(w, r)
			return
		}
		// Another protocol (curl --http2 asks for h2c): ignored, as HTTP
		// allows, rather than handed to gqlgen's websocket transport,
		// which claims any request with an Upgrade header.
		r.Header.Del("Upgrade")
	}
	if r.Method == http.MethodOptions {
		g.next.ServeHTTP(w, r)
		return
	}
	var info transportInfo
	var refuse *requestError
	switch r.Method {
	case http.MethodGet:
		info.get = true
		refuse = checkGET(r)
	case http.MethodPost:
		info.stream = strings.Contains(r.Header.Get("Accept"), "text/event-stream")
		refuse = checkPOST(r)
	default:
		w.Header().Set("Allow", "GET, POST, OPTIONS")
		refuse = &requestError{http.StatusMethodNotAllowed, "send GraphQL requests by POST (or queries by GET)"}
	}
	if refuse != nil {
		writeBadRequest(w, refuse)
		return
	}
	g.next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), transportKey{}, info)))
}

// upgrade passes a valid websocket handshake to gqlgen and refuses any
// other with BAD_REQUEST. gqlgen would answer it with the websocket
// library's message in text/plain, quoting the request's headers, and
// log it.
func (g requestGate) upgrade(w http.ResponseWriter, r *http.Request) {
	if msg := checkHandshake(r); msg != "" {
		if r.Header.Get("Sec-WebSocket-Version") != "13" {
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		writeBadRequest(w, &requestError{http.StatusBadRequest, "not a valid websocket handshake: " + msg})
		return
	}
	g.next.ServeHTTP(w, r)
}

// checkHandshake says what makes r not a websocket handshake (RFC 6455
// section 4.2.1), as github.com/coder/websocket checks it, or "".
func checkHandshake(r *http.Request) string {
	switch {
	case r.ProtoMajor != 1 || r.ProtoMinor < 1:
		return "it needs HTTP/1.1"
	case r.Method != http.MethodGet:
		return "the method must be GET"
	case !headerHasToken(r.Header, "Connection", "upgrade"):
		return "the Connection header must include Upgrade"
	case r.Header.Get("Sec-WebSocket-Version") != "13":
		return "Sec-WebSocket-Version must be 13"
	}
	keys := r.Header.Values("Sec-WebSocket-Key")
	if len(keys) != 1 {
		return "it needs one Sec-WebSocket-Key header"
	}
	if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(key) != 16 {
		return "Sec-WebSocket-Key must be 16 bytes in base64"
	}
	return ""
}

// headerHasToken reports whether a comma-separated header holds token,
// in any case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func checkPOST(r *http.Request) *requestError {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/json" {
		return &requestError{http.StatusUnsupportedMediaType, "send the request as Content-Type: application/json"}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return &requestError{http.StatusBadRequest, "could not read request body"}
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var p gateParams
	if decodeJSON(bytes.NewReader(body), &p) != nil {
		return &requestError{http.StatusBadRequest,
			`the body is not a GraphQL request: send JSON such as {"query": "…", "variables": {…}}`}
	}
	return checkQuery(graphql.RawParams{Query: p.Query, Extensions: p.Extensions})
}

// gateParams decodes like graphql.RawParams, and fails where it fails,
// without building the variables, which gqlgen decodes again anyway.
type gateParams struct {
	Query         string         `json:"query"`
	OperationName string         `json:"operationName"`
	Variables     jsonObject     `json:"variables"`
	Extensions    map[string]any `json:"extensions"`
}

// jsonObject accepts what decodes into a map[string]any: an object or
// null. The decoder has checked its syntax before calling UnmarshalJSON.
type jsonObject struct{}

func (jsonObject) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '{' || string(b) == "null" {
		return nil
	}
	return errors.New("not a JSON object")
}

func checkGET(r *http.Request) *requestError {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return &requestError{http.StatusBadRequest, "the URL's query string is malformed"}
	}
	p := graphql.RawParams{Query: q.Get("query")}
	for name, into := range map[string]*map[string]any{"variables": &p.Variables, "extensions": &p.Extensions} {
		if v := q.Get(name); v != "" && decodeJSON(strings.NewReader(v), into) != nil {
			return &requestError{http.StatusBadRequest, fmt.Sprintf("the %s parameter is not a JSON object", name)}
		}
	}
	return checkQuery(p)
}

// checkQuery refuses a request with no query, unless it names a persisted
// one (automatic persisted queries send the hash alone first).
func checkQuery(p graphql.RawParams) *requestError {
	if strings.TrimSpace(p.Query) == "" && p.Extensions["persistedQuery"] == nil {
		return &requestError{http.StatusBadRequest, "the request has no query"}
	}
	return nil
}

// decodeJSON decodes as gqlgen's transports do.
func decodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode request: %w", err)
	}
	return nil
}

func writeBadRequest(w http.ResponseWriter, e *requestError) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_ = json.NewEncoder(w).Encode(graphql.Response{Errors: gqlerror.List{badRequest(e.msg)}})
}

func badRequest(msg string) *gqlerror.Error {
	return &gqlerror.Error{Message: msg, Extensions: map[string]any{"code": CodeBadRequest}}
}

// transportFit refuses an operation its transport cannot carry: over GET
// only queries (a link must not change anything), and a subscription only
// over a websocket or SSE, since a plain POST would answer with its first
// event and stop.
type transportFit struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = transportFit{}

func (transportFit) ExtensionName() string                   { return "TransportFit" }
func (transportFit) Validate(graphql.ExecutableSchema) error { return nil }

func (transportFit) MutateOperationContext(ctx context.Context, oc *graphql.OperationContext) *gqlerror.Error {
	info, ok := ctx.Value(transportKey{}).(transportInfo)
	if !ok || oc.Operation == nil {
		return nil // a websocket, which carries every kind
	}
	switch {
	case oc.Operation.Operation == ast.Subscription && !info.stream:
		return badRequest("subscriptions need a websocket (graphql-transport-ws) or Accept: text/event-stream")
	case info.get && oc.Operation.Operation != ast.Query:
		return badRequest("GET requests only allow query operations; send mutations by POST")
	}
	return nil
}
