package settings_test

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twofactor/service/internal/settings"
)

// fakeStore is a settings source whose loads can be held mid-flight.
type fakeStore struct {
	mu     sync.Mutex
	method settings.DeliveryMethod
	loads  atomic.Int64
	hold   chan struct{} // when set, each load waits on it
	began  chan struct{} // when set, each load signals here first
	fail   error
}

func (f *fakeStore) load(_ context.Context, _ string) (settings.Settings, error) {
	f.loads.Add(1)
	f.mu.Lock()
	m, hold, began, fail := f.method, f.hold, f.began, f.fail
	f.mu.Unlock()
	if began != nil {
		began <- struct{}{}
	}
	if hold != nil {
		<-hold
	}
	if fail != nil {
		return settings.Settings{}, fail
	}
	return settings.Settings{DeliveryMethod: m}, nil
}

func (f *fakeStore) set(m settings.DeliveryMethod) {
	f.mu.Lock()
	f.method = m
	f.mu.Unlock()
}

func mustGet(t *testing.T, c *settings.Cache, company string) settings.Settings {
	t.Helper()
	s, err := c.Get(context.Background(), company)
	if err != nil {
		t.Fatalf("get %s: %v", company, err)
	}
	return s
}

func TestCacheServesFromMemoryUntilInvalidated(t *testing.T) {
	f := &fakeStore{method: settings.SMSWithEmailBackup}
	var watched []string
	c := settings.NewCache(f.load, settings.WithWatch(func(co string) func() { watched = append(watched, co); return nil }))
	c.SetLive(true)
	for range 5 {
		mustGet(t, c, "acme")
	}
	if n := f.loads.Load(); n != 1 {
		t.Fatalf("%d loads for 5 reads, want 1", n)
	}
	if len(watched) != 1 || watched[0] != "acme" {
		t.Fatalf("watched %v, want [acme] once", watched)
	}
	f.set(settings.EmailOnly)
	c.Invalidate("acme")
	if got := mustGet(t, c, "acme").DeliveryMethod; got != settings.EmailOnly {
		t.Fatalf("after invalidation: %s, want EMAIL_ONLY", got)
	}
	c.Invalidate("other") // unknown: nothing to do
	if n := f.loads.Load(); n != 2 {
		t.Fatalf("%d loads, want 2", n)
	}
}

// TestCacheDropsALoadOlderThanANotice: a load that began before an
// invalidation is returned to its own caller but never stored, and a
// reader after the invalidation does not join it.
func TestCacheDropsALoadOlderThanANotice(t *testing.T) {
	f := &fakeStore{method: settings.SMSWithEmailBackup}
	c := settings.NewCache(f.load)
	c.SetLive(true)
	f.hold, f.began = make(chan struct{}), make(chan struct{}, 4)
	done := make(chan settings.Settings)
	go func() { done <- mustGet(t, c, "acme") }()
	<-f.began // the old load is in flight, holding SMS_WITH_EMAIL_BACKUP

	f.set(settings.EmailOnly) // the change commits, then its notice comes
	c.Invalidate("acme")
	fresh := make(chan settings.Settings)
	go func() { fresh <- mustGet(t, c, "acme") }()
	<-f.began // a second load: the reader did not join the stale one
	close(f.hold)
	<-done
	if got := (<-fresh).DeliveryMethod; got != settings.EmailOnly {
		t.Fatalf("reader after the notice got %s", got)
	}
	f.mu.Lock()
	f.hold, f.began = nil, nil
	f.mu.Unlock()
	if got := mustGet(t, c, "acme").DeliveryMethod; got != settings.EmailOnly {
		t.Fatalf("cached %s, want EMAIL_ONLY", got)
	}
}

func TestCacheOneLoadPerCompanyAtATime(t *testing.T) {
	f := &fakeStore{method: settings.EmailOnly, hold: make(chan struct{}), began: make(chan struct{}, 64)}
	c := settings.NewCache(f.load)
	c.SetLive(true)
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); mustGet(t, c, "acme") }()
	}
	<-f.began
	close(f.hold)
	wg.Wait()
	if n := f.loads.Load(); n != 1 {
		t.Fatalf("%d loads for 50 concurrent readers, want 1", n)
	}
}

func TestCachePutIsReadByItsOwnInstance(t *testing.T) {
	f := &fakeStore{method: settings.SMSWithEmailBackup}
	c := settings.NewCache(f.load)
	c.SetLive(true)
	mustGet(t, c, "acme")
	c.Put("acme", settings.Settings{DeliveryMethod: settings.EmailOnly})
	if got := mustGet(t, c, "acme").DeliveryMethod; got != settings.EmailOnly {
		t.Fatalf("after Put: %s", got)
	}
	if n := f.loads.Load(); n != 1 {
		t.Fatalf("%d loads, want 1", n)
	}
}

