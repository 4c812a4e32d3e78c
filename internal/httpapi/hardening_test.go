package httpapi_test

// Regression tests for the HTTP edge findings of the security review
// (issue 8): each is named after its finding.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/httpapi"
	"github.com/twofactor/service/internal/metrics"
	"github.com/twofactor/service/internal/testenv"
)

// seriesCount counts the service's own series (twofactor_*), and reports
// the longest label value among them.
func seriesCount(t *testing.T, m *metrics.Metrics) (n, longest int) {
	t.Helper()
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "twofactor_") {
			continue
		}
		n += len(f.GetMetric())
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				longest = max(longest, len(l.GetValue()))
			}
		}
	}
	return n, longest
}

// metricsText is what a scrape of m returns.
func metricsText(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

func randomWord(t *testing.T, n int) string {
	t.Helper()
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// postOperation posts a GraphQL request with an operationName.
func postOperation(t *testing.T, url, token, query, opName string) int {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "operationName": opName})
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := do(t, http.MethodPost, url, map[string]string{
		"Content-Type": "application/json", "Authorization": "Bearer " + token,
	}, string(body))
	return resp.StatusCode
}

// Finding 1: a 200 KB HTTP method or a random operationName made a new
// series each time, on a public /metrics. Now labels come from closed
// sets, and the public port has no /metrics.
func TestUnboundedMetricLabels(t *testing.T) {
	s := apptest.Start(t)
	admin := s.Admin(t, testenv.Company(t))
	hostile := func() {
		for range 5 {
			do(t, randomWord(t, 200<<10), s.URL+"/query", nil, "")
			name := "Op" + randomWord(t, 32)
			postOperation(t, s.URL+"/query", admin.Token, "query "+name+" { __typename }", name)
			postOperation(t, s.URL+"/query", admin.Token, "query "+name+" { __typename ", name)
			postOperation(t, s.URL+"/query", admin.Token, "{ __typename }", name)
			do(t, http.MethodGet, s.URL+"/no/such/"+randomWord(t, 40), nil, "")
		}
	}
	hostile() // the first round makes the series a round makes
	before, _ := seriesCount(t, s.Metrics)
	sizeBefore := len(metricsText(t, s.Metrics))
	hostile()
	after, longest := seriesCount(t, s.Metrics)
	if after != before {
		t.Errorf("series: %d before, %d after five more hostile rounds", before, after)
	}
	if grown := len(metricsText(t, s.Metrics)) - sizeBefore; grown > 512 {
		t.Errorf("/metrics grew by %d bytes", grown)
	}
	if longest > 64 {
		t.Errorf("a label value is %d bytes long", longest)
	}
	text := metricsText(t, s.Metrics)
	for _, want := range []string{
		`twofactor_graphql_operations_total{name="__typename",type="query"}`,
		`twofactor_graphql_operations_total{name="invalid",type="invalid"}`,
		`twofactor_http_requests_total{method="OTHER",route="unmatched",status="405"}`,
		`twofactor_http_requests_total{method="GET",route="unmatched",status="404"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	resp, _ := do(t, http.MethodGet, s.URL+"/metrics", nil, "")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /metrics on the public port = %d, want 404", resp.StatusCode)
	}
}

// rawServer runs the handler in an http.Server built by httpapi.NewServer,
// as main does, and returns its address.
func rawServer(t *testing.T, tweak func(*httpapi.Config)) string {
	t.Helper()
	cfg := httpapi.Config{
		GraphQL: echo, Tokens: verifier{}, Metrics: metrics.New(),
		Logger: slog.New(slog.DiscardHandler),
		Ready:  func(context.Context) error { return nil },
	}
	if tweak != nil {
		tweak(&cfg)
	}
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = httpapi.NewServer(httpapi.New(cfg))
	ts.Start()
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// exchange writes raw to a new connection and reads one response. closed
// tells whether the server then closed the connection (EOF) rather than
// keep it open until the test's own deadline.
func exchange(t *testing.T, addr, raw string) (resp *http.Response, body string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A safety net only: the server is expected to close long before.
	_ = c.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_, err = br.ReadByte()
	return resp, string(b), errors.Is(err, io.EOF)
}

// Finding 3: a POST that declared a body and never sent it held the
// connection (no body deadline; an anonymous one was drained after 401).
func TestNoBodyDeadline(t *testing.T) {
	addr := rawServer(t, func(c *httpapi.Config) { c.BodyTimeout = 200 * time.Millisecond })
	post := func(headers string, body string) string {
		return "POST /query HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
			"Content-Length: 60000\r\n" + headers + "\r\n" + body
	}
	cases := []struct {
		name, raw string
		status    int
	}{
		{"anonymous, body never sent", post("", ""), http.StatusUnauthorized},
		{"bad token, part of the body", post("Authorization: Bearer bad\r\n", `{"query":`), http.StatusUnauthorized},
		{"authenticated, body never finished", post("Authorization: Bearer good\r\n", `{"query":`), http.StatusBadRequest},
		{"not found, body never sent", "POST /nope HTTP/1.1\r\nHost: localhost\r\nContent-Length: 60000\r\n\r\n", http.StatusNotFound},
		// A stray Upgrade header must not lift the body deadline (found
		// by a red-team pass: such requests were held without limit).
		{"websocket upgrade by POST, body never sent", post("Upgrade: websocket\r\nConnection: upgrade\r\n", ""), http.StatusBadRequest},
		{"websocket upgrade by GET with a body never sent", "GET /query HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n" +
			"Connection: upgrade\r\nContent-Length: 60000\r\n\r\n", http.StatusBadRequest},
		{"websocket upgrade with a chunked body never finished", "GET /query HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n10\r\n", http.StatusBadRequest},
		{"OPTIONS, body never sent", "OPTIONS /query HTTP/1.1\r\nHost: localhost\r\nContent-Length: 60000\r\n\r\n", http.StatusOK},
		{"headers over MaxHeaderBytes", "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " +
			strings.Repeat("a", httpapi.MaxHeaderBytes+8<<10) + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, closed := exchange(t, addr, tc.raw)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if !closed {
				t.Error("the server kept the connection open waiting for the body")
			}
		})
	}
}

// A request that sends its whole body in time is unaffected, and the
// connection stays open for the next one.
func TestBodyInTimeKeepsConnection(t *testing.T) {
	addr := rawServer(t, func(c *httpapi.Config) { c.BodyTimeout = time.Second })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := range 2 {
		fmt.Fprintf(c, "POST /query HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer good\r\nContent-Length: 2\r\n\r\n{}")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("request %d: status %d, close %v", i, resp.StatusCode, resp.Close)
		}
	}
}

// Finding 4: in embedded mode on a loopback address, a request naming
// another host (DNS rebinding) is refused; elsewhere any Host is served.
func TestDNSRebinding(t *testing.T) {
	only := server(t, func(c *httpapi.Config) { c.LoopbackHostsOnly = true })
	open := server(t, nil)
	cases := []struct {
		srv    *httptest.Server
		host   string
		status int
	}{
		{only, "rebind.attacker.example", http.StatusMisdirectedRequest},
		{only, "rebind.attacker.example:8080", http.StatusMisdirectedRequest},
		{only, "localhost.attacker.example", http.StatusMisdirectedRequest},
		{only, "10.0.0.1:8080", http.StatusMisdirectedRequest},
		{only, "localhost:8080", http.StatusOK},
		{only, "LOCALHOST", http.StatusOK},
		{only, "127.0.0.1:8080", http.StatusOK},
		{only, "127.1.2.3", http.StatusOK},
		{only, "[::1]:8080", http.StatusOK},
		{open, "rebind.attacker.example", http.StatusOK},
	}
	for _, tc := range cases {
		req, err := http.NewRequest(http.MethodGet, tc.srv.URL+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tc.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Errors []struct{ Extensions struct{ Code string } }
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || err != nil {
			t.Errorf("Host %s (loopback only: %v): status %d, want %d (%v)", tc.host, tc.srv == only, resp.StatusCode, tc.status, err)
		}
		if tc.status != http.StatusOK && (len(body.Errors) != 1 || body.Errors[0].Extensions.Code != "MISDIRECTED_REQUEST") {
			t.Errorf("Host %s: errors %+v, want MISDIRECTED_REQUEST", tc.host, body.Errors)
		}
	}
}

// The body deadline ends once the body is in, and a request without a
// body has none: a stream (SSE), a websocket or a slow GET lives on past
// it.
func TestStreamsOutliveBodyTimeout(t *testing.T) {
	const bodyTimeout = 100 * time.Millisecond
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			_, msg, err := c.Read(r.Context())
			if err == nil {
				err = c.Write(r.Context(), websocket.MessageText, msg)
			}
			return
		}
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(3 * bodyTimeout)
		if err := r.Context().Err(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "still here")
	})
	slowReady := func(ctx context.Context) error {
		select {
		case <-time.After(3 * bodyTimeout):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	addr := rawServer(t, func(c *httpapi.Config) { c.GraphQL, c.BodyTimeout, c.Ready = stream, bodyTimeout, slowReady })

	if resp, body := do(t, http.MethodGet, "http://"+addr+"/readyz", nil, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("slow GET: %d %s", resp.StatusCode, body)
	}

	resp, body := do(t, http.MethodPost, "http://"+addr+"/query", map[string]string{"Authorization": "Bearer good"}, "{}")
	if resp.StatusCode != http.StatusOK || body != "still here" {
		t.Errorf("stream: %d %s", resp.StatusCode, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/query", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	time.Sleep(3 * bodyTimeout)
	if err := c.Write(ctx, websocket.MessageText, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || string(msg) != "ping" {
		t.Errorf("websocket after the body timeout: %q, %v", msg, err)
	}
}
