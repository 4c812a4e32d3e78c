//go:build failover

// The failover test takes a Cluster master down, so it must not run while
// other tests use the Cluster: .ci/run runs it alone, last, with
// go test -tags failover -run TestClusterFailover ./internal/apptest/.

package apptest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/testenv"
)

// requestTimeout bounds every request: one that takes longer hung.
const requestTimeout = 15 * time.Second

// post sends one GraphQL operation with a deadline and returns the data
// (nil on a GraphQL error) or the transport error.
func post(c *apptest.Client, query string, vars map[string]any) (json.RawMessage, error) {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Data   json.RawMessage
		Errors []struct{ Message string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, err
	}
	if len(out.Errors) > 0 {
		return nil, fmt.Errorf("graphql: %s", out.Errors[0].Message)
	}
	return out.Data, nil
}

const mUnlock = `mutation($input: UnlockUserTwoFactorInput!) { unlockUserTwoFactor(input: $input) { userErrors { code } } }`

// cycler runs issue + wrong code + right code for one user, counting.
type cycler struct {
	s             *apptest.Server
	co, user, tel string
	ok, failed    atomic.Int64
	hung          atomic.Int64
	wrongApproved atomic.Int64
}

// cycle returns nil when issue and the right code both worked.
func (c *cycler) cycle(t *testing.T) error {
	cl := c.s.User(t, c.co, c.user)
	data, err := post(cl, mIssue, map[string]any{"input": map[string]any{"app": "WEB"}})
	if err != nil {
		c.note(err)
		return err
	}
	var is struct {
		IssueChallenge struct{ Challenge *struct{ ID string } }
	}
	if json.Unmarshal(data, &is) != nil || is.IssueChallenge.Challenge == nil {
		return fmt.Errorf("issue refused: %s", data)
	}
	id, code := is.IssueChallenge.Challenge.ID, c.s.Outbox.LastCode(t, c.tel)
	if data, err = post(cl, mVerify, map[string]any{"input": map[string]any{"challengeId": id, "code": wrongCode(code)}}); err != nil {
		c.note(err)
	} else if strings.Contains(string(data), `"APPROVED"`) {
		c.wrongApproved.Add(1)
	}
	data, err = post(cl, mVerify, map[string]any{"input": map[string]any{"challengeId": id, "code": code}})
	if err != nil {
		c.note(err)
		return err
	}
	if !strings.Contains(string(data), `"APPROVED"`) {
		return fmt.Errorf("right code: %s", data)
	}
	return nil
}

func (c *cycler) note(err error) {
	if errorsIsDeadline(err) {
		c.hung.Add(1)
	}
}

func errorsIsDeadline(err error) bool {
	return strings.Contains(err.Error(), "deadline exceeded") || strings.Contains(err.Error(), "Client.Timeout")
}

// TestClusterFailover is issue 11: while cycles run on three instances, a
// master fails over by CLUSTER FAILOVER, then another master is killed.
// No wrong code is approved, no request hangs, and the service serves
// again within a bounded number of tries without a restart.
func TestClusterFailover(t *testing.T) {
	in := threeInstances(t)
	co := testenv.Company(t)
	var cyclers []*cycler
	for i := range 6 {
		user := fmt.Sprintf("u%d", i)
		cyclers = append(cyclers, &cycler{s: in[i%3], co: co, user: user, tel: twoFactorUser(t, in[0], co, user)})
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range cyclers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if c.cycle(t) == nil {
					c.ok.Add(1)
				} else {
					c.failed.Add(1)
				}
				// Past the resend cooldown for the next issue.
				c.s.Clock.Advance(time.Minute)
			}
		}()
	}
	admin := clusterAdmin(t)
	manualFailover(t, admin)
	killed := killMaster(t, admin)
	t.Cleanup(func() { restart(t, admin, killed) })
	waitClusterOK(t, admin, 60*time.Second)
	close(stop)
	wg.Wait()

	// Serving again: every user completes a cycle within bounded tries.
	// Each cycle gives a wrong code first, and wrong codes count until a
	// right one is accepted (NIST lockout): a user whose right codes
	// failed during the failover may be locked, rightly. An admin unlock
	// is then the way back, and must work too.
	unlocked := 0
	for _, c := range cyclers {
		var err error
		for try := 0; try < 40; try++ {
			if err = c.cycle(t); err == nil {
				break
			}
			if strings.Contains(err.Error(), `"LOCKED"`) {
				if _, uerr := post(in[0].Admin(t, co), mUnlock, map[string]any{"input": map[string]any{"userId": c.user, "app": "WEB"}}); uerr == nil {
					unlocked++
				}
			}
			c.s.Clock.Advance(time.Minute) // past the resend cooldown
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("%s: still failing 40 tries after the failover: %v", c.user, err)
		}
	}
	t.Logf("%d admin unlocks of users locked by wrong codes whose right codes failed during the failover", unlocked)
	for _, c := range cyclers {
		t.Logf("%s: %d cycles ok, %d failed during the failovers", c.user, c.ok.Load(), c.failed.Load())
		if c.wrongApproved.Load() > 0 {
			t.Errorf("%s: a wrong code was APPROVED %d times", c.user, c.wrongApproved.Load())
		}
		if c.hung.Load() > 0 {
			t.Errorf("%s: %d requests ran past %s", c.user, c.hung.Load(), requestTimeout)
		}
	}
}

