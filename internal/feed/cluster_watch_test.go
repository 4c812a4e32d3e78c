package feed

import (
	"context"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/testenv"
)

// inbox records what each company's watcher receives.
type inbox struct {
	mu   sync.Mutex
	got  map[string][]audit.Notice
	more chan struct{} // cap 1: something arrived
}

func (b *inbox) watch(h *Hub, company string) (stop func()) {
	return h.Watch(company, func(n audit.Notice) {
		b.mu.Lock()
		b.got[company] = append(b.got[company], n)
		b.mu.Unlock()
		select {
		case b.more <- struct{}{}:
		default:
		}
	})
}

// waitFor waits until every company in want has received a notice.
func (b *inbox) waitFor(t *testing.T, want map[string]audit.Notice) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		b.mu.Lock()
		missing := 0
		for co := range want {
			if len(b.got[co]) == 0 {
				missing++
			}
		}
		b.mu.Unlock()
		if missing == 0 {
			return
		}
		select {
		case <-b.more:
		case <-deadline:
			t.Fatalf("%d of %d watchers got no notice within 30s", missing, len(want))
		}
	}
}

// clusterHub is a hub on its own Cluster client, named so that its
// connections can be told apart from other tests' on the shared Cluster.
func clusterHub(t *testing.T) (*Hub, string) {
	t.Helper()
	testenv.Cluster(t) // skips without a Cluster
	u, err := url.Parse(os.Getenv("TEST_REDIS_CLUSTER_URL"))
	if err != nil {
		t.Fatal(err)
	}
	name := strings.ReplaceAll(testenv.Company(t), "co-", "feedtest-")
	q := u.Query()
	q.Set("client_name", name)
	u.RawQuery = q.Encode()
	rdb, err := store.OpenRedis(t.Context(), u.String())
	if err != nil {
		t.Fatalf("open cluster: %v", err)
	}
	h := NewHub(rdb.UniversalClient, nil, nil, Options{})
	t.Cleanup(func() { h.Close(); _ = rdb.Close() })
	return h, name
}

// pubsubConns counts the subscriber connections named name on every
// master of the Cluster.
func pubsubConns(t *testing.T, rdb redis.UniversalClient, name string) int {
	t.Helper()
	var mu sync.Mutex
	n := 0
	err := rdb.(*redis.ClusterClient).ForEachMaster(t.Context(), func(ctx context.Context, c *redis.Client) error {
		list, err := c.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		if err != nil {
			return err
		}
		k := strings.Count(list, " name="+name+" ")
		mu.Lock()
		n += k
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	return n
}

// 500 watched companies take at most one subscription, and one
// connection, per bucket; a notice reaches its company's watcher and no
// other.
func TestClusterWatchManyCompaniesFewConnections(t *testing.T) {
	t.Parallel()
	h, name := clusterHub(t)
	pub := testenv.Cluster(t)
	other := NewHub(pub.UniversalClient, nil, nil, Options{}) // the instance that publishes
	t.Cleanup(other.Close)
	b := &inbox{got: map[string][]audit.Notice{}, more: make(chan struct{}, 1)}
	companies := make([]string, 500)
	for i := range companies {
		companies[i] = testenv.Company(t)
		t.Cleanup(b.watch(h, companies[i]))
	}
	subs := Subscriptions(h)
	if subs == 0 || subs > buckets {
		t.Fatalf("500 companies: %d subscriptions, want 1 to %d", subs, buckets)
	}
	if n := pubsubConns(t, pub.UniversalClient, name); n != subs {
		t.Fatalf("%d subscriber connections on the Cluster for %d subscriptions", n, subs)
	}

	want := map[string]audit.Notice{}
	for i := 0; i < len(companies); i += 10 {
		n := audit.Notice{Company: companies[i], ID: int64(i + 1), SettingsChanged: i%20 == 0}
		want[n.Company] = n
		if err := other.Notify(t.Context(), n); err != nil {
			t.Fatal(err)
		}
	}
	b.waitFor(t, want)
	b.mu.Lock()
	defer b.mu.Unlock()
	for co, got := range b.got {
		if w, ok := want[co]; !ok || len(got) != 1 || got[0] != w {
			t.Errorf("%s got %+v, want only %+v (sent: %v)", co, got, w, ok)
		}
	}
}

// Stopping some of a bucket's companies unsubscribes just their channels
// (the replies are not taken for a slot move: the subscription stays and
// the hub stays live); the last one closes the bucket's subscription, and
// its connection.
func TestClusterStopWithinABucket(t *testing.T) {
	t.Parallel()
	h, name := clusterHub(t)
	pub := testenv.Cluster(t)
	other := NewHub(pub.UniversalClient, nil, nil, Options{})
	t.Cleanup(other.Close)
	var mu sync.Mutex
	var notLive int
	h.OnLive(func(live bool) {
		mu.Lock()
		defer mu.Unlock()
		if !live {
			notLive++
		}
	})
	b := &inbox{got: map[string][]audit.Notice{}, more: make(chan struct{}, 1)}
	key, cos := companiesOfOneBucket(t, h, 4)
	stops := make([]func(), len(cos))
	for i, co := range cos {
		stops[i] = b.watch(h, co)
		t.Cleanup(stops[i])
	}
	ps := locked(h, func() *redis.PubSub { return h.pss[key] })
	for _, stop := range stops[:3] {
		stop()
	}
	notify(t, other, cos[0], 1) // stopped: nobody hears it
	notify(t, other, cos[3], 2)
	b.waitFor(t, map[string]audit.Notice{cos[3]: {}})
	waitUntil(t, "the SUNSUBSCRIBE replies", func() bool { return locked(h, func() bool { return len(h.leaving) == 0 }) })
	mu.Lock()
	moved := notLive
	mu.Unlock()
	replaced := locked(h, func() bool { return h.pss[key] != ps })
	if replaced || moved != 0 {
		t.Fatalf("own SUNSUBSCRIBEs taken for a slot move: subscription replaced %v, OnLive(false) %d times", replaced, moved)
	}
	if n := locked(h, func() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.got[cos[0]]) }); n != 0 {
		t.Fatalf("stopped watcher got %d notices", n)
	}
	stops[3]()
	if n := Subscriptions(h); n != 0 {
		t.Fatalf("all stopped: %d subscriptions left", n)
	}
	waitUntil(t, "the connection to close", func() bool { return pubsubConns(t, pub.UniversalClient, name) == 0 })
}

func notify(t *testing.T, h *Hub, company string, id int64) {
	t.Helper()
	if err := h.Notify(t.Context(), audit.Notice{Company: company, ID: id}); err != nil {
		t.Fatal(err)
	}
}

// companiesOfOneBucket returns n fresh companies that share a bucket.
func companiesOfOneBucket(t *testing.T, h *Hub, n int) (string, []string) {
	t.Helper()
	by := map[string][]string{}
	for {
		co := testenv.Company(t)
		key := h.shardKey(h.channel(co))
		if by[key] = append(by[key], co); len(by[key]) == n {
			return key, by[key]
		}
	}
}

// locked reads hub state under h.mu.
func locked[T any](h *Hub, read func() T) T {
	h.mu.Lock()
	defer h.mu.Unlock()
	return read()
}

// waitUntil polls cond for up to 30 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
