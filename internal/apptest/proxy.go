package apptest

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/store"
)

// Proxy forwards TCP connections to a backend until cut. Tests use it to
// take Redis away from one app: the machine's Redis is shared by parallel
// tests, so stopping it is not an option.
type Proxy struct {
	t       testing.TB
	Addr    string
	backend func() (net.Conn, error)

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]bool
}

// NewProxy listens on a free loopback port and forwards to backend.
func NewProxy(t testing.TB, backend string) *Proxy {
	t.Helper()
	return NewDialProxy(t, func() (net.Conn, error) { return net.DialTimeout("tcp", backend, 5*time.Second) })
}

// NewDialProxy is NewProxy for a backend reached by dial, such as the
// in-process Redis, which has no TCP port.
func NewDialProxy(t testing.TB, dial func() (net.Conn, error)) *Proxy {
	t.Helper()
	p := &Proxy{t: t, backend: dial, conns: map[net.Conn]bool{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = l.Addr().String()
	p.serve(l)
	t.Cleanup(p.Cut)
	return p
}

// RedisThroughProxy is a Start tweak that routes the app's Redis through a
// new proxy and stores it in *p.
func RedisThroughProxy(t testing.TB, p **Proxy) func(*app.Options) {
	return func(o *app.Options) {
		t.Helper()
		orig := o.Redis.Options()
		*p = NewDialProxy(t, func() (net.Conn, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if orig.Dialer != nil {
				return orig.Dialer(ctx, orig.Network, orig.Addr)
			}
			return (&net.Dialer{}).DialContext(ctx, "tcp", orig.Addr)
		})
		client := redis.NewClient(&redis.Options{
			Addr: (*p).Addr, DB: orig.DB, Username: orig.Username, Password: orig.Password, Protocol: orig.Protocol,
			// One dial per attempt keeps the outage short; what fails
			// closed is the service, whatever the client's retries.
			DialerRetries: 1,
		})
		t.Cleanup(func() { _ = client.Close() })
		o.Redis = &store.Redis{Client: client}
	}
}

func (p *Proxy) serve(l net.Listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.pipe(c)
		}
	}()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l == nil {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *Proxy) pipe(c net.Conn) {
	b, err := p.backend()
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(c) || !p.track(b) {
		_ = c.Close()
		_ = b.Close()
		return
	}
	go func() { _, _ = io.Copy(b, c); _ = b.Close() }()
	_, _ = io.Copy(c, b)
	_ = c.Close()
}

// Cut stops listening and drops every live connection: to the app, the
// backend is gone.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		_ = p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Restore listens again on the same address.
func (p *Proxy) Restore() {
	p.t.Helper()
	l, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("proxy: listen again on %s: %v", p.Addr, err)
	}
	p.serve(l)
}
