package feed_test

import (
	"bytes"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// 200 subscribe/disconnect cycles leave no goroutine behind, however the
// client leaves: closing politely, stopping the operation first, or
// dropping the TCP connection. Not parallel, so that the count is this
// test's alone (parallel tests wait until the serial ones are done).
func TestNoGoroutineLeak(t *testing.T) {
	s := apptest.Start(t)
	co := testenv.Company(t)
	createUsers(t, s, co, "leak", 2)
	_, cursors := logIDs(t, s, co, nil)
	cycle := func(i int) {
		proto := transportWS
		if i%4 == 3 {
			proto = legacyWS
		}
		c := connect(t, s, admin(co), wsOptions{proto: proto})
		// Resume after the first event: the second one, replayed, shows
		// the stream is running before the client leaves.
		c.subscribe("1", nil, cursors[0])
		c.edges("1", 1)
		switch i % 3 {
		case 0:
			c.close()
		case 1:
			c.stop("1")
			if m := c.nextFor("1"); m.Type != "complete" {
				t.Fatalf("after stop got %s, want complete", m.Type)
			}
			c.close()
		case 2:
			_ = c.conn.CloseNow()
		}
	}
	// Warm up: pools, the hub's Redis subscription, the HTTP client.
	for i := range 3 {
		cycle(i)
	}
	before := settle(t, -1)
	for i := range 200 {
		cycle(i)
	}
	if after := settle(t, before); after > before {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Fatalf("%d goroutines after 200 cycles, %d before:\n%s", after, before, buf.String())
	}
}

// settle waits until the goroutine count is at most target (or, for a
// negative target, stops changing), and returns it. Closing handshakes
// end in the background, so the count takes a moment to come down.
func settle(t *testing.T, target int) int {
	t.Helper()
	deadline := time.Now().Add(wait)
	n, stable := runtime.NumGoroutine(), 0
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		switch {
		case target >= 0 && m <= target:
			return m
		case target < 0 && m == n:
			if stable++; stable == 5 {
				return m
			}
		default:
			stable = 0
		}
		n = m
	}
	return n
}
