package challenge_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

// BenchmarkClusterVsSingle is issue 11: issue+verify cycles through the
// same service code on a Redis Cluster (TEST_REDIS_CLUSTER_URL) and on a
// single Redis (TEST_REDIS_SINGLE_URL), in the same run, interleaved so
// that both see the same machine load. It reports cycles per second on
// each and their ratio (target: cluster >= 0.8x single).
//
//	go test -run '^$' -bench ClusterVsSingle -benchtime 2000x ./internal/challenge/
func BenchmarkClusterVsSingle(b *testing.B) {
	single := os.Getenv("TEST_REDIS_SINGLE_URL")
	if single == "" {
		b.Fatal("set TEST_REDIS_SINGLE_URL (e.g. redis://127.0.0.1:6379/0) and TEST_REDIS_CLUSTER_URL")
	}
	ctx := context.Background()
	rs, err := store.OpenRedis(ctx, single)
	if err != nil {
		b.Fatal(err)
	}
	defer rs.Close()
	runners := map[string]*cycleRunner{
		"single":  newCycleRunner(b, rs),
		"cluster": newCycleRunner(b, testenv.Cluster(b)),
	}
	elapsed := map[string]time.Duration{}
	const workers = 8
	for round := 0; round < 4; round++ { // interleave
		for _, name := range []string{"single", "cluster"} {
			elapsed[name] += runners[name].run(b, workers, b.N/4+1)
		}
	}
	rate := func(name string) float64 { return float64(4*(b.N/4+1)) / elapsed[name].Seconds() }
	b.ReportMetric(rate("single"), "single-cycles/s")
	b.ReportMetric(rate("cluster"), "cluster-cycles/s")
	b.ReportMetric(rate("cluster")/rate("single"), "cluster/single")
	if b.N > 1 { // not the one-iteration probe the framework runs first
		fmt.Printf("issue+verify: single %.0f/s, cluster %.0f/s, ratio %.2f\n", rate("single"), rate("cluster"), rate("cluster")/rate("single"))
	}
}

// cycleRunner runs issue + right code for users of one company.
type cycleRunner struct {
	svc   *challenge.Service
	co    string
	mu    sync.Mutex
	codes map[string]string // phone → last code
	clock time.Time
}

func newCycleRunner(b *testing.B, r *store.Redis) *cycleRunner {
	cr := &cycleRunner{co: testenv.Company(b), codes: map[string]string{}, clock: time.Now()}
	sender := delivery.SenderFunc(func(_ context.Context, m delivery.Message) error {
		cr.mu.Lock()
		cr.codes[m.To] = regexp.MustCompile(`\d{6}`).FindString(m.Text)
		cr.mu.Unlock()
		return nil
	})
	now := func() time.Time { cr.mu.Lock(); defer cr.mu.Unlock(); return cr.clock }
	cr.svc = newService(b, testenv.Backends{Redis: r}, benchUsers{}, sender, now,
		challenge.Config{MaxCodesPerWindow: 1 << 30, SMSPerCompanyPerHour: 1 << 30, ResendCooldown: time.Millisecond})
	return cr
}

// benchUsers gives user u the phone u, so the sender can tell codes apart.
type benchUsers struct{}

func (benchUsers) ByID(_ context.Context, company, id string) (users.User, error) {
	return users.User{Company: company, ID: id, Phone: id, TwoFactor: map[users.App]bool{users.Web: true}}, nil
}

// run does n cycles over workers goroutines, each its own user.
func (cr *cycleRunner) run(b *testing.B, workers, n int) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("+3712%07d", w)
			c := auth.Caller{Company: cr.co, UserID: user, Role: auth.RoleUser}
			for i := w; i < n; i += workers {
				ch, err := cr.svc.Issue(context.Background(), c, challenge.IssueRequest{App: users.Web})
				if err != nil {
					b.Errorf("issue: %v", err)
					return
				}
				cr.mu.Lock()
				code := cr.codes[user]
				cr.mu.Unlock()
				res, err := cr.svc.Verify(context.Background(), c, ch.ID, code)
				if err != nil || res.Status != challenge.Approved {
					b.Errorf("verify: %+v, %v", res, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}
