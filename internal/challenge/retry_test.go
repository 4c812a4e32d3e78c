package challenge_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

// lossy loses the reply of one script call after Redis ran it, as a
// connection reset does. Armed with a script's SHA, the first EVALSHA of
// it has its reply read and thrown away, between runs (another client
// acting meanwhile), and the connection closes: go-redis sends the
// command again.
type lossy struct {
	mu      sync.Mutex
	sha     string
	between func()
	dropped int
}

func (l *lossy) arm(sha string, between func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sha, l.between = sha, between
}

// take disarms l if p is the armed script's call.
func (l *lossy) take(p []byte) (between func(), ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sha == "" || !bytes.Contains(bytes.ToLower(p), []byte("evalsha")) || !bytes.Contains(p, []byte(l.sha)) {
		return nil, false
	}
	between, l.sha, l.between = l.between, "", nil
	l.dropped++
	return between, true
}

func (l *lossy) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

type lossyConn struct {
	net.Conn
	l       *lossy
	drop    bool
	dead    bool // reset: every later read ends
	between func()
}

func (c *lossyConn) Write(p []byte) (int, error) {
	if c.dead {
		return 0, net.ErrClosed
	}
	if between, ok := c.l.take(p); ok {
		c.drop, c.between = true, between
	}
	return c.Conn.Write(p)
}

func (c *lossyConn) Read(p []byte) (int, error) {
	if c.dead {
		return 0, io.EOF
	}
	if !c.drop {
		return c.Conn.Read(p)
	}
	_, _ = c.Conn.Read(make([]byte, 64<<10)) // the script ran; its reply is lost
	c.dead = true
	_ = c.Conn.Close()
	if c.between != nil {
		c.between()
	}
	return 0, io.EOF
}

// lossyClient reaches b's Redis through connections that l controls, with
// one retry, as the service's clients have (internal/store).
func lossyClient(t *testing.T, b testenv.Backends, l *lossy) redis.UniversalClient {
	t.Helper()
	wrap := func(dial func(context.Context, string, string) (net.Conn, error), tlsConf *tls.Config) func(context.Context, string, string) (net.Conn, error) {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			var err error
			if dial != nil {
				c, err = dial(ctx, network, addr)
			} else if c, err = (&net.Dialer{}).DialContext(ctx, network, addr); err == nil && tlsConf != nil {
				c = tls.Client(c, tlsConf)
			}
			if err != nil {
				return nil, err
			}
			return &lossyConn{Conn: c, l: l}, nil
		}
	}
	var rdb redis.UniversalClient
	switch c := b.Redis.UniversalClient.(type) {
	case *redis.Client:
		o := c.Options()
		rdb = redis.NewClient(&redis.Options{Addr: o.Addr, Username: o.Username, Password: o.Password, DB: o.DB,
			Protocol: o.Protocol, Dialer: wrap(o.Dialer, o.TLSConfig), MaxRetries: 1})
	case *redis.ClusterClient:
		o := c.Options()
		rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: o.Addrs, Username: o.Username, Password: o.Password,
			Protocol: o.Protocol, Dialer: wrap(o.Dialer, o.TLSConfig), MaxRetries: 1})
	default:
		t.Fatalf("no lossy client for a %T", c)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// loadScripts loads every script, so that each call is one EVALSHA (not a
