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
	// gate is set for a Cluster: the nodes announce their own addresses,
	// so the app dials them directly through Dial, which Cut closes.
	gate bool
	down bool
	// healed, for a gate, waits until the client reaches Redis again.
	healed func()

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
		if cc, ok := o.Redis.UniversalClient.(*redis.ClusterClient); ok {
			o.Redis = clusterThroughGate(t, cc, p)
			return
		}
		orig := o.Redis.UniversalClient.(*redis.Client).Options()
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
		o.Redis = &store.Redis{UniversalClient: client}
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
	p.down = true
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
	if p.gate {
		p.mu.Lock()
		p.down = false
		p.mu.Unlock()
		p.healed()
		return
	}
	l, err := net.Listen("tcp", p.Addr)
	if err != nil {
		p.t.Fatalf("proxy: listen again on %s: %v", p.Addr, err)
	}
	p.serve(l)
}

// clusterThroughGate returns a Cluster client like cc whose every
// connection goes through a gate that Cut closes, and stores the gate in
// *p.
func clusterThroughGate(t testing.TB, cc *redis.ClusterClient, p **Proxy) *store.Redis {
	t.Helper()
	g := &Proxy{t: t, gate: true, conns: map[net.Conn]bool{}}
	opts := *cc.Options()
	opts.Dialer = g.dial
	opts.DialerRetries = 1
	client := redis.NewClusterClient(&opts)
	t.Cleanup(func() { _ = client.Close() })
	t.Cleanup(g.Cut)
	// After failed dials go-redis keeps failing a node's new connections
	// for up to a second while it retries in the background; Restore
	// returns once every node answers, as a restarted server would.
	g.healed = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for ctx.Err() == nil {
			err := client.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error { return c.Ping(ctx).Err() })
			if err == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Errorf("proxy: the Cluster did not answer again after Restore")
	}
	*p = g
	return &store.Redis{UniversalClient: client}
}

// dial connects through the gate, or fails while it is cut.
func (p *Proxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	p.mu.Lock()
	down := p.down
	p.mu.Unlock()
	if down {
		return nil, &net.OpError{Op: "dial", Net: network, Err: io.ErrClosedPipe}
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		_ = c.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Err: io.ErrClosedPipe}
	}
	p.conns[c] = true
	return c, nil
}
