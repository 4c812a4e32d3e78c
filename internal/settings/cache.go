package settings

import (
	"context"
	"strconv"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"
)

// DefaultCacheSize bounds the companies a Cache holds.
const DefaultCacheSize = 10_000

// Cache holds companies' settings in this instance's memory, so reading
// them costs no SQL. It is only as fresh as the notices it is given:
// whoever wires it calls Invalidate for every notice of a company's
// change, and SetLive(false) whenever notices may be missed (Redis away),
// which empties it and sends every read to the database until SetLive(true).
type Cache struct {
	load  func(ctx context.Context, company string) (Settings, error)
	group singleflight.Group

	mu      sync.Mutex
	entries *lru.Cache[string, *entry]
	live    bool
	size    int
	gen     uint64 // the last generation given to any entry
	// watch is told when a company enters the cache; the stop it returns
	// is called when the company leaves it (evicted), outside mu.
	watch   func(company string) (stop func())
	evicted []func() // stops of evicted companies, called once mu is released
}

// entry is one company's settings, or a load in flight when !ok. gen is
// taken from the cache's counter when the entry is made and at every
// invalidation, so a load that began before one is never stored (not
// even into a new entry after an eviction): a reader never sees
// settings older than a notice already given.
type entry struct {
	s    Settings
	ok   bool
	gen  uint64
	stop func() // ends the company's watch
}

// CacheOption configures a Cache.
type CacheOption func(*Cache)

// WithWatch calls watch(company) when a company enters the cache, so the
// wiring can subscribe to that company's notices, and the stop it returns
// (if not nil) when the company is evicted. watch must return only once
// notices of the company reach this instance: the first load follows it.
func WithWatch(watch func(company string) (stop func())) CacheOption {
	return func(c *Cache) { c.watch = watch }
}

// WithCacheSize bounds the cache to n companies (least recently used go).
func WithCacheSize(n int) CacheOption {
	return func(c *Cache) {
		if n > 0 {
			c.size = n
		}
	}
}

// NewCache returns a cache in front of load, not live until SetLive(true).
func NewCache(load func(ctx context.Context, company string) (Settings, error), opts ...CacheOption) *Cache {
	c := &Cache{load: load, size: DefaultCacheSize}
	for _, o := range opts {
		o(c)
	}
	// Called under mu by Add: the stop waits until mu is released.
	c.entries, _ = lru.NewWithEvict(c.size, func(_ string, e *entry) {
		if e.stop != nil {
			c.evicted = append(c.evicted, e.stop)
		}
	})
	return c
}

// unlock releases mu and then ends the watches of evicted companies, so a
// watch's stop never waits on mu (the notices it delivers take mu).
func (c *Cache) unlock() {
	stops := c.evicted
	c.evicted = nil
	c.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
}

// Get returns company's settings from memory, loading them at most once
// at a time per company and generation. What it returns is shared with
// other readers: read it, never change it.
func (c *Cache) Get(ctx context.Context, company string) (Settings, error) {
	s, hit, gen, live := c.lookup(company)
	switch {
	case !live:
		return c.load(ctx, company)
	case hit:
		return s, nil
	}
	v, err, _ := c.group.Do(company+"\x00"+strconv.FormatUint(gen, 10), func() (any, error) {
		// A reader that missed just before the previous load stored its
		// value comes here after that flight ended: take the value.
		if s, hit, _, _ := c.lookup(company); hit {
			return s, nil
		}
		s, err := c.load(ctx, company)
		if err == nil {
			c.store(company, gen, s)
		}
		return s, err
	})
	if err != nil {
		return Settings{}, err
	}
	return v.(Settings), nil
}

// lookup returns company's settings if cached. On a miss while live it
// makes the company's entry (watching its notices before any load) and
// returns the generation a load must match to be kept.
func (c *Cache) lookup(company string) (s Settings, hit bool, gen uint64, live bool) {
	c.mu.Lock()
	if !c.live {
		c.mu.Unlock()
		return Settings{}, false, 0, false
	}
	e, found := c.entries.Get(company)
	if found && e.ok {
		s := e.s
		c.mu.Unlock()
		return s, true, 0, true
	}
	if !found {
		c.gen++
		e = &entry{gen: c.gen}
		c.entries.Add(company, e)
	}
	gen = e.gen
	c.unlock()
	if !found && c.watch != nil {
		c.startWatch(company, e)
	}
	return Settings{}, false, gen, true
}

// Miss tells whether a read of company's settings would load them, and
// then returns fill, which keeps settings the caller read itself, with
// its own data in one statement, by the rules of a load: fill keeps
// nothing if a notice of a change (or this instance's own Put) came since
// Miss, or the cache went dark. A cache that is dark misses nothing:
// reads go to the database anyway, and nothing would be kept.
func (c *Cache) Miss(company string) (fill func(Settings), miss bool) {
	_, hit, gen, live := c.lookup(company)
	if hit || !live {
		return nil, false
	}
	return func(s Settings) { c.store(company, gen, s) }, true
}

// startWatch subscribes to company's notices for entry e. A notice that
// comes while the load runs bumps e.gen, so the load is not kept.
func (c *Cache) startWatch(company string, e *entry) {
	stop := c.watch(company)
	if stop == nil {
		return
	}
	c.mu.Lock()
	if cur, ok := c.entries.Peek(company); ok && cur == e {
		e.stop = stop
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	stop() // evicted while subscribing
}

// store keeps s unless the company was invalidated (or evicted, or the
// cache went dark) since the load began.
func (c *Cache) store(company string, gen uint64, s Settings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries.Peek(company); ok && c.live && e.gen == gen {
		e.s, e.ok = s, true
	}
}

// Invalidate drops company's settings: the next read reloads them.
func (c *Cache) Invalidate(company string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries.Peek(company); ok {
		c.gen++
		e.ok, e.gen = false, c.gen
	}
}

// Put stores settings this instance has just committed, so its own next
// read sees them without a reload, and no load that began before the
// commit is kept. Of two commits put out of order the later UpdatedAt
// stays (every change moves it forward). An entry without settings (a
// notice came, maybe of a later change elsewhere) is left to reload.
func (c *Cache) Put(company string, s Settings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries.Peek(company)
	if !ok || !c.live {
		return
	}
	c.gen++
	e.gen = c.gen
	if e.ok && !s.UpdatedAt.Before(e.s.UpdatedAt) {
		e.s = s
	}
}

// SetLive turns the cache on or off. Either way it empties it: notices
// may have been missed while it was off.
func (c *Cache) SetLive(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries.Values() {
		c.gen++
		e.ok, e.gen = false, c.gen
	}
	c.live = live
}
