//go:build failover

// The slot-move test reassigns a slot of the Cluster, so it must not run
// while other tests use the Cluster: run it alone, with
// go test -tags failover -run TestClusterSlotMove ./internal/feed/.

package feed

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/testenv"
)

// A bucket's slot moves to another master and back: each time the node
// drops the bucket's subscription, the hub says notices may be missed,
// subscribes all of the bucket's channels on the new owner, says they
// flow again, and they do.
func TestClusterSlotMove(t *testing.T) {
	h, _ := clusterHub(t)
	pub := testenv.Cluster(t)
	other := NewHub(pub.UniversalClient, nil, nil, Options{})
	t.Cleanup(other.Close)
	live := make(chan bool, 16)
	h.OnLive(func(v bool) {
		select { // never block the hub's receive loop
		case live <- v:
		default:
		}
	})
	b := &inbox{got: map[string][]audit.Notice{}, more: make(chan struct{}, 1)}
	key, cos := companiesOfOneBucket(t, h, 3)
	for _, co := range cos {
		t.Cleanup(b.watch(h, co))
	}
	masters := masterClients(t, pub.UniversalClient.(*redis.ClusterClient))
	owner, err := pub.UniversalClient.(*redis.ClusterClient).MasterForKey(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	from := owner.ClusterMyID(t.Context()).Val()
	var to string
	for id := range masters {
		if id != from {
			to = id
		}
	}
	// A key in the slot: a reshard moves keys with it (MIGRATE).
	leftover := key + ":leftover"
	if err := pub.Set(t.Context(), leftover, "kept", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // give the slot back if a round failed
		if err := moveSlot(masters, slot(key), to, from); err != nil && !strings.Contains(err.Error(), "already the owner") {
			t.Errorf("slot %d not given back to %s: %v", slot(key), from, err)
		}
	})
	for round, move := range [][2]string{{from, to}, {to, from}} {
		ps := locked(h, func() *redis.PubSub { return h.pss[key] })
		if err := moveSlot(masters, slot(key), move[0], move[1]); err != nil {
			t.Fatal(err)
		}
		if v := nextLive(t, live); v {
			t.Fatalf("round %d: after the move OnLive said true, want false", round)
		}
		if v := nextLive(t, live); !v {
			t.Fatalf("round %d: OnLive said false again, want true", round)
		}
		if locked(h, func() bool { return h.pss[key] == ps }) {
			t.Fatalf("round %d: the bucket's subscription was not replaced", round)
		}
		b.mu.Lock()
		clear(b.got)
		b.mu.Unlock()
		want := map[string]audit.Notice{}
		for i, co := range cos {
			want[co] = audit.Notice{Company: co, ID: int64(10*round + i + 1)}
			notify(t, other, co, want[co].ID)
		}
		b.waitFor(t, want)
	}
	if v, err := pub.Get(t.Context(), leftover).Result(); err != nil || v != "kept" {
		t.Fatalf("the slot's key after moving there and back: %q, %v", v, err)
	}
}

// masterClients returns a client of every master, by node id.
func masterClients(t *testing.T, cc *redis.ClusterClient) map[string]*redis.Client {
	t.Helper()
	var mu sync.Mutex
	out := map[string]*redis.Client{}
	err := cc.ForEachMaster(t.Context(), func(ctx context.Context, c *redis.Client) error {
		id, err := c.ClusterMyID(ctx).Result()
		mu.Lock()
		out[id] = c
		mu.Unlock()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// moveSlot hands a slot from one master to another as a reshard does:
// IMPORTING and MIGRATING, its keys (other tests' leftovers, in the same
// slot by chance) moved with MIGRATE, then the new owner announced.
func moveSlot(masters map[string]*redis.Client, slot int, from, to string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	setSlot := func(node string, args ...any) error {
		args = append([]any{"CLUSTER", "SETSLOT", slot}, args...)
		if err := masters[node].Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("%v on %s: %w", args, node, err)
		}
		return nil
	}
	if err := setSlot(to, "IMPORTING", from); err != nil {
		return err
	}
	if err := setSlot(from, "MIGRATING", to); err != nil {
		return err
	}
	if err := migrateKeys(ctx, masters[from], masters[to], slot); err != nil {
		return err
	}
	for _, id := range append([]string{to, from}, otherMasters(masters, from, to)...) {
		if err := setSlot(id, "NODE", to); err != nil {
			return err
		}
	}
	return nil
}

// migrateKeys moves every key of slot from src to dst.
func migrateKeys(ctx context.Context, src, dst *redis.Client, slot int) error {
	host, port, err := net.SplitHostPort(dst.Options().Addr)
	if err != nil {
		return err
	}
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		if err != nil || len(keys) == 0 {
			return err
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		if err := src.Do(ctx, args...).Err(); err != nil {
			return fmt.Errorf("migrate %d keys of slot %d: %w", len(keys), slot, err)
		}
	}
}

func otherMasters(masters map[string]*redis.Client, except ...string) []string {
	var ids []string
	for id := range masters {
		if !slices.Contains(except, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

func nextLive(t *testing.T, ch <-chan bool) bool {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(60 * time.Second):
		t.Fatal("OnLive not called within 60s")
		return false
	}
}
