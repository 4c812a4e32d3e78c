package feed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
)

const (
	// subscribeTimeout bounds the wait for Redis to confirm a SUBSCRIBE.
	subscribeTimeout = 10 * time.Second
	// watchWait bounds how long Watch waits for that confirmation while
	// the hub is live; past it the hub reports itself not live instead.
	watchWait = 2 * time.Second
	// settingsFlag marks a notice whose change touched the company's
	// settings. A bare id (the format before it) means it did not.
	settingsFlag = " settings"
)

// channel is one Redis channel this instance listens on: for the company
// pumps and for Watch callbacks alike. Guarded by Hub.mu.
type channel struct {
	refs      int
	confirmed bool       // Redis confirmed the (re)subscription
	watchers  []*watcher // copy on write: the receive loop reads it unlocked
}

type watcher struct{ fn func(audit.Notice) }

func encodeNotice(id int64, settings bool) string {
	s := strconv.FormatInt(id, 10)
	if settings {
		s += settingsFlag
	}
	return s
}

// decodeNotice reads a published notice. One it cannot read is taken as
// a settings change, so a cache reloads rather than trusts stale data.
func decodeNotice(company, payload string) audit.Notice {
	raw, flag := strings.CutSuffix(payload, settingsFlag)
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id < 0 {
		return audit.Notice{Company: company, SettingsChanged: true}
	}
	return audit.Notice{Company: company, ID: id, SettingsChanged: flag}
}

// Watch calls fn with every notice of company that this instance
// receives, until stop is called. fn runs on the hub's receive loop, in
// order: it must be cheap and must not block (no I/O, no waiting on
// locks held across I/O), and it must not call Watch or stop itself.
// Watch returns once Redis has confirmed the subscription, or once the
// hub has reported through OnLive that notices may be missed.
func (h *Hub) Watch(company string, fn func(audit.Notice)) (stop func()) {
	ch := channelPrefix + company
	w := &watcher{fn: fn}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return func() {}
	}
	c := h.refLocked(ch)
	c.watchers = append(slices.Clip(c.watchers), w)
	wait := 100 * time.Millisecond // not live: Redis is away, do not hold the caller
	if h.live {
		wait = watchWait
	}
	h.mu.Unlock()
	if err := h.subscribe(ch, wait); err != nil && !errors.Is(err, ErrShutdown) {
		h.log.Warn("watch audit feed", "channel", ch, "err", err)
		h.setLive(false) // go-redis subscribes again once Redis answers
	}
	var done bool
	return func() {
		h.mu.Lock()
		if done {
			h.mu.Unlock()
			return
		}
		done = true
		if c := h.chans[ch]; c != nil {
			c.watchers = slices.DeleteFunc(slices.Clone(c.watchers), func(x *watcher) bool { return x == w })
		}
		h.unrefLocked(ch)
		h.mu.Unlock()
	}
}

// OnLive registers fn, called with false whenever notices may have been
// missed (the subscription broke, or Redis does not answer) and with true
// once every channel is subscribed again and notices flow. If the hub is
// not live when fn is registered, fn(false) is called at once. fn must
// be cheap and non-blocking, like a Watch callback.
func (h *Hub) OnLive(fn func(live bool)) {
	h.mu.Lock()
	h.onLive = append(h.onLive, fn)
	live := h.live
	h.mu.Unlock()
	if !live {
		fn(false)
	}
}

// setLive records a change of liveness and tells OnLive callbacks.
func (h *Hub) setLive(live bool) {
	h.mu.Lock()
	if h.live == live || h.closed {
		h.mu.Unlock()
		return
	}
	h.live = live
	fns := slices.Clone(h.onLive)
	h.mu.Unlock()
	if !live {
		h.log.Warn("audit feed not live: notices may be missed until Redis is subscribed again")
	}
	for _, fn := range fns {
		fn(live)
	}
}

// refLocked counts one more user of ch; h.mu is held.
func (h *Hub) refLocked(ch string) *channel {
	c := h.chans[ch]
	if c == nil {
		c = &channel{}
		h.chans[ch] = c
	}
	c.refs++
	return c
}

// unrefLocked drops one user of ch and the subscription with the last.
// Under h.mu, so a newcomer's SUBSCRIBE can only follow this UNSUBSCRIBE,
// never be undone by it.
func (h *Hub) unrefLocked(ch string) {
	c := h.chans[ch]
	if c == nil {
		return
	}
	if c.refs--; c.refs > 0 {
		return
	}
	delete(h.chans, ch)
	h.unsubscribeLocked(ch)
}

// acquire subscribes to ch for one more user and waits for Redis to
// confirm. On error the caller still holds its reference: release it.
func (h *Hub) acquire(ch string, timeout time.Duration) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrShutdown
	}
	h.refLocked(ch)
	h.mu.Unlock()
	return h.subscribe(ch, timeout)
}

func (h *Hub) release(ch string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unrefLocked(ch)
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

// subscribe adds ch to the hub's Redis subscription for it and waits
// until Redis confirms, so no notice sent after this returns is missed.
// Even when it fails, go-redis keeps ch in the subscription and subscribes
// again on its next connection.
func (h *Hub) subscribe(ch string, timeout time.Duration) error {
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
	ctx, cancel := context.WithTimeout(h.ctx, timeout)
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
			h.interrupted(ps, err)
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
			h.message(m)
		}
	}
}

// interrupted handles a broken subscription: its channels are no longer
// confirmed, notices may be lost until go-redis subscribes again, and
// every watched company is read now.
func (h *Hub) interrupted(ps *redis.PubSub, err error) {
	h.log.Warn("audit feed subscription interrupted", "err", err)
	if cc, ok := h.rdb.(*redis.ClusterClient); ok {
		cc.ReloadState(h.ctx) // the master may have moved
	}
	h.mu.Lock()
	for name, c := range h.chans {
		if h.pss[h.shardKey(name)] == ps {
			c.confirmed = false
		}
	}
	h.mu.Unlock()
	h.setLive(false)
	h.pokeAll()
}

// message hands a notice to the channel's watchers and wakes its pump.
func (h *Hub) message(m *redis.Message) {
	name := strings.TrimPrefix(m.Channel, channelPrefix)
	h.mu.Lock()
	co := h.companies[name]
	var ws []*watcher
	if c := h.chans[m.Channel]; c != nil {
		ws = c.watchers
	}
	h.mu.Unlock()
	if len(ws) > 0 {
		n := decodeNotice(name, m.Payload)
		for _, w := range ws {
			w.fn(n)
		}
	}
	if co != nil {
		co.poke()
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
		if c := h.chans[m.Channel]; c != nil {
			c.confirmed = true
		}
		live := h.allConfirmedLocked()
		h.mu.Unlock()
		h.pokeAll() // a reconnect resubscribes: catch up
		if live {
			h.setLive(true)
		}
	case "sunsubscribe":
		h.mu.Lock()
		if c := h.chans[m.Channel]; c != nil && h.pss[m.Channel] == ps {
			c.confirmed = false
		}
		h.mu.Unlock()
		h.setLive(false)
		h.resubscribe(ps, m.Channel)
	}
}

func (h *Hub) allConfirmedLocked() bool {
	for _, c := range h.chans {
		if !c.confirmed {
			return false
		}
	}
	return true
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
	ctx, cancel := context.WithTimeout(h.ctx, subscribeTimeout)
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
