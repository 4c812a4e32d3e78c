package feed_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/testenv"
)

// Redis goes away (as in a restart) while a subscriber listens: the events
// written meanwhile, whose notices are lost, still reach it, and so do
// those written once Redis is back. The poll is off, so it is the hub's
// own recovery that delivers them. The machine's Redis is shared, so what
// goes away is a proxy between the app and Redis.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	var proxy *tcpProxy
	s := apptest.Start(t, noPoll, func(o *app.Options) {
		opts := o.Redis.Client.Options()
		proxy = newTCPProxy(t, opts.Addr)
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		rdb, err := store.OpenRedis(ctx, fmt.Sprintf("redis://%s/%d", proxy.addr, opts.DB))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rdb.Close() })
		o.Redis = rdb
	})
	co := testenv.Company(t)
	c := connect(t, s, admin(co), wsOptions{})
	c.primed(s, co, "1")

	proxy.cut()
	during := writeRaw(t, s, co, 3, 10, true) // announcing fails: Redis is away
	if got := ids(c.edges("1", len(during))); !slices.Equal(got, during) {
		t.Fatalf("during the outage the subscriber got %v, want %v", got, during)
	}
	proxy.restore()
	for i := range 3 {
		after := writeRaw(t, s, co, 1, 10, true)
		if got := ids(c.edges("1", 1)); !slices.Equal(got, after) {
			t.Fatalf("event %d after the outage: got %v, want %v", i, got, after)
		}
	}
}

// tcpProxy forwards connections to a backend until cut.
type tcpProxy struct {
	t       *testing.T
	addr    string
	backend string

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]bool
}

func newTCPProxy(t *testing.T, backend string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{t: t, backend: backend, conns: map[net.Conn]bool{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = l.Addr().String()
	p.serve(l)
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) serve(l net.Listener) {
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

func (p *tcpProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l == nil {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *tcpProxy) pipe(c net.Conn) {
	b, err := net.DialTimeout("tcp", p.backend, 5*time.Second)
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

// cut stops listening and drops every live connection.
func (p *tcpProxy) cut() {
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

// restore listens again on the same address.
func (p *tcpProxy) restore() {
	p.t.Helper()
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
	}
	p.serve(l)
}
