package apptest

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twofactor/service/internal/delivery"
)

// Sent is one message a sender was asked to deliver.
type Sent struct {
	Channel string // "sms" or "email"
	delivery.Message
}

// Outbox is an in-memory sender for tests that are about the challenge
// rules rather than the delivery protocols (those have their own tests
// against real SMTP and HTTP servers).
type Outbox struct {
	mu   sync.Mutex
	sent []Sent
	// Fail makes the next sends on a channel fail, e.g. Fail["sms"] = true.
	Fail map[string]bool
}

// ErrRefused is what a failing outbox channel returns.
var ErrRefused = errors.New("outbox: delivery refused")

// Channel returns a sender that records into the outbox.
func (o *Outbox) Channel(name string) delivery.Sender {
	return delivery.SenderFunc(func(_ context.Context, m delivery.Message) error {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.Fail[name] {
			return ErrRefused
		}
		o.sent = append(o.sent, Sent{Channel: name, Message: m})
		return nil
	})
}

// SetFail makes a channel fail (or succeed again).
func (o *Outbox) SetFail(channel string, fail bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.Fail == nil {
		o.Fail = map[string]bool{}
	}
	o.Fail[channel] = fail
}

// All returns every message sent so far.
func (o *Outbox) All() []Sent {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Sent(nil), o.sent...)
}

var codeRE = regexp.MustCompile(`\b\d{6,10}\b`)

// LastCode returns the code in the newest message to `to`.
func (o *Outbox) LastCode(t testing.TB, to string) string {
	t.Helper()
	all := o.All()
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].To == to {
			if c := codeRE.FindString(all[i].Text); c != "" {
				return c
			}
		}
	}
	t.Fatalf("no code was sent to %s (outbox: %d messages)", to, len(all))
	return ""
}

// Clock is a settable clock that starts at the wall clock's now.
type Clock struct{ offset atomic.Int64 }

// NewClock returns a clock at the real now.
func NewClock() *Clock { return &Clock{} }

// Now is the wall clock plus everything Advance added.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }
