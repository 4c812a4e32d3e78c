package feed

import (
	"context"
	"errors"
	"fmt"
	"net"
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
	confirmed bool       // Redis confirmed the (re)subscription; see confirmLocked
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
	ch := h.channel(company)
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

// buckets is how many sharded subscriptions an instance holds on a
// Cluster, however many companies it watches (the settings cache alone
// watches up to 10,000). Notices are tiny, so spreading them over more
// slots gains little; 16 spreads them over up to 16 masters for 16
// connections and receive goroutines per instance, and a slot move or
// failover resubscribes a sixteenth of the companies at a time.
const buckets = 16

// bucketTags are the hash tags of the buckets' channels. Redis hashes a
// channel by its tag alone, so every channel of a bucket is in one slot:
// one SSUBSCRIBE may carry them all, as go-redis's resubscribe after a
// reconnect does. Tag i hashes near the middle of the i-th sixteenth of
// the 16384 slots, so masters owning equal ranges (as redis-cli --cluster
// create assigns them) share the buckets evenly. They are wire format:
// every instance must name channels alike.
var bucketTags = [buckets]string{
	"{b00.133}", "{b01.324}", "{b02.207}", "{b03.7}", "{b04.147}", "{b05.350}", "{b06.273}", "{b07.27}",
	"{b08.377}", "{b09.40}", "{b10.324}", "{b11.133}", "{b12.42}", "{b13.211}", "{b14.350}", "{b15.147}",
}

// bucketOf picks company's bucket with FNV-1a, which is the same in every
// process (unlike maphash).
func bucketOf(company string) int {
	h := uint32(2166136261)
	for i := 0; i < len(company); i++ {
		h ^= uint32(company[i])
		h *= 16777619
	}
	return int(h % buckets)
}

// channel names company's notice channel. A single server keeps the name
// versions before buckets used, so rolling an upgrade there loses nothing.
func (h *Hub) channel(company string) string {
	if h.sharded {
		return channelPrefix + bucketTags[bucketOf(company)] + ":" + company
	}
	return channelPrefix + company
}

// companyOf reads the company from a channel named by channel.
func (h *Hub) companyOf(ch string) string {
	rest := strings.TrimPrefix(ch, channelPrefix)
	if h.sharded {
		_, rest, _ = strings.Cut(rest, "}:")
	}
	return rest
}

// shardKey names the subscription that carries ch: its bucket's tag on a
// Cluster, the one subscription on a single server.
func (h *Hub) shardKey(ch string) string {
	if !h.sharded {
		return ""
	}
	rest := strings.TrimPrefix(ch, channelPrefix)
	tag, _, _ := strings.Cut(rest, "}")
	return tag + "}"
}

// refLocked counts one more user of ch; h.mu is held.
func (h *Hub) refLocked(ch string) *channel {
	c := h.chans[ch]
	if c == nil {
		c = &channel{}
		h.chans[ch] = c
		h.unconfirmed++
		h.perShard[h.shardKey(ch)]++
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
	h.confirmLocked(c, true) // leaves the count of unconfirmed channels
	delete(h.chans, ch)
	key := h.shardKey(ch)
	if h.perShard[key]--; h.perShard[key] == 0 {
		delete(h.perShard, key)
	}
	h.unsubscribeLocked(ch)
}

// confirmLocked records whether Redis has confirmed c's subscription,
// keeping count of those it has not, so no confirmation scans every
// channel; h.mu is held.
func (h *Hub) confirmLocked(c *channel, ok bool) {
	if c.confirmed == ok {
		return
	}
	c.confirmed = ok
	if ok {
		h.unconfirmed--
	} else {
		h.unconfirmed++
	}
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

// unsubscribeLocked drops the subscription to ch; h.mu is held. On a
// Cluster the bucket's subscription is closed with its last channel, and
// a SUBSCRIBE still waiting for ch's confirmation is woken.
func (h *Hub) unsubscribeLocked(ch string) {
	key := h.shardKey(ch)
	ps := h.pss[key]
	if ps == nil || h.closed {
		return
	}
	var err error
	if h.sharded {
		for _, w := range h.waiters[ch] {
			close(w)
		}
		delete(h.waiters, ch)
		if h.perShard[key] == 0 {
			delete(h.pss, key)
			h.forgetLeavingLocked(key)
			_ = ps.Close()
			return
		}
		// Its reply must not be taken for the server dropping the slot.
		h.leaving[ch]++
		err = h.sunsubscribe(ps, ch)
		if err != nil {
			h.unleaveLocked(ch)
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err = ps.Unsubscribe(ctx, ch)
	}
	if err != nil {
		h.log.Warn("unsubscribe audit feed", "channel", ch, "err", err)
	}
}

func (h *Hub) sunsubscribe(ps *redis.PubSub, ch string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return ps.SUnsubscribe(ctx, ch)
}

// unleaveLocked takes back one SUNSUBSCRIBE of ch awaiting its reply.
func (h *Hub) unleaveLocked(ch string) {
	if h.leaving[ch]--; h.leaving[ch] <= 0 {
		delete(h.leaving, ch)
	}
}

// forgetLeavingLocked drops the SUNSUBSCRIBEs awaiting a reply on the
// bucket's subscription: it was closed or broke, so none will come.
func (h *Hub) forgetLeavingLocked(key string) {
	for ch := range h.leaving {
		if h.shardKey(ch) == key {
			delete(h.leaving, ch)
		}
	}
}

// subscribe adds ch to the hub's Redis subscription for it and waits
// until Redis confirms, so no notice sent after this returns is missed.
// Even when it fails, go-redis keeps ch in the subscription and subscribes
// again on its next connection.
func (h *Hub) subscribe(ch string, timeout time.Duration) error {
	wait := make(chan struct{})
	key := h.shardKey(ch)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return ErrShutdown
	}
	h.waiters[ch] = append(h.waiters[ch], wait)
	ps := h.pss[key]
	fresh := ps == nil
	if fresh {
		ps = h.openLocked(key)
	}
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(h.ctx, timeout)
	defer cancel()
	err := h.joinChannel(ctx, ps, ch)
	if fresh && h.sharded {
		h.startReceive(ps, key)
	}
	if errors.Is(err, redis.ErrClosed) && h.replaced(key, ps) {
		err = nil // the bucket moved: its new subscription carries ch
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

// replaced reports whether the hub, still open, now carries key's
// channels on a subscription other than ps.
func (h *Hub) replaced(key string, ps *redis.PubSub) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	cur := h.pss[key]
	return !h.closed && cur != nil && cur != ps
}

// openLocked starts the subscription that will carry key's channels, and
// on a single server the goroutine that reads it; h.mu is held.
func (h *Hub) openLocked(key string) *redis.PubSub {
	var ps *redis.PubSub
	if h.sharded {
		// Empty: its connection goes to the node that owns the first
		// channel, and after a failover to that slot's new owner.
		ps = h.rdb.SSubscribe(h.ctx)
	} else {
		ps = h.rdb.Subscribe(h.ctx)
	}
	h.pss[key] = ps
	if !h.sharded {
		h.startReceive(ps, key)
	}
	return ps
}

// startReceive reads ps until it closes. A Cluster subscription is read
// only once SSUBSCRIBE has connected it: a Receive before that would
// connect to a random node, which refuses the channel with MOVED.
func (h *Hub) startReceive(ps *redis.PubSub, key string) {
	h.wg.Add(1)
	go h.receive(ps, key)
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
// since notices may have been lost meanwhile. An error reply on a Cluster
// (MOVED: the subscription sits on a node that no longer owns the slot)
// is not a connection loss, so go-redis stays put: the bucket is
// subscribed anew on the slot's owner.
func (h *Hub) receive(ps *redis.PubSub, key string) {
	defer h.wg.Done()
	for {
		msg, err := h.next(ps)
		if err != nil {
			if h.ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
				return
			}
			h.interrupted(ps, key, err)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-h.ctx.Done():
				return
			}
			var reply redis.Error
			if h.sharded && errors.As(err, &reply) {
				h.resubscribe(ps, key)
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			h.subscription(ps, key, m)
		case *redis.Message:
			h.message(m)
		}
	}
}

// next returns ps's next message. A half-open connection (the server
// vanished, or a NAT dropped the flow, without a reset) shows no error
// for minutes, so after opts.Idle of silence next PINGs: any reply
// proves the connection alive. With none within another Idle it returns
// an error, which the caller handles like a broken connection; go-redis
// has then dropped the connection already (a read that misses the
// context's deadline, with no timeout of its own, marks it bad: see
// PubSub.releaseConn) and dials again on the next Receive, resubscribing
// every channel, whose confirmations make the hub live again.
func (h *Hub) next(ps *redis.PubSub) (any, error) {
	msg, err := ps.ReceiveTimeout(h.ctx, h.opts.Idle)
	var nerr net.Error
	if !errors.As(err, &nerr) || !nerr.Timeout() || h.ctx.Err() != nil {
		return msg, err
	}
	if err := ps.Ping(h.ctx); err != nil {
		return nil, fmt.Errorf("ping audit feed subscription: %w", err)
	}
	ctx, cancel := context.WithTimeout(h.ctx, h.opts.Idle)
	defer cancel()
	msg, err = ps.Receive(ctx)
	if err != nil && h.ctx.Err() == nil && ctx.Err() != nil {
		return nil, fmt.Errorf("no reply to PING within %s: %w", h.opts.Idle, err)
	}
	return msg, err
}

// interrupted handles a broken subscription: its channels are no longer
// confirmed, notices may be lost until go-redis subscribes again, and
// every watched company is read now.
func (h *Hub) interrupted(ps *redis.PubSub, key string, err error) {
	h.log.Warn("audit feed subscription interrupted", "err", err)
	if cc, ok := h.rdb.(*redis.ClusterClient); ok {
		cc.ReloadState(h.ctx) // the master may have moved
	}
	h.mu.Lock()
	if h.pss[key] == ps {
		h.unconfirmKeyLocked(key)
		h.forgetLeavingLocked(key)
	}
	h.mu.Unlock()
	h.setLive(false)
	h.pokeAll()
}

// unconfirmKeyLocked marks key's channels unconfirmed and returns their
// names; h.mu is held.
func (h *Hub) unconfirmKeyLocked(key string) []string {
	var names []string
	for name, c := range h.chans {
		if h.shardKey(name) == key {
			h.confirmLocked(c, false)
			names = append(names, name)
		}
	}
	return names
}

// message hands a notice to the channel's watchers and wakes its pump.
func (h *Hub) message(m *redis.Message) {
	name := h.companyOf(m.Channel)
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
// SUNSUBSCRIBEs: replies to the hub's own, or the server's when the
// bucket's slot leaves the node (a failover or a slot move). ps is the
// subscription of key that m came on; one since replaced is ignored.
func (h *Hub) subscription(ps *redis.PubSub, key string, m *redis.Subscription) {
	switch m.Kind {
	case "subscribe", "ssubscribe":
		h.mu.Lock()
		if h.pss[key] != ps {
			h.mu.Unlock()
			return
		}
		for _, w := range h.waiters[m.Channel] {
			close(w)
		}
		delete(h.waiters, m.Channel)
		if c := h.chans[m.Channel]; c != nil {
			h.confirmLocked(c, true)
		}
		live := h.unconfirmed == 0
		h.mu.Unlock()
		h.pokeAll() // a reconnect resubscribes: catch up
		if live {
			h.setLive(true)
		}
	case "sunsubscribe":
		h.mu.Lock()
		c := h.chans[m.Channel]
		switch {
		case h.pss[key] != ps: // a subscription already replaced
			h.mu.Unlock()
			return
		case h.leaving[m.Channel] > 0: // the reply to the hub's own
			h.unleaveLocked(m.Channel)
			h.mu.Unlock()
			return
		case c == nil: // dropped by the server, but no longer wanted
			h.mu.Unlock()
			return
		}
		h.confirmLocked(c, false)
		h.mu.Unlock()
		h.setLive(false)
		h.resubscribe(ps, key)
	}
}

// resubscribe replaces a bucket's Cluster subscription, which its node
// dropped, with one on the slot's new owner that carries all of the
// bucket's channels in one SSUBSCRIBE (they share the slot).
func (h *Hub) resubscribe(old *redis.PubSub, key string) {
	h.mu.Lock()
	if h.closed || h.pss[key] != old {
		h.mu.Unlock()
		return
	}
	h.log.Info("audit feed slot moved; subscribing again", "bucket", key)
	if cc, ok := h.rdb.(*redis.ClusterClient); ok {
		cc.ReloadState(h.ctx)
	}
	_ = old.Close()
	h.forgetLeavingLocked(key)
	names := h.unconfirmKeyLocked(key)
	if len(names) == 0 {
		delete(h.pss, key)
		h.mu.Unlock()
		return
	}
	ps := h.openLocked(key)
	h.mu.Unlock()
	// The confirmations reach the new receive goroutine, which reads the
	// table then; until they come, the poll covers the companies.
	ctx, cancel := context.WithTimeout(h.ctx, subscribeTimeout)
	defer cancel()
	if err := ps.SSubscribe(ctx, names...); err != nil && h.ctx.Err() == nil {
		h.log.Warn("subscribe to moved audit feed bucket", "bucket", key, "err", err)
	}
	h.startReceive(ps, key)
	h.pokeAll()
}

func (h *Hub) pokeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.companies {
		c.poke()
	}
}
