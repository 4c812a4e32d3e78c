// Package feed streams a company's audit log live to subscribers on every
// instance. Redis pub/sub only says "company X's log grew"; each instance
// then reads the new rows from the database, in id order, once for all of
// its subscribers. So a lost notice delays delivery but never loses a row,
// and a client that resumes from a cursor sees no gap and no duplicate.
package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
)

// Errors that end a stream. Both tell the client to resume from its last
// cursor, which loses nothing.
var (
	ErrTooSlow  = errors.New("subscriber fell too far behind; subscribe again with after set to the last cursor received")
	ErrExpired  = errors.New("token expired; reconnect with a fresh token and after set to the last cursor received")
	ErrShutdown = errors.New("server shutting down; reconnect with after set to the last cursor received")
)

// Source reads committed audit rows.
type Source interface {
	Since(ctx context.Context, company string, after, until int64, f audit.Filter, limit int) ([]audit.Event, error)
	LastID(ctx context.Context, company string) (int64, error)
}

// Options tune a hub. Zero values take the defaults.
type Options struct {
	// Buffer is how many events may wait for one slow subscriber before
	// it is cut off.
	Buffer int
	// Poll is how often a watched company is read even without a notice,
	// to cover notices lost while Redis restarts.
	Poll time.Duration
}

const (
	defaultBuffer = 256
	defaultPoll   = 5 * time.Second
	batch         = 500
	notifyTimeout = 250 * time.Millisecond
	channelPrefix = "2fa:audit:"
)

// Hub holds the instance's Redis subscriptions and fans events out to
// local subscribers. On a single server (or behind Sentinel) that is one
// subscription for every company. On a Cluster it is sharded pub/sub
// (SSUBSCRIBE, Redis 7), so a notice goes to the one shard that owns the
// company's channel rather than to every node: one subscription per
// watched company, since a go-redis subscription stays on one node.
type Hub struct {
	rdb     redis.UniversalClient
	sharded bool
	src     Source
	log     *slog.Logger
	opts    Options

	mu        sync.Mutex
	pss       map[string]*redis.PubSub // by shardKey
	companies map[string]*company
	waiters   map[string][]chan struct{} // channel → waiting for SUBSCRIBE confirmation
	ctx       context.Context
	cancel    context.CancelFunc
	closed    bool
	wg        sync.WaitGroup
}

// NewHub returns a hub; it connects lazily, on the first subscriber.
func NewHub(rdb redis.UniversalClient, src Source, log *slog.Logger, opts Options) *Hub {
	if opts.Buffer <= 0 {
		opts.Buffer = defaultBuffer
	}
	if opts.Poll <= 0 {
		opts.Poll = defaultPoll
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	_, sharded := rdb.(*redis.ClusterClient)
	return &Hub{rdb: rdb, sharded: sharded, src: src, log: log, opts: opts, ctx: ctx, cancel: cancel,
		pss: map[string]*redis.PubSub{}, companies: map[string]*company{}, waiters: map[string][]chan struct{}{}}
}

// Notify tells every instance that company's log has a new row. It is
// called after the row's transaction commits.
func (h *Hub) Notify(ctx context.Context, n audit.Notice) error {
	company, id := n.Company, n.ID
	// The notice runs in the request that made the change, after its
	// commit. It must go out even if that request's client has gone
	// (WithoutCancel), and a Redis that is away must not hold the request
	// through the client's dial retries (seconds per event): a lost notice
	// only delays live delivery until the next notice or poll.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), notifyTimeout)
	defer cancel()
	publish := h.rdb.Publish
	if h.sharded {
		publish = h.rdb.SPublish
	}
	if err := publish(ctx, channelPrefix+company, strconv.FormatInt(id, 10)).Err(); err != nil {
		return fmt.Errorf("publish audit notice: %w", err)
	}
	return nil
}

// Close ends every stream with ErrShutdown and drops the Redis
// subscription.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	companies := make([]*company, 0, len(h.companies))
	for _, c := range h.companies {
		companies = append(companies, c)
	}
	pss := make([]*redis.PubSub, 0, len(h.pss))
	for _, ps := range h.pss {
		pss = append(pss, ps)
	}
	h.mu.Unlock()
	for _, c := range companies {
		c.failAll(ErrShutdown)
	}
	h.cancel()
	for _, ps := range pss {
		_ = ps.Close()
	}
	h.wg.Wait()
}

