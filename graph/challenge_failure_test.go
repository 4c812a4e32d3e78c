package graph_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/testenv"
)

// postGQL is Client.Do for goroutines other than the test's: it returns
// errors instead of failing the test.
func postGQL(ctx context.Context, c *apptest.Client, query string, vars map[string]any) (apptest.Response, error) {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return apptest.Response{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return apptest.Response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return apptest.Response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return apptest.Response{}, err
	}
	out := apptest.Response{Status: resp.StatusCode}
	if err := json.Unmarshal(raw, &out); err != nil {
		return out, fmt.Errorf("status %d: %s", resp.StatusCode, raw)
	}
	return out, nil
}

// parallelVerify sends n verifies at once and returns their payloads.
func parallelVerify(t *testing.T, c *apptest.Client, id string, codes func(i int) string, n int) []verifyPayload {
	t.Helper()
	out := make([]verifyPayload, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			r, err := postGQL(ctxT(t), c, mVerify, map[string]any{"input": map[string]any{"challengeId": id, "code": codes(i)}})
			if err == nil && len(r.Errors) > 0 {
				err = fmt.Errorf("GraphQL errors %+v", r.Errors)
			}
			if err == nil {
				var data struct {
					VerifyChallenge verifyPayload `json:"verifyChallenge"`
				}
				err = json.Unmarshal(r.Data, &data)
				out[i] = data.VerifyChallenge
			}
			errs[i] = err
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return out
}

// outcome names a verify result: its status, or its user error.
func outcome(v verifyPayload) string {
	if len(v.UserErrors) > 0 {
		return v.UserErrors[0].Code
	}
	return v.status()
}

// TestChallengeConcurrency: the limits hold under parallel guesses.
func TestChallengeConcurrency(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")

	t.Run("50 wrong codes", func(t *testing.T) {
		t.Parallel()
		l := newLogin(t, s, co, "guesser", uniquePhone(), uniqueEmail(), "WEB")
		ch := l.mustIssue(t, "")
		code := l.code(t, ch)
		// 50 distinct wrong codes, none of them right.
		wrongs := func(i int) string {
			w := fmt.Sprintf("%06d", i)
			if w == code {
				w = fmt.Sprintf("%06d", 999999-i)
			}
			return w
		}
		got := map[string]int{}
		var lockedUntil string
		for _, v := range parallelVerify(t, l.user, ch.ID, wrongs, 50) {
			got[outcome(v)]++
			if v.status() == "LOCKED" {
				if v.LockedUntil == nil || (lockedUntil != "" && *v.LockedUntil != lockedUntil) {
					t.Errorf("LOCKED with lockedUntil %v, others %s", v.LockedUntil, lockedUntil)
				} else {
					lockedUntil = *v.LockedUntil
				}
			}
		}
		// Exactly 3 counted failures: 2 REJECTED and the one that locked;
		// every other guess found the lock.
		if got["REJECTED"] != 2 || got["LOCKED"] != 48 || len(got) != 2 {
			t.Errorf("outcomes %v, want 2 REJECTED and 48 LOCKED", got)
		}
		rows := waitEvents(t, l.admin, map[string]any{"actions": []string{"FAILED_ATTEMPTS_LIMIT_REACHED"}, "userId": "guesser"}, 1)
		if len(rows) != 1 {
			t.Errorf("FAILED_ATTEMPTS_LIMIT_REACHED rows %d, want exactly 1", len(rows))
		}
		// Even the right code cannot get through now.
		wantStatus(t, "right code after the lock", l.verify(t, ch.ID, code), "LOCKED", 0)
	})

	t.Run("10 issues at once", func(t *testing.T) {
		t.Parallel()
		l := newLogin(t, s, co, "spammer", uniquePhone(), uniqueEmail(), "WEB")
		results := make([]string, 10)
		errs := make([]error, 10)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range results {
			wg.Go(func() {
				<-start
				r, err := postGQL(ctxT(t), l.user, mIssue, map[string]any{"input": map[string]any{"app": "WEB"}})
				var data struct {
					IssueChallenge issuePayload `json:"issueChallenge"`
				}
				if err == nil {
					err = json.Unmarshal(r.Data, &data)
				}
				if p := data.IssueChallenge; err == nil && p.Challenge != nil {
					results[i] = "ISSUED"
				} else if err == nil && len(p.UserErrors) == 1 {
					results[i] = p.UserErrors[0].Code
				} else if err == nil {
					err = fmt.Errorf("response %s %+v", r.Data, r.Errors)
				}
				errs[i] = err
			})
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, r := range results {
			got[r]++
		}
		if got["ISSUED"] != 1 || got["RESEND_TOO_SOON"] != 9 {
			t.Errorf("outcomes %v, want 1 ISSUED and 9 RESEND_TOO_SOON", got)
		}
		n := 0
		for _, m := range s.Outbox.All() {
			if m.To == l.phone {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d codes sent, want 1", n)
		}
	})

	t.Run("20 right codes", func(t *testing.T) {
		t.Parallel()
		l := newLogin(t, s, co, "racer", uniquePhone(), uniqueEmail(), "WEB")
		ch := l.mustIssue(t, "")
		code := l.code(t, ch)
		got := map[string]int{}
		for _, v := range parallelVerify(t, l.user, ch.ID, func(int) string { return code }, 20) {
			got[outcome(v)]++
			if (v.Assertion != nil) != (v.status() == "APPROVED") {
				t.Errorf("status %s with assertion %v", v.status(), v.Assertion != nil)
			}
		}
		if got["APPROVED"] != 1 || got["ALREADY_USED"] != 19 {
			t.Errorf("outcomes %v, want 1 APPROVED and 19 ALREADY_USED", got)
		}
	})
}

// codeIn finds code as a number of its own in s: not inside a longer run
// of digits such as a millisecond timestamp.
func codeIn(code, s string) bool {
	return regexp.MustCompile(`(^|[^0-9])` + code + `([^0-9]|$)`).MatchString(s)
}

// TestChallengeSecretsStayOut: after logins that succeed, fail, fail to
// deliver and lock, no Redis value and no log line holds a code.
func TestChallengeSecretsStayOut(t *testing.T) {
	t.Parallel()
	var logs apptest.Buffer
	var mu sync.Mutex
	var codes []string // every code the service tried to send
	s := apptest.Start(t, func(o *app.Options) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		// The sign-in events stay in their outboxes, to be read below.
		o.AuditOutbox.Manual = true
		// Record each code, and fail the way a careless provider does: by
		// quoting the message back in the error.
		for _, sender := range []*delivery.Sender{&o.SMS, &o.Email} {
			next := *sender
			*sender = delivery.SenderFunc(func(ctx context.Context, m delivery.Message) error {
				mu.Lock()
				codes = append(codes, regexp.MustCompile(`\d{6}`).FindString(m.Text))
				mu.Unlock()
				if err := next.Send(ctx, m); err != nil {
					return fmt.Errorf("554 rejected %q: %w", m.Text, err)
				}
				return nil
			})
		}
	})
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")

	ok := newLogin(t, s, co, "ok", uniquePhone(), uniqueEmail(), "WEB")
	ch := ok.mustIssue(t, "")
	wantStatus(t, "wrong", ok.verify(t, ch.ID, wrong(ok.code(t, ch))), "REJECTED", 2)
	ch = ok.mustIssue(t, "EMAIL")
	wantStatus(t, "right", ok.verify(t, ch.ID, ok.code(t, ch)), "APPROVED", 2)

	pending := newLogin(t, s, co, "pending", uniquePhone(), uniqueEmail(), "WEB", "MANAGER")
	ch = pending.mustIssue(t, "")
	pending.app = "MANAGER"
	pending.mustIssue(t, "")

	refused := newLogin(t, s, co, "refused", uniquePhone(), uniqueEmail(), "WEB")
	s.Outbox.SetFail("sms", true)
	wantUserError(t, "refused", refused.issue(t, "").UserErrors, "DELIVERY_FAILED")
	s.Outbox.SetFail("sms", false)
	refused.mustIssue(t, "EMAIL")

	locked := newLogin(t, s, co, "locked", uniquePhone(), uniqueEmail(), "WEB")
	for range 3 {
		ch = locked.mustIssue(t, "")
		locked.verify(t, ch.ID, wrong(locked.code(t, ch)))
	}
	if web, _ := locked.lockedUntil(t); web == nil {
		t.Fatal("not locked")
	}

	mu.Lock()
	defer mu.Unlock()
	if len(codes) < 9 || slices.Contains(codes, "") {
		t.Fatalf("only %d codes were sent", len(codes))
	}

	// Every key of the company: the users' keys ({c:<co>:u:<user>}) and
	// the company's SMS counter ({c:<co>}), each part base64url.
	ctx := ctxT(t)
	rdb := s.Backends.Redis
	var (
		keysMu sync.Mutex
		keys   []string
	)
	// SCAN walks one node: on a Cluster, every master.
	scan := func(ctx context.Context, node redis.UniversalClient) error {
		iter := node.Scan(ctx, 0, "2fa:v2:{c:"+base64.RawURLEncoding.EncodeToString([]byte(co))+"[:}]*", 100).Iterator()
		for iter.Next(ctx) {
			keysMu.Lock()
			keys = append(keys, iter.Val())
			keysMu.Unlock()
		}
		return iter.Err()
	}
	var err error
	if cc, ok := rdb.UniversalClient.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, rdb.UniversalClient)
	}
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	for _, k := range keys {
		typ, err := rdb.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		types[typ]++
		var values []string
		switch typ {
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				values = append(values, f, v)
			}
		case "string":
			values = append(values, rdb.Get(ctx, k).Val())
		case "zset":
			for _, z := range rdb.ZRangeWithScores(ctx, k, 0, -1).Val() {
				values = append(values, fmt.Sprint(z.Member), fmt.Sprint(int64(z.Score)))
			}
		case "stream": // a user's outbox of sign-in events
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				for f, v := range m.Values {
					values = append(values, f, fmt.Sprint(v))
				}
			}
		default:
			t.Errorf("key %s has unexpected type %s", k, typ)
		}
		for _, v := range append(values, k) {
			for _, c := range codes {
				if codeIn(c, v) {
					t.Errorf("Redis key %s holds code %s: %q", k, c, v)
				}
			}
		}
	}
	// The scan saw the keys it should have: challenges, logins, the lock,
	// the wrong-code counters, the issue log, the outboxes and the SMS
	// counter.
	if types["hash"] < 5 || types["zset"] < 4 || types["string"] < 2 || types["stream"] < 4 {
		t.Errorf("scanned %d keys by type %v: the pattern missed some", len(keys), types)
	}

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) < 10 || !strings.Contains(logs.String(), "code delivery failed") {
		t.Fatalf("the log sink got %d lines; the logger tweak did not take", len(lines))
	}
	for _, line := range lines {
		for _, c := range codes {
			if codeIn(c, line) {
				t.Errorf("log line holds code %s: %s", c, line)
			}
		}
	}
}