// clusterAdmin is a plain Cluster client for administration.
func clusterAdmin(t *testing.T) *redis.ClusterClient {
	t.Helper()
	cc, ok := testenv.Cluster(t).UniversalClient.(*redis.ClusterClient)
	if !ok {
		t.Fatal("TEST_REDIS_CLUSTER_URL is not a Cluster URL (redis+cluster://)")
	}
	return cc
}

// manualFailover promotes one master's replica with CLUSTER FAILOVER and
// waits until it is master.
func manualFailover(t *testing.T, cc *redis.ClusterClient) {
	t.Helper()
	ctx := t.Context()
	var replica *redis.Client
	_ = cc.ForEachSlave(ctx, func(ctx context.Context, c *redis.Client) error {
		if replica == nil {
			replica = redis.NewClient(&redis.Options{Addr: c.Options().Addr})
		}
		return nil
	})
	if replica == nil {
		t.Fatal("the Cluster has no replica")
	}
	defer replica.Close()
	if err := replica.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatalf("CLUSTER FAILOVER on %s: %v", replica.Options().Addr, err)
	}
	waitRole(t, replica, "master")
	t.Logf("manual failover: %s is master", replica.Options().Addr)
}

func waitRole(t *testing.T, c *redis.Client, role string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := c.Do(context.Background(), "ROLE").Slice(); err == nil && len(r) > 0 && r[0] == role {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not become %s", c.Options().Addr, role)
}

// node is what it takes to start a killed node again.
type node struct{ addr, dir, conf string }

// killMaster shuts one master down without saving, as a crash would.
func killMaster(t *testing.T, cc *redis.ClusterClient) node {
	t.Helper()
	ctx := t.Context()
	var victim *redis.Client
	_ = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		if victim == nil {
			victim = redis.NewClient(&redis.Options{Addr: c.Options().Addr})
		}
		return nil
	})
	defer victim.Close()
	dir, err := victim.ConfigGet(ctx, "dir").Result()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := victim.ConfigGet(ctx, "cluster-config-file").Result()
	if err != nil {
		t.Fatal(err)
	}
	n := node{addr: victim.Options().Addr, dir: dir["dir"], conf: conf["cluster-config-file"]}
	_ = victim.Shutdown(ctx).Err() // the connection drops: no reply
	t.Logf("killed master %s", n.addr)
	return n
}

// waitClusterOK waits until every slot is served again.
func waitClusterOK(t *testing.T, cc *redis.ClusterClient, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ok := 0
		// Not t.Context(): restart runs in a cleanup, after it ends.
		_ = cc.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
			if info, err := c.ClusterInfo(ctx).Result(); err == nil && strings.Contains(info, "cluster_state:ok") {
				ok++
			}
			return nil
		})
		if ok >= 3 {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("the Cluster did not recover within %s", within)
}

// restart starts the killed node again; it rejoins as a replica of the
// master that replaced it, so the Cluster is 3 + 3 again.
func restart(t *testing.T, cc *redis.ClusterClient, n node) {
	host, port, _ := strings.Cut(n.addr, ":")
	cmd := exec.Command("redis-server", "--daemonize", "yes", "--bind", host, "--port", port, "--save", "", "--appendonly", "no",
		"--cluster-enabled", "yes", "--cluster-config-file", n.conf, "--cluster-node-timeout", "2000",
		"--dir", n.dir, "--logfile", n.dir+"/redis.log", "--pidfile", n.dir+"/redis.pid")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("restart %s: %v: %s", n.addr, err, out)
		return
	}
	c := redis.NewClient(&redis.Options{Addr: n.addr})
	defer c.Close()
	waitRole(t, c, "slave")
	waitClusterOK(t, cc, 60*time.Second)
}
