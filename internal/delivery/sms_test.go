package delivery_test

import (
	"context"
	"crypto/hmac"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twofactor/service/internal/delivery"
)

var smsMessage = delivery.Message{To: "+37120000078", Text: "Your verification code is " + testCode + "."}

// capture records requests and answers each with status and body.
type capture struct {
	mu   sync.Mutex
	reqs []captured
}

type captured struct {
	Method, Path, ContentType string
	User, Pass                string
	HasAuth                   bool
	Header                    http.Header
	Body                      []byte
}

func (c *capture) server(t *testing.T, status int, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		user, pass, ok := r.BasicAuth()
		c.mu.Lock()
		c.reqs = append(c.reqs, captured{Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"),
			User: user, Pass: pass, HasAuth: ok, Header: r.Header.Clone(), Body: b})
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func (c *capture) only(t *testing.T) captured {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.reqs) != 1 {
		t.Fatalf("server got %d requests, want 1", len(c.reqs))
	}
	return c.reqs[0]
}

func TestTwilioSendsForm(t *testing.T) {
	t.Parallel()
	var c capture
	srv := c.server(t, http.StatusCreated, `{"sid":"SM123","status":"queued"}`)
	tw := delivery.Twilio{BaseURL: srv.URL + "/", AccountSID: "AC0123", AuthToken: "tok-secret", From: "+15005550006"}
	if err := tw.Send(sendCtx(t), smsMessage); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := c.only(t)
	if r.Method != http.MethodPost || r.Path != "/2010-04-01/Accounts/AC0123/Messages.json" {
		t.Errorf("%s %s, want POST /2010-04-01/Accounts/AC0123/Messages.json", r.Method, r.Path)
	}
	if r.ContentType != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type %q", r.ContentType)
	}
	if !r.HasAuth || r.User != "AC0123" || r.Pass != "tok-secret" {
		t.Errorf("basic auth %q:%q (present %v), want the account SID and token", r.User, r.Pass, r.HasAuth)
	}
	form, err := parseForm(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"To": "+37120000078", "From": "+15005550006", "Body": smsMessage.Text}
	for k, v := range want {
		if got := form.Get(k); got != v {
			t.Errorf("form %s = %q, want %q", k, got, v)
		}
	}
	if len(form) != len(want) {
		t.Errorf("form has fields %v, want exactly To, From, Body", form)
	}
}

// Twilio's error bodies quote the request, code included; the error the
// service logs must not.
func TestTwilioErrorHidesCode(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusTooManyRequests, http.StatusInternalServerError} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			t.Parallel()
			var c capture
			srv := c.server(t, status, `{"code":21211,"message":"The 'To' number is not valid. Body: `+smsMessage.Text+`","status":`+strconv.Itoa(status)+`}`)
			tw := delivery.Twilio{BaseURL: srv.URL, AccountSID: "AC0123", AuthToken: "tok-secret", From: "+15005550006"}
			err := tw.Send(sendCtx(t), smsMessage)
			if err == nil {
				t.Fatalf("status %d did not fail the send", status)
			}
			for _, secret := range []string{testCode, "tok-secret"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows %q", err, secret)
				}
			}
			if !strings.Contains(err.Error(), strconv.Itoa(status)) || !strings.Contains(err.Error(), "21211") {
				t.Errorf("error %q should name the status and Twilio's error code", err)
			}
		})
	}
}

