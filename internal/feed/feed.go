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
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
)

// Errors that end a stream. Both tell the client to resume from its last
// cursor, which loses nothing.
var (
	// ErrTooSlow is no longer returned: a subscriber that falls behind
	// catches up from the database. Kept for the error mapping.
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
	// Buffer is how many events may wait for one live subscriber before
	// it stops taking them from the pump and catches up by itself (from
	// the window of recent events, or the database).
	Buffer int
	// Poll is how often a watched company is read even without a notice,
	// to cover notices lost while Redis restarts.
	Poll time.Duration
	// Idle is how long a subscription may stay silent before the hub
	// PINGs it; with no reply within another Idle the connection is taken
	// as dead (a half-open TCP connection shows no error): the hub
	// reports not live and go-redis dials again. Default 15s, so a
	// silent subscription goes unnoticed for at most about 30s.
	Idle time.Duration
}

const (
	defaultBuffer = 16
	defaultPoll   = 5 * time.Second
	defaultIdle   = 15 * time.Second
	batch         = 500
	notifyTimeout = 250 * time.Millisecond
	channelPrefix = "2fa:audit:"
)

// Hub holds the instance's Redis subscriptions and fans events out to
// local subscribers. On a single server (or behind Sentinel) that is one
// subscription for every company. On a Cluster it is sharded pub/sub
// (SSUBSCRIBE, Redis 7), so a notice goes to the one shard that owns the
// company's channel rather than to every node. A go-redis subscription
// stays on one node, and resubscribes all its channels in one command, so
// companies' channels are grouped in buckets of one slot each: one
// subscription per bucket, at most buckets, however many companies.
type Hub struct {
	rdb     redis.UniversalClient
	sharded bool
	src     Source
	log     *slog.Logger
	opts    Options

	mu          sync.Mutex
	pss         map[string]*redis.PubSub // by shardKey
	chans       map[string]*channel      // subscribed channels, by name
	perShard    map[string]int           // how many of chans each shardKey carries
	leaving     map[string]int           // channel → own SUNSUBSCRIBEs awaiting their reply
	unconfirmed int                      // chans not confirmed
	companies   map[string]*company
	waiters     map[string][]chan struct{} // channel → waiting for SUBSCRIBE confirmation
	live        bool                       // every channel confirmed since the last break
	onLive      []func(bool)
	ctx         context.Context
	cancel      context.CancelFunc
	closed      bool
	wg          sync.WaitGroup
}

// NewHub returns a hub; it connects lazily, on the first subscriber.
func NewHub(rdb redis.UniversalClient, src Source, log *slog.Logger, opts Options) *Hub {
	if opts.Buffer <= 0 {
		opts.Buffer = defaultBuffer
	}
	if opts.Poll <= 0 {
		opts.Poll = defaultPoll
	}
	if opts.Idle <= 0 {
		opts.Idle = defaultIdle
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	_, sharded := rdb.(*redis.ClusterClient)
	return &Hub{rdb: rdb, sharded: sharded, src: src, log: log, opts: opts, ctx: ctx, cancel: cancel,
		pss: map[string]*redis.PubSub{}, chans: map[string]*channel{}, companies: map[string]*company{},
		perShard: map[string]int{}, leaving: map[string]int{}, waiters: map[string][]chan struct{}{}, live: true}
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
	if err := publish(ctx, h.channel(company), encodeNotice(id, n.SettingsChanged)).Err(); err != nil {
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
