package settings_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/settings"
)

// TestExpectedUpdatedAt: a change names the UpdatedAt it was based on; a
// stale one writes nothing (not even an audit row) and returns the current
// settings with ErrConflict.
func TestExpectedUpdatedAt(t *testing.T) {
	on := true
	changes := []struct {
		name   string
		change func(env, *time.Time) (settings.Settings, error)
	}{
		{"general", func(e env, at *time.Time) (settings.Settings, error) {
			return e.svc.UpdateGeneral(context.Background(), e.root, settings.GeneralUpdate{
				DeliveryMethod: method(settings.EmailOnly), ExpectedUpdatedAt: at})
		}},
		{"defaults", func(e env, at *time.Time) (settings.Settings, error) {
			return e.svc.UpdateDefaults(context.Background(), e.root, settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Web: on}, ExpectedUpdatedAt: at})
		}},
	}
	cases := []struct {
		name      string
		expected  func(current time.Time) *time.Time
		wantWrite bool
	}{
		{"absent", func(time.Time) *time.Time { return nil }, true},
		{"as read", func(c time.Time) *time.Time { return &c }, true},
		// Clients see milliseconds: any value within the stored millisecond matches.
		{"same millisecond", func(c time.Time) *time.Time {
			v := c.Truncate(time.Millisecond).Add(999 * time.Microsecond)
			return &v
		}, true},
		{"a millisecond early", func(c time.Time) *time.Time { v := c.Add(-time.Millisecond); return &v }, false},
		{"later", func(c time.Time) *time.Time { v := c.Add(time.Hour); return &v }, false},
		{"zero", func(time.Time) *time.Time { return &time.Time{} }, false},
	}
	for _, ch := range changes {
		for _, tc := range cases {
			t.Run(ch.name+"/"+tc.name, func(t *testing.T) {
				e := newEnv(t)
				before, err := e.svc.Get(context.Background(), e.root)
				if err != nil {
					t.Fatal(err)
				}
				got, err := ch.change(e, tc.expected(before.UpdatedAt))
				if !tc.wantWrite {
					if !errors.Is(err, settings.ErrConflict) {
						t.Fatalf("err = %v, want ErrConflict", err)
					}
					if !reflect.DeepEqual(got, before) {
						t.Errorf("conflict returned %+v, want the current %+v", got, before)
					}
					if now, _ := e.svc.Get(context.Background(), e.root); !reflect.DeepEqual(now, before) || e.auditRows(t) != 0 {
						t.Errorf("a conflict wrote: settings %+v, %d audit rows", now, e.auditRows(t))
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !got.UpdatedAt.Truncate(time.Millisecond).After(before.UpdatedAt.Truncate(time.Millisecond)) {
					t.Errorf("updatedAt %v does not move past %v at millisecond precision", got.UpdatedAt, before.UpdatedAt)
				}
				if n := e.auditRows(t); n != 1 {
					t.Errorf("%d audit rows, want 1", n)
				}
			})
		}
	}
}

// TestConflictOnFirstUse: a company without settings yet has its defaults
// created, and a made-up expectedUpdatedAt gets them with the conflict.
func TestConflictOnFirstUse(t *testing.T) {
	e := newEnv(t)
	at := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	got, err := e.svc.UpdateGeneral(context.Background(), e.root, settings.GeneralUpdate{
		DeliveryMethod: method(settings.EmailOnly), ExpectedUpdatedAt: &at})
	if !errors.Is(err, settings.ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	stored, err := e.svc.Get(context.Background(), e.root)
	if err != nil || !reflect.DeepEqual(got, stored) || got.DeliveryMethod != settings.SMSWithEmailBackup {
		t.Errorf("conflict returned %+v; stored %+v, %v", got, stored, err)
	}
	if n := e.auditRows(t); n != 0 {
		t.Errorf("%d audit rows", n)
	}
}

// TestBackToBackChangesMoveUpdatedAt: each change, however soon after the
// last, gets an UpdatedAt a client can tell apart at millisecond precision,
// so a chain of changes each based on the last one's answer never conflicts
// and a stale one always does.
func TestBackToBackChangesMoveUpdatedAt(t *testing.T) {
	e := newEnv(t)
	cur, err := e.svc.Get(context.Background(), e.root)
	if err != nil {
		t.Fatal(err)
	}
	first := cur.UpdatedAt.Truncate(time.Millisecond)
	for i := range 20 {
		v := i%2 == 0
		at := cur.UpdatedAt.Truncate(time.Millisecond) // as a client reads it
		next, err := e.svc.UpdateDefaults(context.Background(), e.root, settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Web: v}, ExpectedUpdatedAt: &at})
		if err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		if !next.UpdatedAt.Truncate(time.Millisecond).After(at) {
			t.Fatalf("change %d: updatedAt %v, not after %v", i, next.UpdatedAt, at)
		}
		cur = next
	}
	v := true
	if _, err := e.svc.UpdateDefaults(context.Background(), e.root, settings.DefaultsUpdate{Defaults: map[apps.App]bool{apps.Web: v}, ExpectedUpdatedAt: &first}); !errors.Is(err, settings.ErrConflict) {
		t.Errorf("the first value after 20 changes: err = %v, want ErrConflict", err)
	}
}

// TestConcurrentExpectedUpdatedAt: of concurrent changes based on the same
// read, exactly one is written; the others conflict.
func TestConcurrentExpectedUpdatedAt(t *testing.T) {
	e := newEnv(t)
	cur, err := e.svc.Get(context.Background(), e.root)
	if err != nil {
		t.Fatal(err)
	}
	const workers = 12
	var (
		wg              sync.WaitGroup
		mu              sync.Mutex
		wins, conflicts int
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every worker really changes something, so none is a no-op.
			u := settings.DefaultsUpdate{ExpectedUpdatedAt: &cur.UpdatedAt}
			on := true
			if w%2 == 0 {
				u.Defaults = map[apps.App]bool{apps.Web: on}
			} else {
				u.Defaults = map[apps.App]bool{apps.Manager: on}
			}
			_, err := e.svc.UpdateDefaults(context.Background(), e.root, u)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, settings.ErrConflict):
				conflicts++
			default:
				t.Errorf("worker %d: %v", w, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != workers-1 {
		t.Errorf("%d written, %d conflicts; want 1, %d", wins, conflicts, workers-1)
	}
	if n := e.auditRows(t); n != 1 {
		t.Errorf("%d audit rows, want 1", n)
	}
}
