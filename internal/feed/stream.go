package feed

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
)

// window is how many of a company's newest events an instance keeps for
// subscribers that lag; one further behind reads the table instead.
const window = 1024

// company is one watched company's state on this instance. The pump reads
// each new row once and hands it to every live subscriber itself, without
// a goroutine per subscriber; a subscriber that cannot take it at once
// catches up on its own goroutine (from the window, or the table) and then
// rejoins.
type company struct {
	name  string
	refs  int           // guarded by Hub.mu
	ready chan struct{} // closed once subscribed and last is known
	err   error         // set before ready closes
	kick  chan struct{} // cap 1: read new rows now
	stop  chan struct{}

	mu     sync.Mutex
	last   int64    // newest id offered to subscribers
	base   int64    // window holds every row in (base, last]
	recent []*entry // the window, ascending; never written in place
	live   map[subscriber]struct{}
	ended  error // the hub closed: no stream may (re)join
}

// entry is one event in the window, with the subscribers' conversion of
// it, made once and shared.
type entry struct {
	audit.Event
	conv atomic.Pointer[converted]
}

type converted struct {
	key uintptr // the convert function
	v   any
}

// subscriber is a stream as the pump sees it.
type subscriber interface {
	// offer hands e to a live subscriber without blocking; false means it
	// has left the live set (it ended, or it catches up on its own).
	offer(e *entry) bool
}

// join registers s as live once the company is watched, and returns the
// id after which the pump offers it rows.
func (h *Hub) join(ctx context.Context, name string) (*company, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, ErrShutdown
	}
	c, ok := h.companies[name]
	if !ok {
		c = &company{name: name, ready: make(chan struct{}), kick: make(chan struct{}, 1),
			stop: make(chan struct{}), live: map[subscriber]struct{}{}}
		h.companies[name] = c
		h.wg.Add(1)
		go h.watch(c)
	}
	c.refs++
	h.mu.Unlock()

	select {
	case <-c.ready:
	case <-ctx.Done():
		h.leave(c)
		return nil, ctx.Err()
	}
	if c.err != nil {
		h.leave(c)
		return nil, c.err
	}
	return c, nil
}

func (h *Hub) leave(c *company) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c.refs--
	if c.refs == 0 && h.companies[c.name] == c {
		delete(h.companies, c.name)
		close(c.stop) // its watch goroutine releases the channel
	}
}

// watch subscribes to a company's channel, learns where its log ends, and
// then reads new rows whenever kicked or polled, until nobody listens.
func (h *Hub) watch(c *company) {
	defer h.wg.Done()
	ch := h.channel(c.name)
	c.err = h.acquire(ch, subscribeTimeout)
	defer h.release(ch)
	if c.err == nil {
		c.last, c.err = h.src.LastID(h.ctx, c.name)
		c.base = c.last
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

// pump reads every row newer than c.last, once for all subscribers, and
// offers each to the live ones in order.
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
		c.append(events)
		if len(events) < batch {
			return
		}
	}
}

// append adds events to the window and offers them to the live
// subscribers; one that cannot take them leaves the live set to catch up.
func (c *company) append(events []audit.Event) {
	if len(events) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range events {
		e := &entry{Event: events[i]}
		c.recent = append(c.recent, e)
		c.last = e.ID
		for s := range c.live {
			if !s.offer(e) {
				delete(c.live, s)
			}
		}
	}
	if n := len(c.recent); n > 2*window {
		// A fresh array: readers may still hold slices of the old one.
		c.base = c.recent[n-window-1].ID
		c.recent = append([]*entry(nil), c.recent[n-window:]...)
	}
}

// read returns up to limit window entries after pos, or, when the window
// no longer reaches back to pos, until > 0: the rows in (pos, until] must
// come from the table.
func (c *company) read(pos int64, limit int) (es []*entry, until int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pos < c.base {
		return nil, c.base
	}
	i := sort.Search(len(c.recent), func(i int) bool { return c.recent[i].ID > pos })
	return c.recent[i:min(len(c.recent), i+limit)], 0
}

func (c *company) drop(s subscriber) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.live, s)
}

func (c *company) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// failAll ends every stream of the company.
func (c *company) failAll(err error) {
	c.mu.Lock()
	c.ended = err
	live := c.live
	c.live = map[subscriber]struct{}{}
	c.mu.Unlock()
	for s := range live {
		if f, ok := s.(interface{ fail(error) }); ok {
			f.fail(err)
		}
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
// the seam. A subscriber that falls behind reads the table from its last
// row and rejoins; it is never cut off for being slow. The channel closes
// when the stream fails; end is called first with the reason. When ctx
// ends the stream just stops. Admins only.
//
// convert must depend on the event alone: its result is made once per
// event and shared by every subscriber (read-only).
func Stream[T any](ctx context.Context, h *Hub, r Request, convert func(audit.Event) T, end func(error)) (<-chan T, error) {
	if err := r.Caller.Require(auth.RoleAdmin); err != nil {
		return nil, fmt.Errorf("subscribe to audit feed: %w", err)
	}
	// Tokens verify with some leeway past their expiry; a stream must not
	// replay anything to one that has already expired.
	if exp := r.Caller.ExpiresAt; !exp.IsZero() && !time.Now().Before(exp) {
		return nil, fmt.Errorf("subscribe to audit feed: %w", ErrExpired)
	}
	c, err := h.join(ctx, r.Caller.Company)
	if err != nil {
		return nil, fmt.Errorf("subscribe to audit feed: %w", err)
	}
	s := &stream[T]{h: h, c: c, ctx: ctx, filter: r.Filter, expires: r.Caller.ExpiresAt, convert: convert,
		key: reflect.ValueOf(convert).Pointer(), end: end, out: make(chan T, h.opts.Buffer), quit: make(chan struct{})}
	s.start(r.After)
	return s.out, nil
}
