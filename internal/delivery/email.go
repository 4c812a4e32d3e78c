package delivery

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/wneessen/go-mail"
)

// SMTP sends email. smtp:// upgrades with STARTTLS when the server offers
// it; smtps:// uses implicit TLS.
type SMTP struct {
	host      string
	port      int
	implicit  bool
	user      string
	pass      string
	from      string
	tlsConfig *tls.Config
}

// NewSMTP parses smtp://user:pass@host:port or smtps://… . tlsConfig may be
// nil for the system roots.
func NewSMTP(rawURL, from string, tlsConfig *tls.Config) (*SMTP, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("SMTP_URL: %w", err)
	}
	s := &SMTP{host: u.Hostname(), from: from, tlsConfig: tlsConfig}
	switch u.Scheme {
	case "smtp":
		s.port = 587
	case "smtps":
		s.port, s.implicit = 465, true
	default:
		return nil, fmt.Errorf("SMTP_URL: scheme must be smtp or smtps, not %q", u.Scheme)
	}
	if s.host == "" {
		return nil, fmt.Errorf("SMTP_URL: no host")
	}
	if p := u.Port(); p != "" {
		if s.port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("SMTP_URL: port: %w", err)
		}
	}
	if u.User != nil {
		s.user = u.User.Username()
		s.pass, _ = u.User.Password()
	}
	if from == "" {
		return nil, fmt.Errorf("EMAIL_FROM is required with SMTP_URL")
	}
	return s, nil
}

// Send delivers m with a plain-text and an HTML part.
func (s *SMTP) Send(ctx context.Context, m Message) error {
	msg := mail.NewMsg()
	if err := msg.From(s.from); err != nil {
		return fmt.Errorf("smtp: from: %w", err)
	}
	if err := msg.To(m.To); err != nil {
		return fmt.Errorf("smtp: to: %w", err)
	}
	msg.Subject(m.Subject)
	msg.SetBodyString(mail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(mail.TypeTextHTML, m.HTML)
	}
	opts := []mail.Option{mail.WithPort(s.port)}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.tlsConfig != nil {
		tlsConfig = s.tlsConfig.Clone()
	}
	if tlsConfig.ServerName == "" {
		// STARTTLS hands the config to tls.Client as is, which refuses to
		// verify a certificate without a name to check it against.
		tlsConfig.ServerName = s.host
	}
	opts = append(opts, mail.WithTLSConfig(tlsConfig))
	if deadline, ok := ctx.Deadline(); ok {
		// go-mail applies ctx to the dial only; each later command is bound
		// by its own timeout (15s by default). Clamp that to what is left,
		// so a server that stops answering cannot outlast the caller.
		opts = append(opts, mail.WithTimeout(max(time.Until(deadline), time.Millisecond)))
	}
	if s.implicit {
		opts = append(opts, mail.WithSSL())
	} else {
		opts = append(opts, mail.WithTLSPolicy(mail.TLSOpportunistic))
	}
	if s.user != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover), mail.WithUsername(s.user), mail.WithPassword(s.pass))
	}
	c, err := mail.NewClient(s.host, opts...)
	if err != nil {
		return fmt.Errorf("smtp: %w", err)
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("smtp %s: %w", net.JoinHostPort(s.host, strconv.Itoa(s.port)), err)
	}
	return nil
}
