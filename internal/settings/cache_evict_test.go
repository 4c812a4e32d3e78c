package settings_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/twofactor/service/internal/settings"
)

// TestCacheEvictedDuringLoad (red-team finding): a load begins (reading
// the old settings); the company is evicted; the change commits and its notice
// comes (nothing cached to drop); a reader then asks. The company's new
// entry started again at generation 0, the generation the old load was
// keyed and stored by: the reader joined (or was handed) the old load's
// value, cached with no notice left to drop it. Generations now come
// from one counter for the whole cache and are never reused.
func TestCacheEvictedDuringLoad(t *testing.T) {
	var (
		mu     sync.Mutex
		method = settings.SMSWithEmailBackup
		first  = true
	)
	hold, began := make(chan struct{}), make(chan struct{}, 1)
	load := func(_ context.Context, co string) (settings.Settings, error) {
		mu.Lock()
		m, h := method, first && co == "acme"
		if h {
			first = false
		}
		mu.Unlock()
		if h {
			began <- struct{}{}
			<-hold
		}
		return settings.Settings{Company: co, DeliveryMethod: m}, nil
	}
	entered := make(chan string, 16)
	c := settings.NewCache(load, settings.WithCacheSize(1), settings.WithWatch(func(co string) func() {
		entered <- co
		return func() {}
	}))
	c.SetLive(true)
	old := make(chan settings.Settings)
	go func() { old <- mustGet(t, c, "acme") }()
	<-began // the old load is in flight, holding SMS_WITH_EMAIL_BACKUP

	mustGet(t, c, "other") // evicts acme
	mu.Lock()
	method = settings.EmailOnly // the change commits, then its notice comes
	mu.Unlock()
	c.Invalidate("acme")

	fresh := make(chan settings.Settings)
	go func() { fresh <- mustGet(t, c, "acme") }()
	for seen := 0; seen < 2; { // acme's first entry, then the fresh reader's
		if <-entered == "acme" {
			seen++
		}
	}
	close(hold)
	<-old
	if got := (<-fresh).DeliveryMethod; got != settings.EmailOnly {
		t.Errorf("reader after the notice got %s, want EMAIL_ONLY", got)
	}
	if got := mustGet(t, c, "acme").DeliveryMethod; got != settings.EmailOnly {
		t.Errorf("cached %s after the notice, want EMAIL_ONLY", got)
	}
}

// TestCacheReadsNoOlderThanANotice: readers, invalidations and a
// committing writer race; every read that starts after a change's notice
// sees that change or a later one.
func TestCacheReadsNoOlderThanANotice(t *testing.T) {
	var (
		mu      sync.Mutex
		version int
	)
	methods := []settings.DeliveryMethod{settings.SMSWithEmailBackup, settings.EmailOnly}
	load := func(_ context.Context, co string) (settings.Settings, error) {
		mu.Lock()
		v := version
		mu.Unlock()
		return settings.Settings{Company: co, DeliveryMethod: methods[v%2], Defaults: nil, UpdatedAt: epoch.AddDate(0, 0, v)}, nil
	}
	c := settings.NewCache(load)
	c.SetLive(true)
	var notified sync.Mutex
	lastNotice := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= 2000; i++ {
			mu.Lock()
			version = i
			mu.Unlock()
			c.Invalidate("acme")
			notified.Lock()
			lastNotice = i
			notified.Unlock()
		}
		close(stop)
	}()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				notified.Lock()
				told := lastNotice
				notified.Unlock()
				s := mustGet(t, c, "acme")
				if v := int(s.UpdatedAt.Sub(epoch).Hours() / 24); v < told {
					t.Errorf("read version %d after the notice of version %d", v, told)
					return
				}
			}
		}()
	}
	wg.Wait()
}

var epoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
