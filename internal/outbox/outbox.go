// Package outbox moves events from Redis streams (outboxes) to the audit
// table. The challenge scripts append a sign-in's event to the user's
// outbox in the same atomic step as the state change; this package copies
// them to the database in batches, idempotently (audit.Log.AppendOnce
// stores each event uid once), and only then deletes them from Redis. An
// outbox left behind (an instance killed after answering, a database that
// was down) is found by the sweeper, which every instance runs.
//
// Companies fail alone: a company whose events the database refuses keeps
// them in Redis and is retried with its own backoff (and logged now and
// then), while every other company's events keep moving.
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

// Appender stores events at most once each, company by company: the
// result names the companies whose events are stored (audit.Log).
type Appender interface {
	AppendOnce(ctx context.Context, events []*audit.Event) (audit.AppendResult, error)
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
	// MaxPending bounds the keys waiting to be moved (default 10,000),
	// and the failing companies tracked; a key beyond it waits for the
	// sweeper.
	MaxPending int
	// MinBackoff and MaxBackoff bound the wait between failed moves
	// (defaults 100ms and 30s): the database may be down for a while, or
	// refuse one company's events. Each failing company waits on its own.
	MinBackoff, MaxBackoff time.Duration
	// Linger is how long the worker waits for a fuller batch when the
	// previous move ended less than Linger ago and left nothing to read
	// (default 20ms; negative: never). Under sustained sign-ins one
	// larger move costs the database and Redis much less than many small
	// ones; a quiet system moves at once.
	Linger time.Duration
	// Manual starts no goroutine: Kick does nothing, and only Move and
	// Sweep move events. For benchmarks and for tests that play an
	// instance that dies before moving.
	Manual bool
	// Now is the clock of the per-company backoff and its log (nil: the
	// wall clock), for tests.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	o.SweepEvery = cmp.Or(o.SweepEvery, time.Minute)
	o.Batch = cmp.Or(o.Batch, 100)
	o.KeysPerMove = cmp.Or(o.KeysPerMove, 64)
	o.MaxPending = cmp.Or(o.MaxPending, 10000)
	o.MinBackoff = cmp.Or(o.MinBackoff, 100*time.Millisecond)
	o.MaxBackoff = max(cmp.Or(o.MaxBackoff, 30*time.Second), o.MinBackoff)
	o.Linger = cmp.Or(o.Linger, 20*time.Millisecond)
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Mover moves outbox entries to the audit table.
type Mover struct {
	rdb    redis.UniversalClient
	decode Decoder
	sink   Appender
	logger *slog.Logger
	o      Options
	fails  *failing

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
	o = o.withDefaults()
	ctx, stop := context.WithCancel(context.Background())
	m := &Mover{rdb: rdb, decode: decode, sink: sink, logger: logger, o: o, fails: newFailing(o, logger),
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

// Kick asks for key to be moved soon. It never blocks. A key whose
// company is failing waits for the company's backoff instead.
func (m *Mover) Kick(key string) {
	if m.o.Manual || m.ctx.Err() != nil || m.fails.isParked(key) {
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
		delete(m.pending, k)
		// Kicked before its company failed: it waits for the backoff
		// now (due kicks it again), not for the next move.
		if m.fails.isParked(k) {
			continue
		}
		keys = append(keys, k)
	}
	return keys
}

// work moves kicked keys, backing off while Redis fails, and takes back
// the keys of failing companies when their backoff is over.
func (m *Mover) work() {
	defer m.done.Done()
	backoff := time.Duration(0)
	var lastSmall time.Time // when the last move that left nothing to read ended
	for {
		if backoff > 0 && !m.sleep(backoff) {
			return
		}
		next := m.requeueDue()
		if rest := m.o.Linger - time.Since(lastSmall); !lastSmall.IsZero() && rest > 0 && !m.gather(rest) {
			return
		}
		lastSmall = time.Time{}
		keys := m.take(m.o.KeysPerMove)
		if len(keys) == 0 {
			if !m.idle(next) {
				return
			}
			continue
		}
		res, err := m.move(m.ctx, keys)
		if err != nil {
			if m.ctx.Err() != nil {
				return
			}
			backoff = nextBackoff(backoff, m.o)
			m.logger.Warn("move audit events from the outbox; retrying", "keys", len(keys), "retry_in", backoff, "err", err)
			res.more = keys // a failing company's keys stay parked (Kick)
		} else {
			backoff = 0
			if len(res.more) == 0 {
				lastSmall = time.Now()
			}
		}
		for _, k := range res.more {
			m.Kick(k)
		}
	}
}

// gather waits up to d, or until a whole batch of keys is pending; it
// reports whether to go on.
func (m *Mover) gather(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for m.pendingLen() < m.o.KeysPerMove {
		select {
		case <-m.ctx.Done():
			return false
		case <-t.C:
			return true
		case <-m.wake:
		}
	}
	return true
}

func (m *Mover) pendingLen() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// requeueDue kicks the keys of failing companies whose wait is over and
// tells when the next wait ends.
func (m *Mover) requeueDue() time.Time {
	keys, next := m.fails.due()
	for _, k := range keys {
		m.Kick(k)
	}
	return next
}

// idle waits for a kick, or for a failing company's wait to end at next
// (zero: none); it reports whether to go on.
func (m *Mover) idle(next time.Time) bool {
	var timer <-chan time.Time
	if !next.IsZero() {
		t := time.NewTimer(max(next.Sub(m.o.Now()), time.Millisecond))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-m.ctx.Done():
		return false
	case <-m.wake:
	case <-timer:
	}
	return true
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
// events were stored (an event stored before is not counted). A batch or
// a company that fails does not stop the rest; the error joins the
// failures (a *audit.CompanyError per company refused).
func (m *Mover) Move(ctx context.Context, keys ...string) (int, error) {
	n, errs := m.moveAll(ctx, keys, false)
	return n, errs.err()
}

// moveAll is Move; skipParked leaves out the keys of companies waiting
// for their backoff (the worker retries those).
func (m *Mover) moveAll(ctx context.Context, keys []string, skipParked bool) (int, *errorSet) {
	errs := &errorSet{}
	total := 0
	for len(keys) > 0 && ctx.Err() == nil {
		chunk := m.nextChunk(&keys, skipParked)
		for len(chunk) > 0 {
			res, err := m.move(ctx, chunk)
			total += res.stored
			for company, f := range res.failed {
				errs.addCompany(&audit.CompanyError{Company: company, Err: f.err})
			}
			if err != nil {
				errs.addInfra(err) // go on with the next chunk
				break
			}
			chunk = res.more
		}
	}
	if err := ctx.Err(); err != nil {
		errs.addInfra(err)
	}
	return total, errs
}

// nextChunk takes up to KeysPerMove keys off the front of keys.
func (m *Mover) nextChunk(keys *[]string, skipParked bool) []string {
	chunk := make([]string, 0, min(len(*keys), m.o.KeysPerMove))
	for len(*keys) > 0 && len(chunk) < m.o.KeysPerMove {
		k := (*keys)[0]
		*keys = (*keys)[1:]
		if !skipParked || !m.fails.isParked(k) {
			chunk = append(chunk, k)
		}
	}
	return chunk
}

// sweepLoop sweeps at start and then every SweepEvery; a sweep that Redis
// failed is tried again sooner, with backoff. Failing companies are the
// worker's to retry and log: the sweep leaves their keys alone.
func (m *Mover) sweepLoop() {
	defer m.done.Done()
	backoff := time.Duration(0)
	for {
		next := m.o.SweepEvery
		if _, errs := m.sweep(m.ctx, true); errs.infraErr() != nil {
			if m.ctx.Err() != nil {
				return
			}
			backoff = nextBackoff(backoff, m.o)
			next = min(backoff, m.o.SweepEvery)
			m.logger.Warn("sweep the audit outboxes; retrying", "retry_in", next, "err", errs.infraErr())
		} else {
			backoff = 0
		}
		if !m.sleep(next) {
			return
		}
	}
}

// Sweep finds every outbox key that matches Options.Match, on every master
// of a Redis Cluster, and moves it. It returns how many events it stored;
// like Move, it goes on past a failure and the error joins them.
func (m *Mover) Sweep(ctx context.Context) (int, error) {
	if m.o.Match == "" {
		return 0, errors.New("sweep: no Match pattern")
	}
	n, errs := m.sweep(ctx, false)
	if err := errs.err(); err != nil {
		return n, fmt.Errorf("sweep: %w", err)
	}
	return n, nil
}

func (m *Mover) sweep(ctx context.Context, skipParked bool) (int, *errorSet) {
	var (
		mu    sync.Mutex
		total int
		errs  = &errorSet{}
	)
	scan := func(ctx context.Context, node redis.UniversalClient) error {
		n, nodeErrs := m.sweepNode(ctx, node, skipParked)
		mu.Lock()
		defer mu.Unlock()
		total += n
		errs.merge(nodeErrs)
		return nil
	}
	if cc, ok := m.rdb.(*redis.ClusterClient); ok {
		if err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) }); err != nil {
			errs.addInfra(err)
		}
	} else {
		_ = scan(ctx, m.rdb)
	}
	return total, errs
}

// sweepNode scans one node page by page, moving each page's keys before
// reading the next: memory stays bounded by a page. A page that fails to
// move does not stop the scan.
func (m *Mover) sweepNode(ctx context.Context, node redis.UniversalClient, skipParked bool) (int, *errorSet) {
	errs := &errorSet{}
	total := 0
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, m.o.Match, 500).Result()
		if err != nil {
			errs.addInfra(err)
			return total, errs
		}
		n, pageErrs := m.moveAll(ctx, keys, skipParked)
		total += n
		errs.merge(pageErrs)
		if cursor = next; cursor == 0 || ctx.Err() != nil {
			return total, errs
		}
	}
}