// company is one watched company's state on this instance.
type company struct {
	name  string
	refs  int           // guarded by Hub.mu
	ready chan struct{} // closed once subscribed and last is known
	err   error         // set before ready closes
	kick  chan struct{} // cap 1: read new rows now
	stop  chan struct{}

	mu   sync.Mutex
	last int64 // newest id offered to subscribers
	subs map[*sub]struct{}
}

// sub is one subscriber's inbox.
type sub struct {
	// Pointers: the buffer is allocated in full for every subscriber, and
	// an Event is 160 bytes, so 256 of them cost 40 KiB per idle
	// subscriber. Every subscriber shares the pump's read-only copy.
	buf    chan *audit.Event
	failed chan struct{}
	once   sync.Once
	reason error
}

func (s *sub) fail(err error) {
	s.once.Do(func() {
		s.reason = err
		close(s.failed)
	})
}

// join registers a subscriber and returns the id after which it will be
// offered every new row.
func (h *Hub) join(ctx context.Context, name string, s *sub) (*company, int64, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, 0, ErrShutdown
	}
	c, ok := h.companies[name]
	if !ok {
		c = &company{name: name, ready: make(chan struct{}), kick: make(chan struct{}, 1),
			stop: make(chan struct{}), subs: map[*sub]struct{}{}}
		h.companies[name] = c
		h.wg.Add(1)
		go h.watch(c)
	}
	c.refs++
	h.mu.Unlock()

	select {
	case <-c.ready:
	case <-ctx.Done():
		h.leave(c, s)
		return nil, 0, ctx.Err()
	}
	if c.err != nil {
		h.leave(c, s)
		return nil, 0, c.err
	}
	c.mu.Lock()
	c.subs[s] = struct{}{}
	last := c.last
	c.mu.Unlock()
	// Read the table now: rows whose notice was lost are past last, and a
	// resuming client's replay stops at last, so without this read they
	// would wait for the next notice or poll (issue 4: a client that
	// resumes gets what pub/sub lost).
	c.poke()
	return c, last, nil
}

func (h *Hub) leave(c *company, s *sub) {
	c.mu.Lock()
	delete(c.subs, s)
	c.mu.Unlock()
	h.mu.Lock()
	c.refs--
	if c.refs == 0 && h.companies[c.name] == c {
		delete(h.companies, c.name)
		close(c.stop)
		// Under h.mu, so a newcomer's SUBSCRIBE for this company can only
		// follow this UNSUBSCRIBE, never be undone by it.
		h.unsubscribeLocked(channelPrefix + c.name)
	}
	h.mu.Unlock()
}

// unsubscribeLocked drops the subscription to ch; h.mu is held. A
// Cluster's per-company subscription is closed, which also wakes a
// SUBSCRIBE still waiting for its confirmation.
func (h *Hub) unsubscribeLocked(ch string) {
	key := h.shardKey(ch)
	ps := h.pss[key]
	if ps == nil || h.closed {
		return
	}
	if h.sharded {
		delete(h.pss, key)
		_ = ps.Close()
		for _, w := range h.waiters[ch] {
			close(w)
		}
		delete(h.waiters, ch)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := ps.Unsubscribe(ctx, ch); err != nil {
		h.log.Warn("unsubscribe audit feed", "channel", ch, "err", err)
	}
}

// shardKey names the subscription that carries ch.
func (h *Hub) shardKey(ch string) string {
	if h.sharded {
		return ch
	}
	return ""
}

// watch subscribes to a company's channel, learns where its log ends, and
// then reads new rows whenever kicked or polled, until nobody listens.
func (h *Hub) watch(c *company) {
	defer h.wg.Done()
	ch := channelPrefix + c.name
	c.err = h.subscribe(ch)
	if c.err == nil {
		c.last, c.err = h.src.LastID(h.ctx, c.name)
	}
	close(c.ready)
	if c.err != nil {
		select {
		case <-c.stop: // everyone left: the subscription was dropped under it
		default:
			h.log.Error("watch audit feed", "company", c.name, "err", c.err)
		}
		return
	}
	select {
	case <-c.stop:
		// Everyone left before the SUBSCRIBE was confirmed, so leave's
		// UNSUBSCRIBE may have gone out first: undo ours, unless a newcomer
		// for the company now owns the channel.
		h.mu.Lock()
		if _, watched := h.companies[c.name]; !watched {
			h.unsubscribeLocked(ch)
		}
		h.mu.Unlock()
		return
	default:
	}
	tick := time.NewTicker(h.opts.Poll)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-h.ctx.Done():
			return
		case <-c.kick:
		case <-tick.C:
		}
		h.pump(c)
	}
}