// TestChallengeRedisDown: with Redis unreachable, issue and verify fail
// closed with UNAVAILABLE, never APPROVED; once Redis is back, the same
// server works again without help. The machine's Redis is shared, so a
// proxy between the app and Redis is what goes down.
func TestChallengeRedisDown(t *testing.T) {
	t.Parallel()
	var proxy *apptest.Proxy
	s := apptest.Start(t, apptest.RedisThroughProxy(t, &proxy))
	co := newCompany(t, s, "SMS_WITH_EMAIL_BACKUP")
	l := newLogin(t, s, co, "downer", uniquePhone(), uniqueEmail(), "WEB")
	ch := l.mustIssue(t, "")
	code := l.code(t, ch)
	wantStatus(t, "wrong before the outage", l.verify(t, ch.ID, wrong(code)), "REJECTED", 2)

	proxy.Cut()
	for _, tc := range []struct {
		name  string
		c     *apptest.Client
		query string
		vars  map[string]any
	}{
		{"issue", l.user, mIssue, map[string]any{"input": map[string]any{"app": "WEB"}}},
		{"verify the right code", l.user, mVerify, map[string]any{"input": map[string]any{"challengeId": ch.ID, "code": code}}},
		{"verify as the service", l.service, mVerify, map[string]any{"input": map[string]any{"challengeId": ch.ID, "code": code}}},
		{"read", l.user, qChallenge, map[string]any{"id": ch.ID}},
	} {
		t.Run("down/"+tc.name, func(t *testing.T) {
			r := tc.c.Do(t, tc.query, tc.vars)
			wantCode(t, r, "UNAVAILABLE")
			if strings.Contains(string(r.Data), "APPROVED") || strings.Contains(string(r.Data), "assertion\":\"") {
				t.Errorf("approved while Redis was down: %s", r.Data)
			}
		})
	}
	if got := send(t, http.MethodGet, s.URL+"/readyz", nil, nil); got.Status == http.StatusOK {
		t.Errorf("/readyz is 200 with Redis down")
	}
	if got := send(t, http.MethodGet, s.URL+"/healthz", nil, nil); got.Status != http.StatusOK {
		t.Errorf("/healthz %d with Redis down: the server itself is up", got.Status)
	}

	proxy.Restore()
	// The client notices by itself that Redis is back: after a run of
	// failed dials its pool probes Redis in the background (about once a
	// second) before it dials for requests again. Wait for that, bounded,
	// with a verify of a well-formed challenge that does not exist: it
	// runs the verify script but changes nothing.
	probe := map[string]any{"input": map[string]any{"challengeId": strings.Repeat("A", 22) + ch.ID[22:], "code": code}}
	for i := 0; ; i++ {
		r := l.user.Do(t, mVerify, probe)
		if len(r.Errors) == 0 {
			var out map[string]verifyPayload
			r.Decode(t, &out)
			wantUserError(t, "probe", out["verifyChallenge"].UserErrors, "NOT_FOUND")
			break
		}
		wantCode(t, r, "UNAVAILABLE")
		if i == 200 {
			t.Fatalf("still failing long after Redis came back: %+v", r.Errors)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The outage counted nothing: the code still works, on the same server.
	got := l.get(t, ch.ID)
	if got.Status != "PENDING" || got.AttemptsRemaining != 2 {
		t.Errorf("after the outage: %+v", got)
	}
	wantStatus(t, "right code after the outage", l.verify(t, ch.ID, code), "APPROVED", 2)
	if got := send(t, http.MethodGet, s.URL+"/readyz", nil, nil); got.Status != http.StatusOK {
		t.Errorf("/readyz %d after Redis is back", got.Status)
	}
	s.Clock.Advance(31 * time.Second)
	l.mustIssue(t, "")
}

// redisCounter counts the commands and round trips a client sends.
type redisCounter struct {
	roundTrips atomic.Int64
	commands   atomic.Int64
	names      sync.Map
}

func (c *redisCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *redisCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.roundTrips.Add(1)
		c.commands.Add(1)
		c.names.Store(cmd.Name(), true)
		return next(ctx, cmd)
	}
}

func (c *redisCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.roundTrips.Add(1)
		c.commands.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestChallengeVerifyCost: a verify below the lock threshold is one Redis
// round trip (one script, which records the event too) and no SQL. The
// move of the events to the log is asynchronous: the mover is manual
// here, so its work is counted apart, after the verifies.
func TestChallengeVerifyCost(t *testing.T) {
	t.Parallel()
	var sql *atomic.Int64
	rc := &redisCounter{}
	co := testenv.Company(t)
	s := apptest.Start(t, func(o *app.Options) {
		o.AuditOutbox.Manual, o.AuditOutbox.Match = true, challenge.OutboxMatch(co)
		o.Redis.AddHook(rc)
		sql = testenv.Statements(t, o.DB)
	})
	updateGeneral(t, s.Admin(t, co), map[string]any{"deliveryMethod": "SMS_WITH_EMAIL_BACKUP", "contactPerson": helpDesk})
	l := newLogin(t, s, co, "cost", uniquePhone(), uniqueEmail(), "WEB")
	// The first run of the script loads it (EVALSHA, then EVAL): warm up.
	warm := newLogin(t, s, co, "warm", uniquePhone(), uniqueEmail(), "WEB")
	ch := warm.mustIssue(t, "")
	warm.verify(t, ch.ID, warm.code(t, ch))

	ch = l.mustIssue(t, "")
	code := l.code(t, ch)
	measure := func(what string, do func()) {
		t.Helper()
		rt, cmds, q := rc.roundTrips.Load(), rc.commands.Load(), sql.Load()
		do()
		if d := rc.roundTrips.Load() - rt; d != 1 {
			t.Errorf("%s: %d Redis round trips, want 1", what, d)
		}
		if d := rc.commands.Load() - cmds; d != 1 {
			t.Errorf("%s: %d Redis commands, want 1 (the script)", what, d)
		}
		if d := sql.Load() - q; d != 0 {
			t.Errorf("%s: %d SQL statements, want 0", what, d)
		}
	}
	measure("wrong code", func() { wantStatus(t, "wrong", l.verify(t, ch.ID, wrong(code)), "REJECTED", 2) })
	measure("right code", func() { wantStatus(t, "right", l.verify(t, ch.ID, code), "APPROVED", 2) })
	if _, ok := rc.names.Load("evalsha"); !ok {
		t.Error("verify did not run the script by EVALSHA")
	}
	// The events were recorded all the same: the mover finds them.
	if _, err := s.AuditOutbox.Sweep(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{"CODE_REJECTED", "CODE_VERIFIED"} {
		if n := len(allEvents(t, l.admin, map[string]any{"actions": []string{action}, "userId": "cost"})); n != 1 {
			t.Errorf("%s rows for the measured verifies: %d, want 1", action, n)
		}
	}
}
