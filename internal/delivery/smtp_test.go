package delivery_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/twofactor/service/internal/delivery"
)

const testCode = "482913"

// codeMessage is what the challenge service sends by email.
var codeMessage = delivery.Message{
	To:      "jane@example.com",
	Subject: testCode + " is your verification code",
	Text:    "Your verification code is " + testCode + ".\n",
	HTML:    "<p>Your verification code is <strong>" + testCode + "</strong></p>",
}

// selfSigned returns a server certificate for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "smtp test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// received is one mail the test server accepted.
type received struct {
	From, To string
	TLS      bool
	User     string // authenticated user, if any
	Pass     string
	Data     []byte
}

// mailServer is an in-process SMTP server that records what it receives.
type mailServer struct {
	Addr string

	mu   sync.Mutex
	mail []received
}

func (m *mailServer) Received() []received {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]received(nil), m.mail...)
}

type session struct {
	srv  *mailServer
	conn *smtp.Conn
	cur  received
}

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if user != "mailer" || pass != "s3cret" {
			return errors.New("bad credentials")
		}
		s.cur.User, s.cur.Pass = user, pass
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error { s.cur.From = from; return nil }
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error   { s.cur.To = to; return nil }
func (s *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.Data = b
	_, s.cur.TLS = s.conn.TLSConnectionState()
	s.srv.mu.Lock()
	s.srv.mail = append(s.srv.mail, s.cur)
	s.srv.mu.Unlock()
	return nil
}
func (s *session) Reset()        { s.cur = received{User: s.cur.User, Pass: s.cur.Pass} }
func (s *session) Logout() error { return nil }

// startSMTP runs a server on 127.0.0.1. starttls offers STARTTLS with
// cert; implicit wraps the listener in TLS (smtps).
func startSMTP(t *testing.T, cert *tls.Certificate, implicit bool) *mailServer {
	t.Helper()
	ms := &mailServer{}
	be := smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{srv: ms, conn: c}, nil
	})
	srv := smtp.NewServer(be)
	srv.Domain = "localhost"
	srv.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected in some tests
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	var l net.Listener
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		cfg := &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
		if implicit {
			l = tls.NewListener(l, cfg)
		} else {
			srv.TLSConfig = cfg
		}
	}
	ms.Addr = l.Addr().String()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ms
}

// parsed is a received mail taken apart.
type parsed struct {
	From, To, Subject string
	Parts             map[string]string // media type → decoded body
}

func parseMail(t *testing.T, data []byte) parsed {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("received mail does not parse: %v\n%s", err, data)
	}
	var dec mime.WordDecoder
	subject, err := dec.DecodeHeader(msg.Header.Get("Subject"))
	if err != nil {
		t.Fatalf("subject: %v", err)
	}
	p := parsed{From: msg.Header.Get("From"), To: msg.Header.Get("To"), Subject: subject, Parts: map[string]string{}}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type: %v", err)
	}
	if !strings.HasPrefix(mt, "multipart/") {
		t.Fatalf("Content-Type %s, want multipart", mt)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		var body io.Reader = part // NextPart already decodes quoted-printable
		if part.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
			body = quotedprintable.NewReader(part)
		}
		b, err := io.ReadAll(body)
		if err != nil {
			t.Fatalf("part: %v", err)
		}
		pmt, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		p.Parts[pmt] = string(b)
	}
	return p
}

func newSMTP(t *testing.T, url string, cfg *tls.Config) *delivery.SMTP {
	t.Helper()
	s, err := delivery.NewSMTP(url, "2FA <no-reply@example.com>", cfg)
	if err != nil {
		t.Fatalf("NewSMTP(%s): %v", url, err)
	}
	return s
}

func sendCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSMTPDelivers(t *testing.T) {
	t.Parallel()
	cert, pool := selfSigned(t)
	trust := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	for _, tc := range []struct {
		name     string
		cert     *tls.Certificate
		implicit bool
		scheme   string
		userinfo string
		query    string
		wantTLS  bool
		wantUser string
	}{
		{name: "STARTTLS when offered, with AUTH", cert: &cert, scheme: "smtp", userinfo: "mailer:s3cret@", wantTLS: true, wantUser: "mailer"},
		{name: "STARTTLS when offered, no AUTH", cert: &cert, scheme: "smtp", wantTLS: true},
		{name: "smtps implicit TLS with AUTH", cert: &cert, implicit: true, scheme: "smtps", userinfo: "mailer:s3cret@", wantTLS: true, wantUser: "mailer"},
		{name: "plain with tls=none", scheme: "smtp", query: "?tls=none"},
		{name: "plain with tls=none even if STARTTLS is offered", cert: &cert, scheme: "smtp", query: "?tls=none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startSMTP(t, tc.cert, tc.implicit)
			s := newSMTP(t, tc.scheme+"://"+tc.userinfo+srv.Addr+tc.query, trust)
			if err := s.Send(sendCtx(t), codeMessage); err != nil {
				t.Fatalf("Send: %v", err)
			}
			got := srv.Received()
			if len(got) != 1 {
				t.Fatalf("server received %d mails, want 1", len(got))
			}
			r := got[0]
			if r.From != "no-reply@example.com" || r.To != "jane@example.com" {
				t.Errorf("envelope from %q to %q", r.From, r.To)
			}
			if r.TLS != tc.wantTLS {
				t.Errorf("TLS = %v, want %v", r.TLS, tc.wantTLS)
			}
			if r.User != tc.wantUser {
				t.Errorf("authenticated as %q, want %q", r.User, tc.wantUser)
			}
			m := parseMail(t, r.Data)
			if !strings.Contains(m.From, "no-reply@example.com") || !strings.Contains(m.To, "jane@example.com") {
				t.Errorf("headers From %q To %q", m.From, m.To)
			}
			if !strings.Contains(m.Subject, testCode) {
				t.Errorf("subject %q does not hold the code", m.Subject)
			}
			if !strings.Contains(m.Parts["text/plain"], testCode) {
				t.Errorf("text/plain part %q does not hold the code", m.Parts["text/plain"])
			}
			if !strings.Contains(m.Parts["text/html"], "<strong>"+testCode+"</strong>") {
				t.Errorf("text/html part %q does not hold the code", m.Parts["text/html"])
			}
			if len(m.Parts) != 2 {
				t.Errorf("parts %v, want text/plain and text/html", keys(m.Parts))
			}
		})
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A certificate the client does not trust fails the send: no fallback to
// plain text once STARTTLS is offered.
func TestSMTPUntrustedCertificateFails(t *testing.T) {
	t.Parallel()
	cert, _ := selfSigned(t)
	_, otherPool := selfSigned(t)
	for _, scheme := range []string{"smtp", "smtps"} {
		t.Run(scheme, func(t *testing.T) {
			t.Parallel()
			srv := startSMTP(t, &cert, scheme == "smtps")
			s := newSMTP(t, scheme+"://mailer:s3cret@"+srv.Addr, &tls.Config{RootCAs: otherPool, MinVersion: tls.VersionTLS12})
			err := s.Send(sendCtx(t), codeMessage)
			if err == nil {
				t.Fatal("Send succeeded with an untrusted certificate")
			}
			if strings.Contains(err.Error(), testCode) {
				t.Errorf("error shows the code: %v", err)
			}
			if n := len(srv.Received()); n != 0 {
				t.Errorf("server received %d mails", n)
			}
		})
	}
}

// With a user in the URL and a server that offers no TLS, the password is
// not sent in the clear: the send fails instead.
func TestSMTPNoCredentialsInTheClear(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, nil, false)
	s := newSMTP(t, "smtp://mailer:s3cret@"+srv.Addr, nil)
	if err := s.Send(sendCtx(t), codeMessage); err == nil {
		t.Fatal("Send with credentials over plain text succeeded")
	}
	if n := len(srv.Received()); n != 0 {
		t.Errorf("server received %d mails", n)
	}
}

// silentServer accepts connections and never says a word.
func silentServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return l.Addr().String()
}