// pump offers every row newer than c.last to the subscribers, in order.
func (h *Hub) pump(c *company) {
	for {
		c.mu.Lock()
		after := c.last
		c.mu.Unlock()
		events, err := h.src.Since(h.ctx, c.name, after, 0, audit.Filter{}, batch)
		if err != nil {
			if h.ctx.Err() == nil {
				h.log.Warn("read audit feed", "company", c.name, "err", err)
			}
			return
		}
		c.mu.Lock()
		for i := range events {
			e := &events[i]
			c.last = e.ID
			for s := range c.subs {
				select {
				case s.buf <- e:
				default:
					// A stuck subscriber must not hold up the rest.
					delete(c.subs, s)
					s.fail(ErrTooSlow)
				}
			}
		}
		c.mu.Unlock()
		if len(events) < batch {
			return
		}
	}
}

func (c *company) failAll(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for s := range c.subs {
		delete(c.subs, s)
		s.fail(err)
	}
}

func (c *company) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// subscribe adds ch to the hub's Redis subscription for it and waits
// until Redis confirms, so no notice sent after this returns is missed.
func (h *Hub) subscribe(ch string) error {
	wait := make(chan struct{})
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrShutdown
	}
	h.waiters[ch] = append(h.waiters[ch], wait)
	ps := h.pss[h.shardKey(ch)]
	fresh := ps == nil
	if fresh {
		ps = h.openLocked(ch)
	}
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	err := h.joinChannel(ctx, ps, ch)
	if fresh && h.sharded {
		h.startReceive(ps)
	}
	if err == nil {
		select {
		case <-wait:
			return nil
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	// Nobody will wait on this channel again.
	h.mu.Lock()
	h.waiters[ch] = slices.DeleteFunc(h.waiters[ch], func(w chan struct{}) bool { return w == wait })
	if len(h.waiters[ch]) == 0 {
		delete(h.waiters, ch)
	}
	h.mu.Unlock()
	return fmt.Errorf("subscribe to audit feed: %w", err)
}

// openLocked starts the subscription that will carry ch, and the
// goroutine that reads it; h.mu is held.
func (h *Hub) openLocked(ch string) *redis.PubSub {
	var ps *redis.PubSub
	if h.sharded {
		// Empty: its connection goes to the node that owns the first
		// channel, and after a failover to that slot's new owner.
		ps = h.rdb.SSubscribe(h.ctx)
	} else {
		ps = h.rdb.Subscribe(h.ctx)
	}
	h.pss[h.shardKey(ch)] = ps
	if !h.sharded {
		h.startReceive(ps)
	}
	return ps
}

// startReceive reads ps until it closes. A Cluster subscription is read
// only once SSUBSCRIBE has connected it: a Receive before that would
// connect to a random node, which refuses the channel with MOVED.
func (h *Hub) startReceive(ps *redis.PubSub) {
	h.wg.Add(1)
	go h.receive(ps)
}

func (h *Hub) joinChannel(ctx context.Context, ps *redis.PubSub, ch string) error {
	if h.sharded {
		return ps.SSubscribe(ctx, ch)
	}
	return ps.Subscribe(ctx, ch)
}

// receive reads one Redis subscription. After a connection loss go-redis
// resubscribes (on a Cluster, on the slot's owner once the client has
// reloaded the slot map); every watched company is then read at once,
// since notices may have been lost meanwhile.
func (h *Hub) receive(ps *redis.PubSub) {
	defer h.wg.Done()
	for {
		msg, err := ps.Receive(h.ctx)
		if err != nil {
			if h.ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			h.log.Warn("audit feed subscription interrupted", "err", err)
			if cc, ok := h.rdb.(*redis.ClusterClient); ok {
				cc.ReloadState(h.ctx) // the master may have moved
			}
			h.pokeAll()
			select {
			case <-time.After(200 * time.Millisecond):
			case <-h.ctx.Done():
				return
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			h.subscription(ps, m)
		case *redis.Message:
			h.mu.Lock()
			c := h.companies[strings.TrimPrefix(m.Channel, channelPrefix)]
			h.mu.Unlock()
			if c != nil {
				c.poke()
			}
		}
	}
}

// subscription handles Redis's confirmations and, on a Cluster, the
// SUNSUBSCRIBE a node sends when the channel's slot leaves it (a
// failover or a slot move).
func (h *Hub) subscription(ps *redis.PubSub, m *redis.Subscription) {
	switch m.Kind {
	case "subscribe", "ssubscribe":
		h.mu.Lock()
		for _, w := range h.waiters[m.Channel] {
			close(w)
		}
		delete(h.waiters, m.Channel)
		h.mu.Unlock()
		h.pokeAll() // a reconnect resubscribes: catch up
	case "sunsubscribe":
		h.resubscribe(ps, m.Channel)
	}
}

// resubscribe replaces a Cluster subscription that its node dropped with
// one on the slot's new owner. The hub never sends SUNSUBSCRIBE itself (it
// closes the subscription), so this one came from the server.
func (h *Hub) resubscribe(old *redis.PubSub, ch string) {
	h.mu.Lock()
	if h.closed || h.pss[ch] != old {
		h.mu.Unlock()
		return
	}
	h.log.Info("audit feed channel moved; subscribing again", "channel", ch)
	if cc, ok := h.rdb.(*redis.ClusterClient); ok {
		cc.ReloadState(h.ctx)
	}
	_ = old.Close()
	ps := h.openLocked(ch)
	h.mu.Unlock()
	// The confirmation reaches the new receive goroutine, which reads the
	// table then; until it comes, the poll covers the company.
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	if err := ps.SSubscribe(ctx, ch); err != nil && h.ctx.Err() == nil {
		h.log.Warn("subscribe to moved audit feed channel", "channel", ch, "err", err)
	}
	h.startReceive(ps)
	h.pokeAll()
}

func (h *Hub) pokeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.companies {
		c.poke()
	}
}

// Request is one subscription. The company and the end of the stream come
// from the caller's token.
type Request struct {
	Caller auth.Caller
	Filter audit.Filter
	After  int64 // replay rows after this id first; 0 for live only
}

// Stream subscribes and returns a channel of matching events: first the
// replay after r.After, then live rows, with no gap and no duplicate at
// the seam. The channel closes when ctx ends or the stream fails; end is
// called first with the reason (nil when ctx ended).
// Admins only.
func Stream[T any](ctx context.Context, h *Hub, r Request, convert func(audit.Event) T, end func(error)) (<-chan T, error) {
	if err := r.Caller.Require(auth.RoleAdmin); err != nil {
		return nil, fmt.Errorf("subscribe to audit feed: %w", err)
	}
	// Tokens verify with some leeway past their expiry; a stream must not
	// replay anything to one that has already expired.
	if exp := r.Caller.ExpiresAt; !exp.IsZero() && !time.Now().Before(exp) {
		return nil, fmt.Errorf("subscribe to audit feed: %w", ErrExpired)
	}
	company := r.Caller.Company
	s := &sub{buf: make(chan *audit.Event, h.opts.Buffer), failed: make(chan struct{})}
	c, joined, err := h.join(ctx, company, s)
	if err != nil {
		return nil, fmt.Errorf("subscribe to audit feed: %w", err)
	}
	out := make(chan T)
	go func() {
		defer close(out)
		defer h.leave(c, s)
		var expired <-chan time.Time
		if exp := r.Caller.ExpiresAt; !exp.IsZero() {
			t := time.NewTimer(time.Until(exp))
			defer t.Stop()
			expired = t.C
		}
		send := func(e audit.Event) error {
			// A select picks at random among ready cases: look at the
			// expiry first, or an expired stream could keep sending.
			select {
			case <-expired:
				return ErrExpired
			default:
			}
			select {
			case out <- convert(e):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			case <-s.failed:
				return s.reason
			case <-expired:
				return ErrExpired
			}
		}
		finish := func(err error) {
			if err != nil && ctx.Err() == nil {
				end(err)
			}
		}
		// Replay what the client missed, up to where live delivery starts.
		for after := r.After; r.After > 0 && after < joined; {
			events, err := h.src.Since(ctx, company, after, joined, r.Filter, batch)
			if err != nil {
				finish(fmt.Errorf("replay audit feed: %w", err))
				return
			}
			for _, e := range events {
				if err := send(e); err != nil {
					finish(err)
					return
				}
				after = e.ID
			}
			if len(events) < batch {
				break
			}
		}
		floor := max(joined, r.After)
		for {
			select {
			case e := <-s.buf:
				if e.ID <= floor || !r.Filter.Match(*e) {
					continue
				}
				if err := send(*e); err != nil {
					finish(err)
					return
				}
			case <-s.failed:
				finish(s.reason)
				return
			case <-expired:
				finish(ErrExpired)
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
