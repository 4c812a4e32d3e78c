package delivery

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Twilio sends SMS through Twilio's Messages API.
type Twilio struct {
	BaseURL    string // https://api.twilio.com unless overridden
	AccountSID string
	AuthToken  string
	From       string
	Client     *http.Client
}

// DefaultTwilioBaseURL is Twilio's API host.
const DefaultTwilioBaseURL = "https://api.twilio.com"

// Send posts the message as a form with basic auth.
func (t Twilio) Send(ctx context.Context, m Message) error {
	base := strings.TrimRight(t.BaseURL, "/")
	if base == "" {
		base = DefaultTwilioBaseURL
	}
	endpoint := fmt.Sprintf("%s/2010-04-01/Accounts/%s/Messages.json", base, url.PathEscape(t.AccountSID))
	form := url.Values{"To": {m.To}, "From": {t.From}, "Body": {m.Text}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("twilio: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(t.AccountSID, t.AuthToken)
	resp, err := client(t.Client).Do(req)
	if err != nil {
		return fmt.Errorf("twilio: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		// Only Twilio's error code: the body may quote the message.
		var e struct {
			Code int `json:"code"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		return fmt.Errorf("twilio: status %d, error code %d", resp.StatusCode, e.Code)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return nil
}

// Webhook posts {"to": "+…", "body": "…"} to a URL. With a secret, it
// signs the request so the receiver can tell it came from us.
type Webhook struct {
	URL    string
	Secret string
	Client *http.Client
	Now    func() time.Time
}

// Signature headers. The signature covers the timestamp and the body, so a
// captured request cannot be replayed later with another timestamp.
const (
	TimestampHeader = "X-Twofactor-Timestamp"
	SignatureHeader = "X-Twofactor-Signature"
)

// WebhookSignature is "sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body)).
func WebhookSignature(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(timestamp))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Send posts the message.
func (w Webhook) Send(ctx context.Context, m Message) error {
	body, err := json.Marshal(map[string]string{"to": m.To, "body": m.Text})
	if err != nil {
		return fmt.Errorf("sms webhook: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("sms webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if w.Secret != "" {
		now := time.Now
		if w.Now != nil {
			now = w.Now
		}
		ts := strconv.FormatInt(now().Unix(), 10)
		req.Header.Set(TimestampHeader, ts)
		req.Header.Set(SignatureHeader, WebhookSignature(w.Secret, ts, body))
	}
	resp, err := client(w.Client).Do(req)
	if err != nil {
		return fmt.Errorf("sms webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("sms webhook: status %d", resp.StatusCode)
	}
	return nil
}

func client(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return http.DefaultClient
}
