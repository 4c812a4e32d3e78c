package outbox_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/outbox"
)

// TestLingerLosesNoKick (from the red-team pass): producers append and kick concurrently
// (small batches, so the worker lingers often; Redis and the database
// fail now and then, so it backs off too). With the sweeper off, a kick
// lost during a linger would leave its events in Redis forever.
func TestLingerLosesNoKick(t *testing.T) {
	t.Parallel()
	for _, linger := range []time.Duration{0, 2 * time.Millisecond, -1} {
		t.Run(fmt.Sprint(linger), func(t *testing.T) {
			e := newEnv(t)
			sink := &flaky{next: e.log}
			sink.failBeforeStore.Store(3)
			sink.storeThenFail.Store(3)
			m := outbox.New(e.rdb, decode, sink, nil, outbox.Options{SweepEvery: -1, KeysPerMove: 4, Batch: 2,
				MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Linger: linger})
			defer m.Close()
			const producers, each = 4, 60
			var wg sync.WaitGroup
			for p := range producers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(p), 1))
					for i := range each {
						user := fmt.Sprintf("u%d", r.IntN(12))
						key := e.key(user)
						if err := e.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: key, Values: []any{
							"uid", fmt.Sprintf("p%d-%d", p, i), "company", e.company, "action", string(audit.CodeVerified), "user", user,
						}}).Err(); err != nil {
							t.Error(err)
							return
						}
						m.Kick(key)
						if r.IntN(4) == 0 {
							time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
						}
					}
				}()
			}
			wg.Wait()
			deadline := time.Now().Add(wait)
			for e.rows() < producers*each && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if got := e.rows(); got != producers*each {
				left := 0
				for u := range 12 {
					n, _ := e.rdb.XLen(context.Background(), e.key(fmt.Sprintf("u%d", u))).Result()
					left += int(n)
				}
				t.Fatalf("rows %d, want %d; %d entries left in Redis", got, producers*each, left)
			}
		})
	}
}
