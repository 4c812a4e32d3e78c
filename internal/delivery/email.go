package delivery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/wneessen/go-mail"
)

// SMTP sends email. smtp:// requires STARTTLS and smtps:// uses implicit
// TLS; only smtp://…?tls=none sends in plain text.
type SMTP struct {
	host      string
	port      int
	policy    tlsMode
	user      string
	pass      string
	from      string
	tlsConfig *tls.Config
}

// tlsMode is how a connection is protected.
type tlsMode int

const (
	startTLS    tlsMode = iota // smtp://: STARTTLS, or no mail
	implicitTLS                // smtps://
	plainText                  // smtp://…?tls=none
)

// NewSMTP parses smtp://user:pass@host:port, smtps://… or
// smtp://host:port?tls=none. tlsConfig may be nil for the system roots.
func NewSMTP(rawURL, from string, tlsConfig *tls.Config) (*SMTP, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url's error quotes the URL, password and all.
		return nil, errors.New("SMTP_URL: not a URL")
	}
	s := &SMTP{host: u.Hostname(), from: from, tlsConfig: tlsConfig}
	if s.port, s.policy, err = smtpMode(u); err != nil {
		return nil, err
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
	if s.user != "" && s.policy == plainText {
		return nil, errors.New("SMTP_URL: tls=none with a user would send the password in the clear")
	}
	if from == "" {
		return nil, fmt.Errorf("EMAIL_FROM is required with SMTP_URL")
	}
	return s, nil
}

// smtpMode reads the scheme and the tls parameter, the only one allowed.
func smtpMode(u *url.URL) (port int, mode tlsMode, err error) {
	q := u.Query()
	tlsParam := q.Get("tls")
	q.Del("tls")
	switch {
	case len(q) > 0 || len(u.Query()["tls"]) > 1:
		return 0, 0, errors.New("SMTP_URL: the only query parameter is tls=none, once")
	case u.Scheme == "smtp" && tlsParam == "":
		return 587, startTLS, nil
	case u.Scheme == "smtp" && tlsParam == "none":
		return 587, plainText, nil
	case u.Scheme == "smtps" && tlsParam == "":
		return 465, implicitTLS, nil
	case u.Scheme != "smtp" && u.Scheme != "smtps":
		return 0, 0, fmt.Errorf("SMTP_URL: scheme must be smtp or smtps, not %q", u.Scheme)
	}
	return 0, 0, errors.New("SMTP_URL: tls may only be none, and only with smtp://")
}

// Plaintext reports whether mail goes unencrypted (?tls=none), which the
// service warns about at startup.
func (s *SMTP) Plaintext() bool { return s.policy == plainText }

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
	switch s.policy {
	case implicitTLS:
		opts = append(opts, mail.WithSSL())
	case plainText:
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	default:
		// Mandatory: a server, or a man in the middle, that does not offer
		// STARTTLS gets no mail, so the code is never sent in the clear.
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
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