func TestWebhookSigned(t *testing.T) {
	t.Parallel()
	var c capture
	srv := c.server(t, http.StatusOK, `{}`)
	now := time.Unix(1_800_000_000, 0)
	wh := delivery.Webhook{URL: srv.URL + "/sms", Secret: "hook-secret", Now: func() time.Time { return now }}
	if err := wh.Send(sendCtx(t), smsMessage); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := c.only(t)
	if r.Method != http.MethodPost || r.Path != "/sms" || r.ContentType != "application/json" {
		t.Errorf("%s %s (%s), want POST /sms application/json", r.Method, r.Path, r.ContentType)
	}
	var body map[string]string
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatalf("body %s: %v", r.Body, err)
	}
	if body["to"] != smsMessage.To || body["body"] != smsMessage.Text || len(body) != 2 {
		t.Errorf("body %v, want to and body", body)
	}
	ts := r.Header.Get(delivery.TimestampHeader)
	if ts != "1800000000" {
		t.Errorf("timestamp %q, want 1800000000", ts)
	}
	// What a receiver does: recompute over the raw body and compare in
	// constant time.
	sig := r.Header.Get(delivery.SignatureHeader)
	if !hmac.Equal([]byte(sig), []byte(delivery.WebhookSignature("hook-secret", ts, r.Body))) {
		t.Errorf("signature %q does not match the body and timestamp", sig)
	}
	for name, other := range map[string]string{
		"other secret":    delivery.WebhookSignature("other", ts, r.Body),
		"other timestamp": delivery.WebhookSignature("hook-secret", "1800000001", r.Body),
		"other body":      delivery.WebhookSignature("hook-secret", ts, append([]byte(" "), r.Body...)),
	} {
		if other == sig {
			t.Errorf("%s gives the same signature", name)
		}
	}
	if !strings.HasPrefix(sig, "sha256=") || len(sig) != len("sha256=")+64 {
		t.Errorf("signature %q, want sha256=<64 hex>", sig)
	}
}

func TestWebhookUnsignedWithoutSecret(t *testing.T) {
	t.Parallel()
	var c capture
	srv := c.server(t, http.StatusNoContent, ``)
	if err := (delivery.Webhook{URL: srv.URL}).Send(sendCtx(t), smsMessage); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := c.only(t)
	if r.Header.Get(delivery.SignatureHeader) != "" || r.Header.Get(delivery.TimestampHeader) != "" {
		t.Errorf("unsigned webhook sent signature headers: %v", r.Header)
	}
}

func TestWebhookErrorStatus(t *testing.T) {
	t.Parallel()
	var c capture
	srv := c.server(t, http.StatusBadGateway, `upstream said: `+smsMessage.Text)
	err := (delivery.Webhook{URL: srv.URL, Secret: "s"}).Send(sendCtx(t), smsMessage)
	if err == nil || !strings.Contains(err.Error(), "502") {
		t.Fatalf("Send = %v, want an error naming status 502", err)
	}
	if strings.Contains(err.Error(), testCode) {
		t.Errorf("error shows the code: %v", err)
	}
}

// HTTP senders give up when the context's deadline passes.
func TestHTTPSendersHonourDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	for name, s := range map[string]delivery.Sender{
		"twilio":  delivery.Twilio{BaseURL: srv.URL, AccountSID: "AC1", AuthToken: "t", From: "+1"},
		"webhook": delivery.Webhook{URL: srv.URL, Secret: "s"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Send(ctx, smsMessage) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("Send to a server that never answers succeeded")
				}
				if strings.Contains(err.Error(), testCode) {
					t.Errorf("error shows the code: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Send did not return after its context's deadline")
			}
		})
	}
}

func parseForm(b []byte) (url.Values, error) { return url.ParseQuery(string(b)) }

// The development sender writes the whole message to the log, clearly
// marked, and sends nothing.
func TestLogSenderMarksDevelopmentDelivery(t *testing.T) {
	var buf strings.Builder
	l := delivery.Log{Logger: slog.New(slog.NewJSONHandler(&buf, nil)), Channel: "sms"}
	if err := l.Send(context.Background(), smsMessage); err != nil {
		t.Fatal(err)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &line); err != nil {
		t.Fatalf("log line %q: %v", buf.String(), err)
	}
	if msg, _ := line["msg"].(string); !strings.Contains(msg, "DEVELOPMENT DELIVERY") || line["level"] != "WARN" {
		t.Errorf("log line %v is not marked as development delivery", line)
	}
	if line["to"] != smsMessage.To || line["body"] != smsMessage.Text || line["channel"] != "sms" {
		t.Errorf("log line %v does not carry the message", line)
	}
}
