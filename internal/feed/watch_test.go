package feed_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/feed"
	"github.com/twofactor/service/internal/testenv"
)

// notices collects what a Watch callback receives, without blocking it.
func notices(t *testing.T, s *apptest.Server, company string) (<-chan audit.Notice, func()) {
	t.Helper()
	ch := make(chan audit.Notice, 64)
	stop := s.App.Feed.Watch(company, func(n audit.Notice) {
		select {
		case ch <- n:
		default:
			t.Errorf("watch callback for %s: buffer full", company)
		}
	})
	t.Cleanup(stop)
	return ch, stop
}

func nextNotice(t *testing.T, ch <-chan audit.Notice) audit.Notice {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(30 * time.Second):
		t.Fatal("no notice within 30s")
		return audit.Notice{}
	}
}

// publishRaw sends a notice as another instance (or an older version of
// this one) would, straight to Redis.
func publishRaw(t *testing.T, s *apptest.Server, company, payload string) {
	t.Helper()
	rdb := s.Backends.Redis.UniversalClient
	publish := rdb.Publish
	if _, ok := rdb.(*redis.ClusterClient); ok {
		publish = rdb.SPublish
	}
	if err := publish(t.Context(), feed.ChannelOf(s.App.Feed, company), payload).Err(); err != nil {
		t.Fatal(err)
	}
}

// A company watched on A, with no GraphQL subscriber anywhere, gets the
// notices of changes made through B, with their settings flag, and only
// its own; old-format notices (a bare id) still arrive.
func TestWatchGetsNoticesFromAnotherInstance(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t, noPoll)
	b := apptest.StartPeer(t, a)
	x, y := testenv.Company(t), testenv.Company(t)
	got, _ := notices(t, a, x)

	// Y first: were Y's notice delivered to X's watcher, it would come
	// before X's.
	b.Admin(t, y).Must(t, mCreateUser, map[string]any{"input": map[string]any{"id": "y-user"}}, nil)
	b.Admin(t, x).Must(t, mCreateUser, map[string]any{"input": map[string]any{"id": "x-user"}}, nil)
	n := nextNotice(t, got)
	if want, _ := strconv.ParseInt(lastID(t, a, x), 10, 64); n.Company != x || n.SettingsChanged || n.ID <= 0 {
		t.Fatalf("after createUser got %+v, want {%s id>0 false} (log ends at %d)", n, x, want)
	}
	for _, tc := range []struct {
		name string
		send func()
		want audit.Notice
	}{
		{"settings change", func() {
			if err := b.App.Feed.Notify(t.Context(), audit.Notice{Company: x, ID: 77, SettingsChanged: true}); err != nil {
				t.Fatal(err)
			}
		}, audit.Notice{Company: x, ID: 77, SettingsChanged: true}},
		{"plain notice", func() {
			if err := b.App.Feed.Notify(t.Context(), audit.Notice{Company: x, ID: 78}); err != nil {
				t.Fatal(err)
			}
		}, audit.Notice{Company: x, ID: 78}},
		{"old format", func() { publishRaw(t, b, x, "79") }, audit.Notice{Company: x, ID: 79}},
		{"unreadable: assume settings changed", func() { publishRaw(t, b, x, "garbage") }, audit.Notice{Company: x, SettingsChanged: true}},
	} {
		tc.send()
		if n := nextNotice(t, got); n != tc.want {
			t.Fatalf("%s: got %+v, want %+v", tc.name, n, tc.want)
		}
	}
}

// stop ends the callback and, with the last watcher, the subscription.
func TestWatchStopReleasesTheSubscription(t *testing.T) {
	t.Parallel()
	a := apptest.Start(t, noPoll)
	x := testenv.Company(t)
	first, stopFirst := notices(t, a, x)
	second, stopSecond := notices(t, a, x)
	if n := channelSubs(t, a, x); n != 1 {
		t.Fatalf("two watchers: %d subscriptions to the channel, want 1", n)
	}
	stopFirst()
	stopFirst() // twice is harmless
	publishRaw(t, a, x, "5")
	if n := nextNotice(t, second); n.ID != 5 {
		t.Fatalf("remaining watcher got %+v, want id 5", n)
	}
	if len(first) != 0 {
		t.Fatalf("stopped watcher still got %+v", <-first)
	}
	stopSecond()
	waitSubscribers(t, a, x, 0)
}

