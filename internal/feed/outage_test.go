package feed_test

import (
	"slices"
	"testing"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// Redis goes away (as in a restart) while a subscriber listens: the events
// written meanwhile, whose notices are lost, still reach it, and so do
// those written once Redis is back. The poll is off, so it is the hub's
// own recovery that delivers them. The machine's Redis is shared, so what
// goes away is a proxy between the app and Redis.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	var proxy *apptest.Proxy
	s := apptest.Start(t, noPoll, apptest.RedisThroughProxy(t, &proxy))
	co := testenv.Company(t)
	c := connect(t, s, admin(co), wsOptions{})
	c.primed(s, co, "1")

	proxy.Cut()
	during := writeRaw(t, s, co, 3, 10, true) // announcing fails: Redis is away
	if got := ids(c.edges("1", len(during))); !slices.Equal(got, during) {
		t.Fatalf("during the outage the subscriber got %v, want %v", got, during)
	}
	proxy.Restore()
	for i := range 3 {
		after := writeRaw(t, s, co, 1, 10, true)
		if got := ids(c.edges("1", 1)); !slices.Equal(got, after) {
			t.Fatalf("event %d after the outage: got %v, want %v", i, got, after)
		}
	}
}