// NOSCRIPT and an EVAL), and returns their SHAs by file name.
func loadScripts(t *testing.T, rdb redis.UniversalClient) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, name := range []string{"issue", "verify", "failed", "unlock", "void"} {
		src, err := os.ReadFile(name + ".lua")
		if err != nil {
			t.Fatal(err)
		}
		sum := sha1.Sum(src)
		out[name] = hex.EncodeToString(sum[:])
		if c, ok := rdb.(*redis.ClusterClient); ok {
			err = c.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
				return m.ScriptLoad(ctx, string(src)).Err()
			})
		} else {
			err = rdb.ScriptLoad(context.Background(), string(src)).Err()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// retryWorld is one user's challenges through a lossy client (svc, state)
// and a plain one (peer), on one clock.
type retryWorld struct {
	svc, peer *challenge.Service
	state     *challenge.State
	rdb       redis.UniversalClient
	caller    auth.Caller
	admin     auth.Caller
	shas      map[string]string

	mu    sync.Mutex
	clock time.Time
	code  string
	fail  bool
	sent  int
}

func newRetryWorld(t *testing.T, l *lossy) *retryWorld {
	t.Helper()
	b := testenv.Open(t)
	co := testenv.Company(t)
	w := &retryWorld{rdb: b.Redis.UniversalClient, clock: time.Now(),
		caller: auth.Caller{Company: co, UserID: "u", Role: auth.RoleUser},
		admin:  auth.Caller{Company: co, UserID: "boss", Name: "The Boss", Role: auth.RoleAdmin}}
	now := func() time.Time { w.mu.Lock(); defer w.mu.Unlock(); return w.clock }
	sender := delivery.SenderFunc(func(_ context.Context, m delivery.Message) error {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.sent++
		w.code = regexp.MustCompile(`\d{6}`).FindString(m.Text)
		if w.fail {
			return errors.New("provider down")
		}
		return nil
	})
	lb := b
	lb.Redis = &store.Redis{UniversalClient: lossyClient(t, b, l)}
	w.peer = newService(t, b, anyUser{}, sender, now, challenge.Config{})
	w.svc = newService(t, lb, anyUser{}, sender, now, challenge.Config{})
	w.state = &challenge.State{Redis: lb.Redis.UniversalClient, Now: now}
	w.shas = loadScripts(t, w.rdb)
	return w
}

func (w *retryWorld) lastCode() string { w.mu.Lock(); defer w.mu.Unlock(); return w.code }

func (w *retryWorld) sentCount() int { w.mu.Lock(); defer w.mu.Unlock(); return w.sent }

// issue asks the peer for a code, past the cooldown of the last one.
func (w *retryWorld) issue(t *testing.T) (challenge.Challenge, string) {
	t.Helper()
	w.mu.Lock()
	w.clock = w.clock.Add(time.Minute)
	w.mu.Unlock()
	ch, err := w.peer.Issue(context.Background(), w.caller, challenge.IssueRequest{App: users.Web})
	if err != nil {
		t.Errorf("issue: %v", err)
	}
	return ch, w.lastCode()
}

// verify checks code through the peer and wants status.
func (w *retryWorld) verify(t *testing.T, id, code string, want challenge.Status) {
	t.Helper()
	res, err := w.peer.Verify(context.Background(), w.caller, id, code)
	if err != nil || res.Status != want {
		t.Errorf("verify: %+v, %v; want %s", res, err, want)
	}
}

// lock locks the user's web app through the peer: a code, 3 wrong tries.
func (w *retryWorld) lock(t *testing.T) {
	t.Helper()
	ch, code := w.issue(t)
	for i := range 3 {
		want := challenge.Rejected
		if i == 2 {
			want = challenge.Locked
		}
		w.verify(t, ch.ID, wrongCode(code), want)
	}
}

func wrongCode(code string) string {
	b := []byte(code)
	for i := range b {
		b[i] = '0' + (b[i]-'0'+1)%10
	}
	return string(b)
}

// actions counts the user's outbox entries by action.
func (w *retryWorld) actions(t *testing.T) map[string]int {
	t.Helper()
	msgs, err := w.rdb.XRange(context.Background(), challenge.OutboxKey(w.caller.Company, w.caller.UserID), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range msgs {
		a, _ := m.Values["action"].(string)
		out[a]++
	}
	return out
}

func (w *retryWorld) locked(t *testing.T) bool {
	t.Helper()
	locks, err := w.peer.LockStates(context.Background(), w.caller.Company, w.caller.UserID)
	if err != nil {
		t.Fatal(err)
	}
	_, ok := locks[users.Web]
	return ok
}

// TestDroppedConnectionRunsEachScriptOnce is the red-team finding "a
// dropped Redis connection re-runs verify.lua": go-redis sends a command
// again when its connection drops after Redis ran it. Every script that
// changes state now keeps its reply under the request's uid, and the
// second run answers with it: nothing is counted, recorded or undone
// twice.
func TestDroppedConnectionRunsEachScriptOnce(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name, script string
		run          func(t *testing.T, w *retryWorld, l *lossy)
	}{
		{"a wrong code counts once", "verify", func(t *testing.T, w *retryWorld, _ *lossy) {
			ch, code := w.issue(t)
			res, err := w.svc.Verify(ctx, w.caller, ch.ID, wrongCode(code))
			if err != nil || res.Status != challenge.Rejected || res.AttemptsRemaining != 2 {
				t.Errorf("one wrong code: %+v, %v; want REJECTED with 2 attempts left", res, err)
			}
			if got := w.actions(t)["CODE_REJECTED"]; got != 1 {
				t.Errorf("%d CODE_REJECTED entries, want 1", got)
			}
		}},
		{"a right code is approved, not already used", "verify", func(t *testing.T, w *retryWorld, _ *lossy) {
			ch, code := w.issue(t)
			res, err := w.svc.Verify(ctx, w.caller, ch.ID, code)
			if err != nil || res.Status != challenge.Approved || res.Assertion == "" {
				t.Errorf("the right code: %+v, %v; want APPROVED with an assertion", res, err)
			}
			if got := w.actions(t)["CODE_VERIFIED"]; got != 1 {
				t.Errorf("%d CODE_VERIFIED entries, want 1", got)
			}
		}},
		{"the locking code locks once", "verify", func(t *testing.T, w *retryWorld, _ *lossy) {
			ch, code := w.issue(t)
			w.verify(t, ch.ID, wrongCode(code), challenge.Rejected)
			w.verify(t, ch.ID, wrongCode(code), challenge.Rejected)
			res, err := w.svc.Verify(ctx, w.caller, ch.ID, wrongCode(code))
			if err != nil || res.Status != challenge.Locked {
				t.Errorf("the third wrong code: %+v, %v; want LOCKED", res, err)
			}
			if a := w.actions(t); a["CODE_REJECTED"] != 3 || a["FAILED_ATTEMPTS_LIMIT_REACHED"] != 1 {
				t.Errorf("entries %v, want 3 CODE_REJECTED and 1 FAILED_ATTEMPTS_LIMIT_REACHED", a)
			}
		}},
		{"an issue answers its code, not RESEND_TOO_SOON", "issue", func(t *testing.T, w *retryWorld, _ *lossy) {
			ch, err := w.svc.Issue(ctx, w.caller, challenge.IssueRequest{App: users.Web})
			if err != nil || ch.ID == "" {
				t.Errorf("issue: %+v, %v; want a challenge", ch, err)
			}
			if a := w.actions(t); a["CODE_SENT"] != 1 || w.sentCount() != 1 {
				t.Errorf("entries %v and %d messages sent, want one CODE_SENT and one message", a, w.sentCount())
			}
		}},
		{"a failed delivery is recorded once", "failed", func(t *testing.T, w *retryWorld, _ *lossy) {
			w.mu.Lock()
			w.fail = true
			w.mu.Unlock()
			_, err := w.svc.Issue(ctx, w.caller, challenge.IssueRequest{App: users.Web})
			var refusal *challenge.Refusal
			if !errors.As(err, &refusal) || refusal.Code != challenge.CodeDeliveryFailed {
				t.Errorf("issue with the provider down: %v, want %s", err, challenge.CodeDeliveryFailed)
			}
			if a := w.actions(t); a["CODE_SENT"] != 1 || a["CODE_DELIVERY_FAILED"] != 1 {
				t.Errorf("entries %v, want one CODE_SENT and one CODE_DELIVERY_FAILED", a)
			}
		}},
		{"an unlock does not lift a lock set before its retry", "unlock", func(t *testing.T, w *retryWorld, l *lossy) {
			w.lock(t)
			l.arm(w.shas["unlock"], func() { w.lock(t) }) // locked again between the run and the retry
			if _, err := w.svc.Unlock(ctx, w.admin, w.caller.UserID, users.Web); err != nil {
				t.Errorf("unlock: %v", err)
			}
			if !w.locked(t) {
				t.Error("the retried unlock lifted the lock set after the first run")
			}
			if got := w.actions(t)["USER_TWO_FACTOR_UNLOCKED"]; got != 1 {
				t.Errorf("%d USER_TWO_FACTOR_UNLOCKED entries, want 1", got)
			}
		}},
		{"a void does not void a code issued before its retry", "void", func(t *testing.T, w *retryWorld, l *lossy) {
			w.issue(t)
			var newer challenge.Challenge
			var code string
			l.arm(w.shas["void"], func() { newer, code = w.issue(t) })
			if err := w.state.Void(ctx, w.caller.Company, w.caller.UserID); err != nil {
				t.Errorf("void: %v", err)
			}
			w.verify(t, newer.ID, code, challenge.Approved)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := &lossy{}
			w := newRetryWorld(t, l)
			l.arm(w.shas[tc.script], nil)
			tc.run(t, w, l)
			if n := l.count(); n != 1 {
				t.Fatalf("%d replies of %s.lua lost, want 1: the test did not test", n, tc.script)
			}
		})
	}
}