// channelSubs counts the Redis subscriptions to company's channel.
func channelSubs(t *testing.T, s *apptest.Server, company string) int64 {
	t.Helper()
	ch := feed.ChannelOf(s.App.Feed, company)
	var m map[string]int64
	var err error
	switch rdb := s.Backends.Redis.UniversalClient.(type) {
	case *redis.ClusterClient:
		// Shard channels are counted only by the master of their slot;
		// a keyless PUBSUB goes to any node.
		var node *redis.Client
		if node, err = rdb.MasterForKey(t.Context(), ch); err == nil {
			m, err = node.PubSubShardNumSub(t.Context(), ch).Result()
		}
	default:
		m, err = rdb.PubSubNumSub(t.Context(), ch).Result()
	}
	if err != nil {
		t.Fatal(err)
	}
	return m[ch]
}

func waitSubscribers(t *testing.T, s *apptest.Server, company string, want int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for channelSubs(t, s, company) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions to %s's channel, want %d", channelSubs(t, s, company), company, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Redis goes away under a watched company: OnLive says notices may be
// missed, then that they flow again once subscribed anew, and they do.
func TestOnLiveAcrossARedisOutage(t *testing.T) {
	t.Parallel()
	var proxy *apptest.Proxy
	a := apptest.Start(t, noPoll, apptest.RedisThroughProxy(t, &proxy))
	x := testenv.Company(t)
	live := liveChanges(a.App.Feed.OnLive)
	got, _ := notices(t, a, x)

	proxy.Cut()
	if v := nextLive(t, live); v {
		t.Fatal("after the cut OnLive said true, want false")
	}
	proxy.Restore()
	if v := nextLive(t, live); !v {
		t.Fatal("after the restore OnLive said false, want true")
	}
	publishRaw(t, a, x, "9 settings")
	if n := nextNotice(t, got); n != (audit.Notice{Company: x, ID: 9, SettingsChanged: true}) {
		t.Fatalf("after the outage got %+v", n)
	}
	// A late registration while live hears nothing until the next change.
	late := liveChanges(a.App.Feed.OnLive)
	if len(late) != 0 {
		t.Fatalf("registered while live: called with %v", <-late)
	}
}

// While Redis is away, Watch does not hold its caller: it returns with
// the hub not live, and the company is subscribed once Redis is back.
func TestWatchWhileRedisIsAway(t *testing.T) {
	t.Parallel()
	var proxy *apptest.Proxy
	a := apptest.Start(t, noPoll, apptest.RedisThroughProxy(t, &proxy))
	x, y := testenv.Company(t), testenv.Company(t)
	notices(t, a, x) // a subscription to break
	live := liveChanges(a.App.Feed.OnLive)
	proxy.Cut()
	if nextLive(t, live) {
		t.Fatal("after the cut OnLive said true")
	}
	got, _ := notices(t, a, y)
	late := liveChanges(a.App.Feed.OnLive)
	if v := nextLive(t, late); v {
		t.Fatal("registered while not live: called with true, want false")
	}
	proxy.Restore()
	if !nextLive(t, live) {
		t.Fatal("after the restore OnLive said false")
	}
	publishRaw(t, a, y, "3")
	if n := nextNotice(t, got); n.ID != 3 {
		t.Fatalf("company watched during the outage got %+v, want id 3", n)
	}
}

// liveChanges registers an OnLive callback that queues what it is told.
// It never blocks, as OnLive requires: a callback that blocked on a full
// channel held the hub's receive loop, and Close waited for it forever
// (TestWatchWhileRedisIsAway hung CI once).
func liveChanges(register func(func(bool))) <-chan bool {
	ch := make(chan bool, 64)
	register(func(v bool) {
		select {
		case ch <- v:
		default: // more flaps than any test reads
		}
	})
	return ch
}

func nextLive(t *testing.T, ch <-chan bool) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatal("OnLive not called within 60s")
		return false
	}
}
