// Package outbox moves events from Redis streams (outboxes) to the audit
// table. The challenge scripts append a sign-in's event to the user's
// outbox in the same atomic step as the state change; this package copies
// them to the database in batches, idempotently (audit.Log.AppendOnce
// stores each event uid once), and only then deletes them from Redis. An
// outbox left behind (an instance killed after answering, a database that
// was down) is found by the sweeper, which every instance runs.
package outbox

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
)

// Decoder turns one entry of the outbox key back into an event. An error
// leaves the entry in place (a newer instance may read it) and is logged.
type Decoder func(key string, values map[string]any) (*audit.Event, error)

// Appender stores events at most once each.
type Appender interface {
	AppendOnce(ctx context.Context, events []*audit.Event) (int, error)
}

// Options tune a Mover. Zero fields take the defaults.
type Options struct {
	// Match is the SCAN MATCH pattern of the outbox keys the sweeper
	// looks for. Tests that share one Redis scope it to their own
	// companies, or they would move other tests' events.
	Match string
	// SweepEvery is the sweeper's period (default 1m); negative turns the
	// sweeper off.
	SweepEvery time.Duration
	// Batch is the most entries read from one key at a time (default 100).
	Batch int
	// KeysPerMove is the most keys moved in one database call (default 64).
	KeysPerMove int
	// MaxPending bounds the keys waiting to be moved (default 10,000);
	// a key kicked beyond it waits for the sweeper.
	MaxPending int
	// MinBackoff and MaxBackoff bound the wait between failed moves
	// (defaults 100ms and 30s): the database may be down for a while.
	MinBackoff, MaxBackoff time.Duration
	// Manual starts no goroutine: Kick does nothing, and only Move and
	// Sweep move events. For benchmarks and for tests that play an
	// instance that dies before moving.
	Manual bool
}

func (o Options) withDefaults() Options {
	o.SweepEvery = cmp.Or(o.SweepEvery, time.Minute)
	o.Batch = cmp.Or(o.Batch, 100)
	o.KeysPerMove = cmp.Or(o.KeysPerMove, 64)
	o.MaxPending = cmp.Or(o.MaxPending, 10000)
	o.MinBackoff = cmp.Or(o.MinBackoff, 100*time.Millisecond)
	o.MaxBackoff = max(cmp.Or(o.MaxBackoff, 30*time.Second), o.MinBackoff)
	return o
}

// Mover moves outbox entries to the audit table.
type Mover struct {
	rdb    redis.UniversalClient
	decode Decoder
	sink   Appender
	logger *slog.Logger
	o      Options

	mu      sync.Mutex
	pending map[string]struct{}
	wake    chan struct{}

	stop      context.CancelFunc
	ctx       context.Context
	done      sync.WaitGroup
	closeOnce sync.Once
}

// New returns a mover and, unless o.Manual, starts its worker and its
// sweeper. Close stops them.
func New(rdb redis.UniversalClient, decode Decoder, sink Appender, logger *slog.Logger, o Options) *Mover {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	m := &Mover{rdb: rdb, decode: decode, sink: sink, logger: logger, o: o.withDefaults(),
		pending: map[string]struct{}{}, wake: make(chan struct{}, 1), ctx: ctx, stop: stop}
	if m.o.Manual {
		return m
	}
	m.done.Add(1)
	go m.work()
	if m.o.SweepEvery > 0 && m.o.Match != "" {
		m.done.Add(1)
		go m.sweepLoop()
	}
	return m
}

// Kick asks for key to be moved soon. It never blocks.
func (m *Mover) Kick(key string) {
	if m.o.Manual || m.ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	if len(m.pending) < m.o.MaxPending {
		m.pending[key] = struct{}{}
	}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Close stops the worker and the sweeper and waits for them. Entries not
// yet moved stay in Redis, where any instance's sweeper finds them.
func (m *Mover) Close() {
	m.closeOnce.Do(func() {
		m.stop()
		m.done.Wait()
	})
}

// take removes up to n pending keys.
func (m *Mover) take(n int) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]string, 0, min(n, len(m.pending)))
	for k := range m.pending {
		if len(keys) == n {
			break
		}
		keys = append(keys, k)
		delete(m.pending, k)
	}
	return keys
}

