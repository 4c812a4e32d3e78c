package feed_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/feed"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/testenv"
)

// A subscription whose connection goes silent without an error (the
// Redis host vanished, or a NAT dropped the flow: no RST, no FIN) is
// found out by the hub's PING: it reports not live, dials again once
// Redis is reachable, reports live once resubscribed, and notices flow.
// A proxy between the hub and Redis stops forwarding while keeping both
// TCP connections open. It sits in the client's dialer, so on a Cluster
// it also carries the connections to the nodes the redirects name.
func TestHalfOpenSubscriptionIsDetected(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		redis func(t *testing.T) *store.Redis
	}{
		{"TEST_REDIS_URL or embedded", func(t *testing.T) *store.Redis { return testenv.Open(t).Redis }},
		{"cluster", func(t *testing.T) *store.Redis { return testenv.Cluster(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			direct := tc.redis(t).UniversalClient
			fr := newFreezer(t)
			hub := feed.NewHub(fr.client(t, direct), nil, nil, feed.Options{Idle: 300 * time.Millisecond})
			t.Cleanup(hub.Close)
			lives := make(chan bool, 64)
			hub.OnLive(func(live bool) {
				select {
				case lives <- live:
				default:
					t.Errorf("OnLive callback: buffer full")
				}
			})
			co := testenv.Company(t)
			got := make(chan audit.Notice, 64)
			t.Cleanup(hub.Watch(co, func(n audit.Notice) { got <- n }))

			// Idle longer than the PING period: each PONG keeps it live.
			publishDirect(t, direct, hub, co, "1")
			expectNotice(t, got, 1)
			time.Sleep(2 * time.Second)
			publishDirect(t, direct, hub, co, "2")
			expectNotice(t, got, 2)
			if len(lives) > 0 {
				t.Fatalf("while Redis answered the hub reported live=%v", <-lives)
			}

			fr.freeze()
			waitLive(t, lives, false)
			fr.thaw()
			waitLive(t, lives, true)
			publishDirect(t, direct, hub, co, "3")
			expectNotice(t, got, 3)
		})
	}
}

func publishDirect(t *testing.T, rdb redis.UniversalClient, hub *feed.Hub, company, payload string) {
	t.Helper()
	publish := rdb.Publish
	if _, ok := rdb.(*redis.ClusterClient); ok {
		publish = rdb.SPublish
	}
	if err := publish(t.Context(), feed.ChannelOf(hub, company), payload).Err(); err != nil {
		t.Fatal(err)
	}
}

func expectNotice(t *testing.T, got <-chan audit.Notice, id int64) {
	t.Helper()
	select {
	case n := <-got:
		if n.ID != id {
			t.Fatalf("got notice %+v, want id %d", n, id)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("notice %d did not arrive within 30s", id)
	}
}

// waitLive waits until the hub reports want, skipping other reports.
func waitLive(t *testing.T, lives <-chan bool, want bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case live := <-lives:
			if live == want {
				return
			}
		case <-deadline:
			t.Fatalf("the hub did not report live=%v within 30s", want)
		}
	}
}

// freezer forwards each connection the client dials through a loopback
// TCP pair. Frozen, it stops forwarding on every open connection for
// good, keeping them open, and refuses new ones; thawed, new ones work.
type freezer struct {
	mu     sync.Mutex
	cut    chan struct{} // closed by freeze; a new one per thaw
	frozen bool
	conns  []net.Conn
}

func newFreezer(t *testing.T) *freezer {
	t.Helper()
	f := &freezer{cut: make(chan struct{})}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.conns {
			_ = c.Close()
		}
	})
	return f
}

// client returns a client like rdb whose connections go through f.
func (f *freezer) client(t *testing.T, rdb redis.UniversalClient) redis.UniversalClient {
	t.Helper()
	var c redis.UniversalClient
	switch r := rdb.(type) {
	case *redis.ClusterClient:
		opts := *r.Options()
		opts.Dialer = f.through(opts.Dialer)
		c = redis.NewClusterClient(&opts)
	case *redis.Client:
		opts := *r.Options()
		opts.Dialer = f.through(opts.Dialer)
		opts.PushNotificationProcessor = nil // r's own, with its handlers
		c = redis.NewClient(&opts)
	default:
		t.Fatalf("unexpected Redis client %T", rdb)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

type dialer = func(ctx context.Context, network, addr string) (net.Conn, error)

func (f *freezer) through(orig dialer) dialer {
	if orig == nil {
		orig = (&net.Dialer{}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		f.mu.Lock()
		frozen, cut := f.frozen, f.cut
		f.mu.Unlock()
		if frozen {
			return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("frozen: host unreachable")}
		}
		backend, err := orig(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		near, far, err := loopbackPair(ctx)
		if err != nil {
			_ = backend.Close()
			return nil, err
		}
		f.mu.Lock()
		f.conns = append(f.conns, backend, near, far)
		f.mu.Unlock()
		go forward(backend, far, cut)
		go forward(far, backend, cut)
		return near, nil
	}
}

// loopbackPair returns both ends of a new loopback TCP connection.
func loopbackPair(ctx context.Context) (net.Conn, net.Conn, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	defer l.Close()
	near, err := (&net.Dialer{}).DialContext(ctx, "tcp", l.Addr().String())
	if err != nil {
		return nil, nil, err
	}
	far, err := l.Accept()
	if err != nil {
		_ = near.Close()
		return nil, nil, err
	}
	return near, far, nil
}

// forward copies src to dst until either closes or cut is closed; once
// cut it drops what it read and leaves both open, as a lost flow would.
func forward(dst, src net.Conn, cut <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-cut:
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			_ = dst.Close()
			return
		}
	}
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = true
	close(f.cut)
}

func (f *freezer) thaw() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = false
	f.cut = make(chan struct{})
}
