package graph

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/feed"
)

// Websocket close codes of the graphql-transport-ws protocol.
const (
	closeForbidden   = 4403
	closeInitTimeout = 4408
)

// MaxWebsocketMessage is the largest websocket message read, the same as
// an HTTP body: a larger one closes the connection with 1009 (message too
// big) before anything in it runs. gqlgen's default is 1 MB.
const MaxWebsocketMessage = 64 << 10

// WebsocketOptions configure live subscriptions.
type WebsocketOptions struct {
	// Verify checks a bearer token from connection_init.
	Verify func(token string) (auth.Caller, error)
	// WriteTimeout cuts off a peer that stops reading.
	WriteTimeout time.Duration
	// InitTimeout is how long a connection may wait for connection_init.
	InitTimeout time.Duration
	// PingInterval is how often idle peers are pinged.
	PingInterval time.Duration
}

func (o WebsocketOptions) transport() transport.Websocket {
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.InitTimeout <= 0 {
		o.InitTimeout = 5 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 15 * time.Second
	}
	readLimit := int64(MaxWebsocketMessage)
	return transport.Websocket{
		Implementation: websocketImpl{
			// httpapi has already checked the Origin against ALLOWED_ORIGINS.
			inner:        transport.CoderWebsocketImplementation{AcceptOptions: websocket.AcceptOptions{InsecureSkipVerify: true}},
			writeTimeout: o.WriteTimeout,
			pingInterval: o.PingInterval,
		},
		InitTimeout:      o.InitTimeout,
		PayloadReadLimit: &readLimit,
		// Keep-alives and pings are websocketConn's, on a timer: gqlgen's
		// own take a goroutine per connection each, for as long as it
		// lives (KeepAlivePingInterval, PingPongInterval).
		InitFunc: func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
			c, err := o.authenticate(ctx, p)
			if err != nil {
				ctx = transport.WithWebsocketCloseCode(ctx, closeForbidden)
				return transport.AppendCloseReason(ctx, "Forbidden"), nil, err
			}
			return context.WithValue(auth.WithCaller(ctx, c), onWebsocket{}, &socket{}), nil, nil
		},
	}
}

// authenticate takes the token from connection_init's payload, or else the
// caller that the HTTP layer found in the upgrade's Authorization header.
func (o WebsocketOptions) authenticate(ctx context.Context, p transport.InitPayload) (auth.Caller, error) {
	if h := p.Authorization(); h != "" {
		token := strings.TrimSpace(h)
		if scheme, rest, ok := strings.Cut(token, " "); ok && strings.EqualFold(scheme, "Bearer") {
			token = strings.TrimSpace(rest)
		}
		return o.Verify(token)
	}
	if c, err := auth.FromContext(ctx); err == nil {
		return c, nil
	}
	return auth.Caller{}, errors.New("send {\"Authorization\": \"Bearer <token>\"} in connection_init")
}

// websocketImpl adds what gqlgen's adapter lacks: a write deadline, so a
// peer that never reads cannot pin a goroutine forever, and the protocol's
// 4408 close code when connection_init does not arrive in time.
type websocketImpl struct {
	inner        transport.CoderWebsocketImplementation
	writeTimeout time.Duration
	pingInterval time.Duration
}

func (w websocketImpl) Accept(rw http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	c, err := w.inner.Accept(rw, r, o)
	if err != nil {
		return nil, err
	}
	conn := &websocketConn{WebsocketConn: c, writeTimeout: w.writeTimeout, pingInterval: w.pingInterval}
	conn.lastRead.Store(time.Now().UnixNano())
	conn.pinger = time.AfterFunc(w.pingInterval, conn.ping)
	return conn, nil
}

type websocketConn struct {
	transport.WebsocketConn
	writeTimeout time.Duration
	pingInterval time.Duration
	lastRead     atomic.Int64 // unix nanoseconds of the last message read
	unanswered   atomic.Int64 // messages written since then
	pinger       *time.Timer
	closed       atomic.Bool
}

// ping keeps the connection alive and finds dead peers without a
// goroutine of its own: graphql-transport-ws peers are pinged and one
// that has sent nothing (not even a pong) for two intervals is dropped;
// legacy graphql-ws peers get a keep-alive. A peer with a backlog of
// events to read may see the ping late: while it has one, a write that
// times out is what drops it, not a late pong.
func (c *websocketConn) ping() {
	if c.closed.Load() {
		return
	}
	msg := map[string]string{"type": "ka"}
	if c.Subprotocol() == "graphql-transport-ws" {
		if time.Since(time.Unix(0, c.lastRead.Load())) > 2*c.pingInterval && c.unanswered.Load() < backlog {
			_ = c.Close()
			return
		}
		msg["type"] = "ping"
	}
	if err := c.WriteJSON(msg); err != nil {
		return
	}
	c.pinger.Reset(c.pingInterval)
}

func (c *websocketConn) NextReader() (int, io.Reader, error) {
	t, r, err := c.WebsocketConn.NextReader()
	if err == nil {
		c.lastRead.Store(time.Now().UnixNano())
		c.unanswered.Store(0)
	}
	return t, r, err
}