// work moves kicked keys, backing off while moves fail.
func (m *Mover) work() {
	defer m.done.Done()
	backoff := time.Duration(0)
	for {
		if backoff > 0 && !m.sleep(backoff) {
			return
		}
		keys := m.take(m.o.KeysPerMove)
		if len(keys) == 0 {
			select {
			case <-m.ctx.Done():
				return
			case <-m.wake:
				continue
			}
		}
		more, err := m.moveOnce(m.ctx, keys)
		if err != nil {
			if m.ctx.Err() != nil {
				return
			}
			backoff = nextBackoff(backoff, m.o)
			m.logger.Warn("move audit events from the outbox; retrying", "keys", len(keys), "retry_in", backoff, "err", err)
			more = keys
		} else {
			backoff = 0
		}
		for _, k := range more {
			m.Kick(k)
		}
	}
}

func nextBackoff(d time.Duration, o Options) time.Duration {
	if d == 0 {
		return o.MinBackoff
	}
	return min(2*d, o.MaxBackoff)
}

// sleep waits d unless the mover stops first; it reports whether to go on.
func (m *Mover) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-m.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Move moves every entry of keys now, in batches, and returns how many
// events were stored (an event stored before is not counted).
func (m *Mover) Move(ctx context.Context, keys ...string) (int, error) {
	total := 0
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), m.o.KeysPerMove)]
		keys = keys[len(chunk):]
		for len(chunk) > 0 {
			n, more, err := m.move(ctx, chunk)
			total += n
			if err != nil {
				return total, err
			}
			chunk = more
		}
	}
	return total, nil
}

// moveOnce is one batch of move, for the worker.
func (m *Mover) moveOnce(ctx context.Context, keys []string) (more []string, err error) {
	_, more, err = m.move(ctx, keys)
	return more, err
}

// sweepLoop sweeps at start and then every SweepEvery; a sweep that fails
// is tried again sooner, with backoff.
func (m *Mover) sweepLoop() {
	defer m.done.Done()
	backoff := time.Duration(0)
	for {
		next := m.o.SweepEvery
		if _, err := m.Sweep(m.ctx); err != nil {
			if m.ctx.Err() != nil {
				return
			}
			backoff = nextBackoff(backoff, m.o)
			next = min(backoff, m.o.SweepEvery)
			m.logger.Warn("sweep the audit outboxes; retrying", "retry_in", next, "err", err)
		} else {
			backoff = 0
		}
		if !m.sleep(next) {
			return
		}
	}
}

// Sweep finds every outbox key that matches Options.Match, on every master
// of a Redis Cluster, and moves it. It returns how many events it stored.
func (m *Mover) Sweep(ctx context.Context) (int, error) {
	if m.o.Match == "" {
		return 0, errors.New("sweep: no Match pattern")
	}
	var (
		mu    sync.Mutex
		total int
	)
	scan := func(ctx context.Context, node redis.UniversalClient) error {
		n, err := m.sweepNode(ctx, node)
		mu.Lock()
		total += n
		mu.Unlock()
		return err
	}
	var err error
	if cc, ok := m.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, m.rdb)
	}
	if err != nil {
		return total, fmt.Errorf("sweep: %w", err)
	}
	return total, nil
}

// sweepNode scans one node page by page, moving each page's keys before
// reading the next: memory stays bounded by a page.
func (m *Mover) sweepNode(ctx context.Context, node redis.UniversalClient) (int, error) {
	total := 0
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, m.o.Match, 500).Result()
		if err != nil {
			return total, err
		}
		n, err := m.Move(ctx, keys...)
		total += n
		if err != nil {
			return total, err
		}
		if cursor = next; cursor == 0 {
			return total, nil
		}
	}
}
