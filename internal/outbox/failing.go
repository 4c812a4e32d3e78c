package outbox

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// failLogEvery bounds the log: a company that keeps failing is named at
// its first failure and then at most once per this period.
const failLogEvery = time.Minute

// failing tracks the companies whose events the database refuses (a
// broken chain head, a constraint, a database that is away). Their keys
// are parked and retried with the company's own backoff, while other
// companies' events keep moving.
type failing struct {
	mu        sync.Mutex
	o         Options
	logger    *slog.Logger
	companies map[string]*failure
	parked    map[string]string // outbox key: the company it waits for
}

// failure is one company's run of failures.
type failure struct {
	delay    time.Duration
	retryAt  time.Time
	sinceLog int // failures not logged yet
	loggedAt time.Time
	logged   bool
	keys     map[string]struct{}
}

func newFailing(o Options, logger *slog.Logger) *failing {
	return &failing{o: o, logger: logger, companies: map[string]*failure{}, parked: map[string]string{}}
}

// fail records that company's events in keys were not stored. Beyond
// MaxPending companies, a new one is not tracked: its keys are left to
// the sweeper.
func (f *failing) fail(ctx context.Context, company string, err error, keys []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.companies[company]
	if c == nil {
		if len(f.companies) >= f.o.MaxPending {
			return
		}
		c = &failure{keys: map[string]struct{}{}}
		f.companies[company] = c
	}
	now := f.o.Now()
	c.delay = nextBackoff(c.delay, f.o)
	c.retryAt = now.Add(c.delay)
	c.sinceLog++
	for _, k := range keys {
		c.keys[k] = struct{}{}
		f.parked[k] = company
	}
	if !c.logged || now.Sub(c.loggedAt) >= failLogEvery {
		f.logger.WarnContext(ctx, "audit events of a company cannot be stored; other companies' events still move",
			"company", company, "failures", c.sinceLog, "retry_in", c.delay, "err", err)
		c.logged, c.loggedAt, c.sinceLog = true, now, 0
	}
}

// ok records that company's events were stored: it is no longer failing.
// It returns the company's keys that were waiting, to move now.
func (f *failing) ok(ctx context.Context, company string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.companies[company]
	if c == nil {
		return nil
	}
	var waiting []string
	for k := range c.keys {
		if f.parked[k] == company {
			delete(f.parked, k)
			waiting = append(waiting, k)
		}
	}
	delete(f.companies, company)
	if c.logged {
		f.logger.InfoContext(ctx, "audit events of a company are stored again", "company", company)
	}
	return waiting
}

// isParked reports whether key waits for its company's backoff.
func (f *failing) isParked(key string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.parked[key]
	return ok
}

// due unparks and returns the keys of the companies whose backoff is
// over, and tells when the next one will be (zero: none is waiting).
func (f *failing) due() (keys []string, next time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.o.Now()
	for company, c := range f.companies {
		if len(c.keys) == 0 {
			// Retrying now: fail or ok follows, unless the key was moved
			// elsewhere meanwhile; then forget the company in time.
			if now.Sub(c.retryAt) > 2*f.o.MaxBackoff+failLogEvery {
				delete(f.companies, company)
			}
			continue
		}
		if now.Before(c.retryAt) {
			if next.IsZero() || c.retryAt.Before(next) {
				next = c.retryAt
			}
			continue
		}
		for k := range c.keys {
			if f.parked[k] == company {
				delete(f.parked, k)
				keys = append(keys, k)
			}
		}
		clear(c.keys)
	}
	return keys, next
}