func (c *websocketConn) Close() error {
	c.closed.Store(true)
	c.pinger.Stop()
	return c.WebsocketConn.Close()
}

// backlog is how many messages written since the peer last spoke make
// its silence a sign that it is busy reading rather than gone.
const backlog = 256

func (c *websocketConn) WriteJSON(v any) error {
	c.unanswered.Add(1)
	t := time.AfterFunc(c.writeTimeout, func() { _ = c.WebsocketConn.Close() })
	defer t.Stop()
	return c.WebsocketConn.WriteJSON(v)
}

func (c *websocketConn) WriteClose(code int, msg string) error {
	if code == transport.WebsocketCloseProtocolError && strings.Contains(msg, "initialisation timeout") {
		code = closeInitTimeout
	}
	return c.WebsocketConn.WriteClose(code, msg)
}

func (c *websocketConn) SetReadLimit(limit int64) {
	if l, ok := c.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(limit)
	}
}

func (c *websocketConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}

// onWebsocket marks contexts of websocket connections, the only transport
// with a message for an error that ends a subscription.
type onWebsocket struct{}

// endStream records why a live stream ended early. The stream's goroutine
// calls it; streamEnds hands the error to the transport from the
// transport's own goroutine. Calling transport.AddSubscriptionError here
// instead would race with gqlgen reading the errors when the connection
// closes at the same moment, and outside websockets (SSE) it dereferences
// a nil pointer and kills the process.
func (r *Resolver) endStream(ctx context.Context, err error) {
	if end, ok := ctx.Value(streamEndKey{}).(*streamEnd); ok {
		end.set(r.streamError(ctx, err))
	}
}

type streamEndKey struct{}

// streamEnd holds the error a subscription ended with until its response
// handler hands it out, once.
type streamEnd struct {
	mu  sync.Mutex
	err *gqlerror.Error
}

func (e *streamEnd) set(err *gqlerror.Error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.err = err
}

func (e *streamEnd) take() *gqlerror.Error {
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.err
	e.err = nil
	return err
}

// streamEnds is an operation interceptor: when a subscription's responses
// run out and endStream left an error, a websocket sends the protocol's
// error message, and other transports get the error as a last response.
func streamEnds(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	oc := graphql.GetOperationContext(ctx)
	if oc.Operation == nil || oc.Operation.Operation != ast.Subscription {
		return next(ctx)
	}
	end := &streamEnd{}
	responses := next(context.WithValue(ctx, streamEndKey{}, end))
	return func(ctx context.Context) *graphql.Response {
		if resp := responses(ctx); resp != nil {
			return resp
		}
		err := end.take()
		switch {
		case err == nil:
			return nil
		case ctx.Value(onWebsocket{}) != nil:
			// This is the transport's goroutine, which reads the errors
			// once the responses end.
			transport.AddSubscriptionError(ctx, err)
			return nil
		default:
			return &graphql.Response{Errors: gqlerror.List{err}}
		}
	}
}

// MaxSubscriptionsPerSocket bounds the streams one websocket may hold at
// once: each costs goroutines and a feed subscriber, and one socket has
// no need for more.
const MaxSubscriptionsPerSocket = 10

// socket is one websocket connection's state.
type socket struct{ streams atomic.Int32 }

// subscriptionsPerSocket refuses a subscription past
// MaxSubscriptionsPerSocket on its websocket, and counts one down when
// its stream ends.
func subscriptionsPerSocket(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	conn, ok := ctx.Value(onWebsocket{}).(*socket)
	oc := graphql.GetOperationContext(ctx)
	if !ok || oc.Operation == nil || oc.Operation.Operation != ast.Subscription {
		return next(ctx)
	}
	if conn.streams.Add(1) > MaxSubscriptionsPerSocket {
		conn.streams.Add(-1)
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{{
			Message:    fmt.Sprintf("a websocket may hold at most %d subscriptions at once", MaxSubscriptionsPerSocket),
			Extensions: map[string]any{"code": "TOO_MANY_SUBSCRIPTIONS"},
		}}})
	}
	var once sync.Once
	responses := next(ctx)
	return func(ctx context.Context) *graphql.Response {
		resp := responses(ctx)
		if resp == nil {
			once.Do(func() { conn.streams.Add(-1) })
		}
		return resp
	}
}

// expiredOnWebsocket refuses operations on a websocket whose token has
// expired since connection_init. The token is checked once per connection,
// and the socket also carries queries and mutations: without this, a
// connection opened with a token would run them for as long as it stays
// open. (Subscriptions already running end on their own; see feed.Stream.)
func expiredOnWebsocket(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if ctx.Value(onWebsocket{}) != nil {
		if c, err := auth.FromContext(ctx); err == nil && !c.ExpiresAt.IsZero() && !time.Now().Before(c.ExpiresAt) {
			return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{{
				Message:    feed.ErrExpired.Error(),
				Extensions: map[string]any{"code": CodeTokenExpired},
			}}})
		}
	}
	return next(ctx)
}