// A server that never answers fails the send once the context's deadline
// passes, not after the mail library's own, longer timeout.
func TestSMTPHonoursDeadline(t *testing.T) {
	t.Parallel()
	for _, scheme := range []string{"smtp", "smtps"} {
		t.Run(scheme, func(t *testing.T) {
			t.Parallel()
			s := newSMTP(t, scheme+"://"+silentServer(t), nil)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Send(ctx, codeMessage) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("Send to a silent server succeeded")
				}
			case <-time.After(10 * time.Second):
				// Far past the deadline: the send ignores it.
				t.Fatal("Send did not return after its context's deadline")
			}
		})
	}
}

// TestEmailDowngrade is issue 8, finding 9: smtp:// used opportunistic
// TLS, so a network attacker who strips STARTTLS from the server's EHLO
// read the codes. A server (or attacker) that offers no STARTTLS now gets
// no mail under smtp://; plain text takes an explicit ?tls=none.
func TestEmailDowngrade(t *testing.T) {
	t.Parallel()
	srv := startSMTP(t, nil, false) // what the client sees once STARTTLS is stripped
	err := newSMTP(t, "smtp://"+srv.Addr, nil).Send(sendCtx(t), codeMessage)
	if err == nil {
		t.Fatal("smtp:// sent to a server without STARTTLS")
	}
	if strings.Contains(err.Error(), testCode) {
		t.Errorf("error shows the code: %v", err)
	}
	if n := len(srv.Received()); n != 0 {
		t.Fatalf("server received %d mails in plain text under smtp://", n)
	}

	plain := newSMTP(t, "smtp://"+srv.Addr+"?tls=none", nil)
	if !plain.Plaintext() {
		t.Error("?tls=none does not report Plaintext, so no startup warning")
	}
	if err := plain.Send(sendCtx(t), codeMessage); err != nil {
		t.Fatalf("smtp://…?tls=none: %v", err)
	}
	if got := srv.Received(); len(got) != 1 || got[0].TLS {
		t.Fatalf("with tls=none the server received %+v, want one mail without TLS", got)
	}
}

func TestNewSMTPParsesURL(t *testing.T) {
	for _, tc := range []struct {
		url, from string
		ok        bool
		plain     bool
	}{
		{"smtp://mail.example.com", "a@example.com", true, false},
		{"smtps://u:p@mail.example.com:2465", "a@example.com", true, false},
		{"smtp://u:p@mail.example.com:587", "a@example.com", true, false},
		{"smtp://mail.example.com:25?tls=none", "a@example.com", true, true},
		{"http://mail.example.com", "a@example.com", false, false},
		{"smtp://", "a@example.com", false, false},
		{"smtp://mail.example.com:port", "a@example.com", false, false},
		{"smtp://mail.example.com", "", false, false},
		{"smtp://mail.example.com?tls=opportunistic", "a@example.com", false, false},
		{"smtp://mail.example.com?tls=", "a@example.com", true, false},
		{"smtp://mail.example.com?tls=NONE", "a@example.com", false, false},
		{"smtps://mail.example.com?tls=none", "a@example.com", false, false},
		{"smtp://mail.example.com?tls=none&tls=none", "a@example.com", false, false},
		{"smtp://mail.example.com?tls=none&x=1", "a@example.com", false, false},
		{"smtp://mail.example.com?starttls=false", "a@example.com", false, false},
		// A password is never sent in the clear, even when asked.
		{"smtp://u:s3cret@mail.example.com?tls=none", "a@example.com", false, false},
	} {
		s, err := delivery.NewSMTP(tc.url, tc.from, nil)
		if (err == nil) != tc.ok {
			t.Errorf("NewSMTP(%q, %q) error %v, want ok=%v", tc.url, tc.from, err, tc.ok)
			continue
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("NewSMTP(%q) error shows the password: %v", tc.url, err)
		}
		if err == nil && s.Plaintext() != tc.plain {
			t.Errorf("NewSMTP(%q).Plaintext() = %v, want %v", tc.url, s.Plaintext(), tc.plain)
		}
	}
}