// TestCacheWhileNotLive: without notices every read goes to the store,
// and going live again starts from empty.
func TestCacheWhileNotLive(t *testing.T) {
	f := &fakeStore{method: settings.SMSWithEmailBackup}
	c := settings.NewCache(f.load)
	for range 3 {
		mustGet(t, c, "acme")
	}
	if n := f.loads.Load(); n != 3 {
		t.Fatalf("not live: %d loads for 3 reads, want 3", n)
	}
	c.SetLive(true)
	mustGet(t, c, "acme")
	c.SetLive(false) // Redis went away
	f.set(settings.EmailOnly)
	if got := mustGet(t, c, "acme").DeliveryMethod; got != settings.EmailOnly {
		t.Fatalf("dark cache served %s", got)
	}
	c.SetLive(true)
	if got := mustGet(t, c, "acme").DeliveryMethod; got != settings.EmailOnly {
		t.Fatalf("after going live: %s", got)
	}
}

func TestCacheErrorsAreNotCached(t *testing.T) {
	f := &fakeStore{method: settings.EmailOnly, fail: errors.New("database down")}
	c := settings.NewCache(f.load)
	c.SetLive(true)
	if _, err := c.Get(context.Background(), "acme"); err == nil {
		t.Fatal("want the load's error")
	}
	f.mu.Lock()
	f.fail = nil
	f.mu.Unlock()
	if got := mustGet(t, c, "acme").DeliveryMethod; got != settings.EmailOnly {
		t.Fatalf("after recovery: %s", got)
	}
}

func TestCacheIsBounded(t *testing.T) {
	f := &fakeStore{method: settings.EmailOnly}
	c := settings.NewCache(f.load, settings.WithCacheSize(2))
	c.SetLive(true)
	for _, co := range []string{"a", "b", "c", "a"} {
		mustGet(t, c, co)
	}
	if n := f.loads.Load(); n != 4 {
		t.Fatalf("%d loads, want 4 (a was evicted by c)", n)
	}
}

// TestCacheEndsTheWatchOfAnEvictedCompany: a company that leaves the cache
// stops being watched, and one that comes back is watched again.
func TestCacheEndsTheWatchOfAnEvictedCompany(t *testing.T) {
	f := &fakeStore{method: settings.EmailOnly}
	watching := map[string]int{}
	c := settings.NewCache(f.load, settings.WithCacheSize(1), settings.WithWatch(func(co string) func() {
		watching[co]++
		return func() { watching[co]-- }
	}))
	c.SetLive(true)
	for _, co := range []string{"a", "b", "a"} {
		mustGet(t, c, co)
	}
	if want := map[string]int{"a": 1, "b": 0}; !maps.Equal(watching, want) {
		t.Fatalf("watching %v, want %v", watching, want)
	}
}

// TestCachePutKeepsTheLaterCommit: commits put out of order leave the one
// with the later UpdatedAt; an entry a notice emptied is not refilled by
// a Put (the notice may be of a later change made elsewhere).
func TestCachePutKeepsTheLaterCommit(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := &fakeStore{method: settings.SMSWithEmailBackup}
	c := settings.NewCache(f.load)
	c.SetLive(true)
	mustGet(t, c, "acme")
	c.Put("acme", settings.Settings{DeliveryMethod: settings.EmailOnly, UpdatedAt: t0.Add(2 * time.Millisecond)})
	c.Put("acme", settings.Settings{DeliveryMethod: settings.SMSWithEmailBackup, UpdatedAt: t0.Add(time.Millisecond)})
	if got := mustGet(t, c, "acme").DeliveryMethod; got != settings.EmailOnly {
		t.Fatalf("after out-of-order puts: %s, want the later EMAIL_ONLY", got)
	}
	f.set(settings.SMSWithEmailBackup) // a later change elsewhere, then its notice
	c.Invalidate("acme")
	c.Put("acme", settings.Settings{DeliveryMethod: settings.EmailOnly, UpdatedAt: t0.Add(3 * time.Millisecond)})
	if got := mustGet(t, c, "acme").DeliveryMethod; got != settings.SMSWithEmailBackup {
		t.Fatalf("a put after a notice served %s, want the reloaded SMS_WITH_EMAIL_BACKUP", got)
	}
}
