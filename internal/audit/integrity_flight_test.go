package audit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond until it holds, with a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// blockingCheck counts its runs and answers, with its run number as the
// row count, once release is closed or its context ends.
type blockingCheck struct {
	runs    atomic.Int32
	release chan struct{}
}

func (b *blockingCheck) run(ctx context.Context) (Integrity, error) {
	n := b.runs.Add(1)
	select {
	case <-b.release:
		return Integrity{OK: true, CheckedRows: int(n)}, nil
	case <-ctx.Done():
		return Integrity{}, ctx.Err()
	}
}

func (f *checkFlights) sharers(company string, w Window) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.calls[flightKey(company, w)]; c != nil {
		return c.sharers
	}
	return -1
}

func (f *checkFlights) users(company string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.slots[company]; s != nil {
		return s.users
	}
	return 0
}

// TestIntegrityChecksDoNotMultiply is the domain half of red-team finding
// 3: concurrent requests for one company run one check at a time, and
// those asking the same question share one answer.
func TestIntegrityChecksDoNotMultiply(t *testing.T) {
	f := &checkFlights{calls: map[string]*flight{}, slots: map[string]*companySlot{}}
	check := &blockingCheck{release: make(chan struct{})}
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make([]Integrity, 8)
	do := func(i int, company string, w Window) {
		wg.Go(func() {
			res, err := f.do(ctx, company, w, check.run)
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		})
	}
	do(0, "acme", Window{})
	waitFor(t, "the first check to run", func() bool { return check.runs.Load() == 1 })
	for i := 1; i < 6; i++ {
		do(i, "acme", Window{})
	}
	waitFor(t, "five callers to share it", func() bool { return f.sharers("acme", Window{}) == 5 })
	do(6, "acme", Window{Category: Settings})
	waitFor(t, "another window to wait for acme's turn", func() bool { return f.users("acme") == 2 })
	if n := check.runs.Load(); n != 1 {
		t.Fatalf("%d checks ran while acme's first held its turn, want 1", n)
	}
	// Another company does not wait for acme: it would block on release
	// too, so it gets its own check that counts as run 2.
	do(7, "globex", Window{})
	waitFor(t, "globex's check to run beside acme's", func() bool { return check.runs.Load() == 2 })
	close(check.release)
	wg.Wait()
	if n := check.runs.Load(); n != 3 {
		t.Errorf("%d checks ran for 8 callers, want 3 (one shared, one other window, one other company)", n)
	}
	for i := range 6 {
		if results[i].CheckedRows != 1 || !results[i].OK {
			t.Errorf("caller %d got %+v, want the first run's answer", i, results[i])
		}
	}
}

// TestIntegritySharerOutlivesTheRunner: when the caller running a shared
// check gives up, the others run it again rather than take its error.
func TestIntegritySharerOutlivesTheRunner(t *testing.T) {
	f := &checkFlights{calls: map[string]*flight{}, slots: map[string]*companySlot{}}
	check := &blockingCheck{release: make(chan struct{})}
	runnerCtx, cancel := context.WithCancel(context.Background())
	runnerErr := make(chan error, 1)
	go func() {
		_, err := f.do(runnerCtx, "acme", Window{}, check.run)
		runnerErr <- err
	}()
	waitFor(t, "the check to run", func() bool { return check.runs.Load() == 1 })
	shared := make(chan Integrity, 1)
	go func() {
		res, err := f.do(context.Background(), "acme", Window{}, check.run)
		if err != nil {
			t.Error(err)
		}
		shared <- res
	}()
	waitFor(t, "a caller to share it", func() bool { return f.sharers("acme", Window{}) == 1 })
	cancel()
	if err := <-runnerErr; !errors.Is(err, context.Canceled) {
		t.Errorf("the runner got %v, want its context's end", err)
	}
	waitFor(t, "the sharer to run it again", func() bool { return check.runs.Load() == 2 })
	close(check.release)
	if res := <-shared; !res.OK || res.CheckedRows != 2 {
		t.Errorf("the sharer got %+v, want the second run's answer", res)
	}
	if n := f.users("acme"); n != 0 {
		t.Errorf("%d users of acme's turn left", n)
	}
}
