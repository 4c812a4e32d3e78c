// Package delivery sends one-time codes to people: SMS through Twilio or a
// webhook, email through SMTP, or, in embedded development mode, into the
// log. Every sender honours the context's deadline.
package delivery

import (
	"context"
	"log/slog"
)

// Message is one code message. SMS senders use Text only.
type Message struct {
	To      string // E.164 phone or email address
	Subject string
	Text    string
	HTML    string
}

// Sender delivers a message or says why it could not.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

// SenderFunc adapts a function to Sender.
type SenderFunc func(ctx context.Context, m Message) error

// Send calls f.
func (f SenderFunc) Send(ctx context.Context, m Message) error { return f(ctx, m) }

// Log writes messages to the log instead of sending them. It is for
// embedded development mode only: the message, code included, lands in the
// log, which is the point there and a leak anywhere else.
type Log struct {
	Logger  *slog.Logger
	Channel string
}

// Send logs m, marked as development delivery.
func (l Log) Send(ctx context.Context, m Message) error {
	l.Logger.WarnContext(ctx, "DEVELOPMENT DELIVERY (not sent; configure a real sender for production)",
		"channel", l.Channel, "to", m.To, "subject", m.Subject, "body", m.Text)
	return nil
}
