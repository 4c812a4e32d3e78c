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
	watch   func(company string) // told when a company enters the cache
}

// entry is one company's settings, or a load in flight when !ok. gen goes
// up with every invalidation, so a load that began before one is never
// stored: a reader never sees settings older than a notice already given.
type entry struct {
	s   Settings
	ok  bool
	gen uint64
}

// CacheOption configures a Cache.
type CacheOption func(*Cache)

// WithWatch calls watch(company) when a company enters the cache, so the
// wiring can subscribe to that company's notices.
func WithWatch(watch func(company string)) CacheOption {
	return func(c *Cache) { c.watch = watch }
}

// WithCacheSize bounds the cache to n companies (least recently used go).
func WithCacheSize(n int) CacheOption {
	return func(c *Cache) {
		if n > 0 {
			c.entries, _ = lru.New[string, *entry](n)
		}
	}
}

// NewCache returns a cache in front of load, not live until SetLive(true).
func NewCache(load func(ctx context.Context, company string) (Settings, error), opts ...CacheOption) *Cache {
	c := &Cache{load: load}
	c.entries, _ = lru.New[string, *entry](DefaultCacheSize)
	for _, o := range opts {
		o(c)
	}
	return c
}

// Get returns company's settings from memory, loading them at most once
// at a time per company and generation.
func (c *Cache) Get(ctx context.Context, company string) (Settings, error) {
	c.mu.Lock()
	if !c.live {
		c.mu.Unlock()
		return c.load(ctx, company)
	}
	e, found := c.entries.Get(company)
	if found && e.ok {
		s := e.s
		c.mu.Unlock()
		return s, nil
	}
	if !found {
		e = &entry{}
		c.entries.Add(company, e)
	}
	gen := e.gen
	c.mu.Unlock()
	if !found && c.watch != nil {
		c.watch(company)
	}

	v, err, _ := c.group.Do(company+"\x00"+strconv.FormatUint(gen, 10), func() (any, error) {
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
		e.ok, e.gen = false, e.gen+1
	}
}

// Put stores settings this instance has just committed, so its own next
// read sees them without a reload (and no older load in flight wins).
func (c *Cache) Put(company string, s Settings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries.Peek(company); ok && c.live {
		e.s, e.ok, e.gen = s, true, e.gen+1
	}
}

// SetLive turns the cache on or off. Either way it empties it: notices
// may have been missed while it was off.
func (c *Cache) SetLive(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries.Values() {
		e.ok, e.gen = false, e.gen+1
	}
	c.live = live
}
