package graph_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/testenv"
)

const challengeBenchHowTo = "BenchmarkChallenge needs PostgreSQL and Redis (it reads INFO commandstats); run it alone as\n" +
	"  TEST_DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' " +
	"TEST_REDIS_URL='redis://127.0.0.1:6379/0' go test -run '^$' -bench BenchmarkChallenge -benchtime 3s ./graph"

// codeBox is a sender that keeps the last code per destination.
type codeBox struct{ m sync.Map }

var sixDigits = regexp.MustCompile(`\b\d{6}\b`)

func (c *codeBox) sender() delivery.Sender {
	return delivery.SenderFunc(func(_ context.Context, m delivery.Message) error {
		c.m.Store(m.To, sixDigits.FindString(m.Text))
		return nil
	})
}

func (c *codeBox) code(to string) string { v, _ := c.m.Load(to); s, _ := v.(string); return s }

// benchUser is one user of the bench and its client.
type benchUser struct {
	c     benchClient
	phone string
}

// benchClient posts GraphQL over a keep-alive pool.
type benchClient struct {
	http  *http.Client
	url   string
	token string
}

func (c benchClient) post(query string, vars map[string]any) (json.RawMessage, error) {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, err := http.NewRequest(http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var out struct {
		Data   json.RawMessage `json:"data"`
		Errors []any           `json:"errors"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out.Errors) > 0 || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, raw)
	}
	return out.Data, nil
}

// cycle issues a code to the user and verifies it: one login.
func (c benchClient) cycle(codes *codeBox, phone string) error {
	data, err := c.post(mIssue, map[string]any{"input": map[string]any{"app": "WEB"}})
	if err != nil {
		return err
	}
	var issued struct {
		IssueChallenge issuePayload `json:"issueChallenge"`
	}
	if err := json.Unmarshal(data, &issued); err != nil || issued.IssueChallenge.Challenge == nil {
		return fmt.Errorf("issue: %s", data)
	}
	return c.verify(issued.IssueChallenge.Challenge.ID, codes.code(phone), "APPROVED")
}

func (c benchClient) verify(id, code, want string) error {
	data, err := c.post(mVerify, map[string]any{"input": map[string]any{"challengeId": id, "code": code}})
	if err != nil {
		return err
	}
	var v struct {
		VerifyChallenge verifyPayload `json:"verifyChallenge"`
	}
	if err := json.Unmarshal(data, &v); err != nil || v.VerifyChallenge.status() != want {
		return fmt.Errorf("verify: %s, want %s", data, want)
	}
	return nil
}

// commandStats reads INFO commandstats: calls per command.
func commandStats(b *testing.B, s *apptest.Server) map[string]int64 {
	b.Helper()
	return commandStat(b, s, "calls=")
}

// commandStat reads one field of INFO commandstats per command: "calls="
// or "usec=" (time in Redis; a script's includes its commands').
func commandStat(b *testing.B, s *apptest.Server, field string) map[string]int64 {
	b.Helper()
	info, err := s.Backends.Redis.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatalf("INFO commandstats: %v", err)
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		name, rest, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		for _, kv := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(kv, field); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				out[strings.TrimPrefix(name, "cmdstat_")] = n
			}
		}
	}
	return out
}

// BenchmarkChallenge measures, on real PostgreSQL and Redis through the
// real HTTP handler:
//
//   - Throughput/typename and Throughput/issue+verify: `{ __typename }`
//     requests and whole logins (issue, then verify the right code) per
//     second, sent in parallel to the same server in the same run;
//   - Throughput/verify and Throughput/verify-events-held: verifies per
//     second, with the events moved to PostgreSQL as they come, and held
//     in Redis (the request path alone);
//   - per verify, APPROVED and REJECTED: Redis commands counted with INFO
//     commandstats around n verifies (EVALSHA calls, the round trips, and
//     all commands including those the script runs) and SQL statements
//     counted with a GORM callback.
//
// It asserts no time. Run it alone: INFO commandstats counts every
// client of the Redis server.
func BenchmarkChallenge(b *testing.B) {
	if !testenv.Real() || os.Getenv("TEST_REDIS_URL") == "" {
		b.Fatal(challengeBenchHowTo)
	}
	var statements *atomic.Int64
	rc := &redisCounter{} // round trips as the client sends them (a pipeline is one)
	codes := &codeBox{}
	s := apptest.Start(b, func(o *app.Options) {
		// Many logins per user in the window, no lock on the REJECTED
		// measurement, no SMS cap.
		o.Challenge = challenge.Config{MaxCodesPerWindow: 1 << 30, MaxFailedAttempts: 1 << 30, SMSPerCompanyPerHour: 1 << 30}
		o.SMS, o.Email = codes.sender(), codes.sender()
		o.Redis.AddHook(rc)
		statements = testenv.Statements(b, o.DB)
	})
	co := testenv.Company(b)
	admin := s.Admin(b, co)
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256}}
	const users = 128
	var us []benchUser
	for i := range users {
		id, phone := fmt.Sprintf("bench-%03d", i), fmt.Sprintf("+3712%07d", i)
		admin.Must(b, mCreateUser, map[string]any{"input": map[string]any{"id": id, "phone": phone, "email": id + "@example.com"}}, nil)
		admin.Must(b, mSetUserTwoFactor, map[string]any{"input": map[string]any{"userId": id, "app": "WEB", "enabled": true}}, nil)
		us = append(us, benchUser{phone: phone, c: benchClient{http: httpClient, url: s.URL + "/query",
			token: s.Token(b, auth.Caller{UserID: id, Company: co, Role: auth.RoleUser})}})
	}

	throughput := map[string]float64{}
	for _, op := range []string{"typename", "issue+verify"} {
		b.Run("Throughput/"+op, func(b *testing.B) {
			var next atomic.Int64
			b.SetParallelism(4)
			sql := statements.Load()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				// Each goroutine logs in as its own user: one login at a time.
				u := us[int(next.Add(1)-1)%users]
				for pb.Next() {
					var err error
					if op == "typename" {
						_, err = u.c.post(`{ __typename }`, nil)
					} else {
						err = u.c.cycle(codes, u.phone)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			throughput[op] = float64(b.N) / time.Since(start).Seconds()
			b.ReportMetric(throughput[op], "ops/s")
			// The mover's statements included, as far as it kept up.
			b.ReportMetric(float64(statements.Load()-sql)/float64(b.N), "sql/op")
		})
	}
	b.Run("Throughput/verify", func(b *testing.B) {
		sql := statements.Load()
		throughput["verify"] = verifyThroughput(b, us, codes)
		b.ReportMetric(throughput["verify"], "ops/s")
		// Each verify's issue too, and the mover's statements for both.
		b.ReportMetric(float64(statements.Load()-sql)/float64(b.N), "sql/op")
	})

	// Per verify, the events' move to the log is counted apart: the
	// throughput server's mover stops (what it left is swept below), and
	// the verifies go to a peer whose mover runs only when asked.
	s.AuditOutbox.Close()
	peer := apptest.StartPeer(b, s, func(o *app.Options) {
		o.AuditOutbox.Manual, o.AuditOutbox.Match = true, challenge.OutboxMatch(co)
	})
	if _, err := peer.AuditOutbox.Sweep(context.Background()); err != nil {
		b.Fatal(err)
	}
	for i := range us {
		us[i].c.url = peer.URL + "/query"
	}
	var issueReport, moveReport string
	// Per verify. n users each get a code; then the n verifies are
	// counted, with one verify beforehand to load the script.
	const n = users
	var roundTrips, usec map[string]float64
	perVerify := func(b *testing.B, status string) (evalsha, all, sql float64, top string) {
		ids := make([]string, n)
		issueBefore, issueSQL, issueRT := commandStats(b, s), statements.Load(), rc.roundTrips.Load()
		for i, u := range us {
			data, err := u.c.post(mIssue, map[string]any{"input": map[string]any{"app": "WEB"}})
			if err != nil {
				b.Fatal(err)
			}
			var p struct {
				IssueChallenge issuePayload `json:"issueChallenge"`
			}
			if err := json.Unmarshal(data, &p); err != nil || p.IssueChallenge.Challenge == nil {
				b.Fatalf("issue: %s", data)
			}
			ids[i] = p.IssueChallenge.Challenge.ID
		}
		issueAfter, issueSQLAfter, issueRTAfter := commandStats(b, s), statements.Load(), rc.roundTrips.Load()
		var issueCmds []string
		for name, calls := range issueAfter {
			if d := calls - issueBefore[name]; d > 0 && name != "info" {
				issueCmds = append(issueCmds, fmt.Sprintf("%s=%.2f", name, float64(d)/n))
			}
		}
		sort.Strings(issueCmds)
		issueReport = fmt.Sprintf("issue (SMS): %.2f SQL statements, %.2f Redis round trips, Redis commands [%s] per issue",
			float64(issueSQLAfter-issueSQL)/n, float64(issueRTAfter-issueRT)/n, strings.Join(issueCmds, " "))
		codeFor := func(i int) string {
			c := codes.code(us[i].phone)
			if status == "REJECTED" {
				c = wrong(c)
			}
			return c
		}
		if err := us[0].c.verify(ids[0], codeFor(0), status); err != nil {
			b.Fatal(err)
		}
		before, sqlBefore, rtBefore := commandStats(b, s), statements.Load(), rc.roundTrips.Load()
		usecBefore := commandStat(b, s, "usec=")["evalsha"]
		for i := 1; i < n; i++ {
			if err := us[i].c.verify(ids[i], codeFor(i), status); err != nil {
				b.Fatal(err)
			}
		}
		after, sqlAfter, rtAfter := commandStats(b, s), statements.Load(), rc.roundTrips.Load()
		verifies := float64(n - 1)
		usec[status] = float64(commandStat(b, s, "usec=")["evalsha"]-usecBefore) / verifies
		roundTrips[status] = float64(rtAfter-rtBefore) / verifies
		type kv struct {
			name  string
			calls int64
		}
		var diff []kv
		for name, calls := range after {
			if d := calls - before[name]; d > 0 && name != "info" {
				diff = append(diff, kv{name, d})
				all += float64(d)
			}
		}
		sort.Slice(diff, func(i, j int) bool { return diff[i].calls > diff[j].calls })
		var parts []string
		for _, d := range diff {
			parts = append(parts, fmt.Sprintf("%s=%.2f", d.name, float64(d.calls)/verifies))
		}
		// A login that fails stays open: end them so the next round starts
		// fresh (a verify of the right code closes it).
		if status == "REJECTED" {
			for i, u := range us {
				if err := u.c.verify(ids[i], codes.code(u.phone), "APPROVED"); err != nil {
					b.Fatal(err)
				}
			}
		}
		// The asynchronous part: moving this round's events to the log.
		moveBefore, moveSQL, moveUsec := commandStats(b, s), statements.Load(), sumStat(commandStat(b, s, "usec="))
		moved, err := peer.AuditOutbox.Sweep(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		moveAfter, moveSQLAfter, moveUsecAfter := commandStats(b, s), statements.Load(), sumStat(commandStat(b, s, "usec="))
		var moveCmds int64
		for name, calls := range moveAfter {
			if name != "info" {
				moveCmds += calls - moveBefore[name]
			}
		}
		moveReport = fmt.Sprintf("outbox move (asynchronous): %d events, %.3f SQL statements, %.3f Redis commands and %.1f µs in Redis per event",
			moved, float64(moveSQLAfter-moveSQL)/float64(max(moved, 1)), float64(moveCmds)/float64(max(moved, 1)),
			float64(moveUsecAfter-moveUsec)/float64(max(moved, 1)))
		return float64(after["evalsha"]-before["evalsha"]) / verifies, all / verifies,
			float64(sqlAfter-sqlBefore) / verifies, strings.Join(parts, " ")
	}
	report := map[string]string{}
	roundTrips, usec = map[string]float64{}, map[string]float64{}
	for _, status := range []string{"APPROVED", "REJECTED"} {
		b.Run("PerVerify/"+status, func(b *testing.B) {
			var evalsha, all, sql float64
			for range b.N {
				evalsha, all, sql, report[status] = perVerify(b, status)
			}
			b.ReportMetric(evalsha, "evalsha/verify")
			b.ReportMetric(all, "redis-cmds/verify")
			b.ReportMetric(sql, "sql/verify")
			report[status] = fmt.Sprintf("%s: %.2f Redis round trips (%.2f EVALSHA, %.1f µs in Redis), %.2f Redis commands in all, %.2f SQL statements per verify [%s]",
				status, roundTrips[status], evalsha, usec[status], all, sql, report[status])
		})
	}
	// The request path alone: the same verifies on the peer, whose mover
	// moves only when asked, so their events wait in Redis and the move
	// to PostgreSQL (which shares these cores) is left out of the time.
	b.Run("Throughput/verify-events-held", func(b *testing.B) {
		throughput["verify-held"] = verifyThroughput(b, us, codes)
		b.ReportMetric(throughput["verify-held"], "ops/s")
		b.StopTimer()
		if _, err := peer.AuditOutbox.Sweep(context.Background()); err != nil {
			b.Fatal(err)
		}
	})
	locked := us[0].c // the peer's URL
	locked.token = s.Token(b, auth.Caller{UserID: "bench-locked", Company: co, Role: auth.RoleUser})
	report["LOCKED"] = lockedCost(b, admin, locked, statements, rc)
	if t := throughput["typename"]; t > 0 {
		fmt.Printf("{ __typename }: %.0f req/s; verifyChallenge: %.0f req/s, ratio %.3f (target >= 0.8); "+
			"issue+verify: %.0f logins/s, ratio %.3f (target >= 0.3; each login is 2 requests)\n",
			t, throughput["verify"], throughput["verify"]/t, throughput["issue+verify"], throughput["issue+verify"]/t)
		fmt.Printf("verifyChallenge with its events held in Redis (the request path without the move to PostgreSQL): %.0f req/s, ratio %.3f\n",
			throughput["verify-held"], throughput["verify-held"]/t)
	}
	for _, st := range []string{"APPROVED", "REJECTED", "LOCKED"} {
		if report[st] != "" {
			fmt.Println(report[st])
		}
	}
	if issueReport != "" {
		fmt.Println(issueReport)
	}
	if moveReport != "" {
		fmt.Println(moveReport)
	}
}

// sumStat adds up a commandStat over every command but INFO.
func sumStat(m map[string]int64) int64 {
	var n int64
	for name, v := range m {
		if name != "info" {
			n += v
		}
	}
	return n
}

// verifyThroughput is verifies per second: in rounds, every user gets a
// code (not timed), then all the codes are verified in parallel by as
// many goroutines as Throughput/typename runs (timed).
func verifyThroughput(b *testing.B, us []benchUser, codes *codeBox) float64 {
	b.Helper()
	workers := 4 * runtime.GOMAXPROCS(0)
	var timed time.Duration
	for done := 0; done < b.N; {
		b.StopTimer()
		round := us[:min(len(us), b.N-done)]
		ids := make([]string, len(round))
		if err := inParallel(len(round), workers, func(i int) (err error) {
			ids[i], err = round[i].c.issue()
			return err
		}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := inParallel(len(round), workers, func(i int) error {
			return round[i].c.verify(ids[i], codes.code(round[i].phone), "APPROVED")
		}); err != nil {
			b.Fatal(err)
		}
		timed += time.Since(start)
		done += len(round)
	}
	return float64(b.N) / timed.Seconds()
}

// inParallel runs f(0..n-1) on workers goroutines; the first error wins.
func inParallel(n, workers int, f func(i int) error) error {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		firstErr atomic.Value
	)
	for range min(workers, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := f(i); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return err
	}
	return nil
}

// issue asks for a code and returns the challenge's id.
func (c benchClient) issue() (string, error) {
	data, err := c.post(mIssue, map[string]any{"input": map[string]any{"app": "WEB"}})
	if err != nil {
		return "", err
	}
	var p struct {
		IssueChallenge issuePayload `json:"issueChallenge"`
	}
	if err := json.Unmarshal(data, &p); err != nil || p.IssueChallenge.Challenge == nil {
		return "", fmt.Errorf("issue: %s", data)
	}
	return p.IssueChallenge.Challenge.ID, nil
}

// lockedCost counts what a verify answered LOCKED costs: c's user gets a
// code, wrong codes until 2FA locks (MaxConsecutiveFailures: the bench's
// MaxFailedAttempts never locks), then lockedVerifies more are counted.
func lockedCost(b *testing.B, admin *apptest.Client, c benchClient, sql *atomic.Int64, rc *redisCounter) string {
	b.Helper()
	const lockedVerifies = 100
	admin.Must(b, mCreateUser, map[string]any{"input": map[string]any{"id": "bench-locked", "phone": "+37129999999"}}, nil)
	admin.Must(b, mSetUserTwoFactor, map[string]any{"input": map[string]any{"userId": "bench-locked", "app": "WEB", "enabled": true}}, nil)
	id, err := c.issue()
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; c.verify(id, "000000", "LOCKED") != nil; i++ {
		if i > challenge.MaxConsecutiveFailuresLimit {
			b.Fatal("2FA never locked")
		}
	}
	q, rt := sql.Load(), rc.roundTrips.Load()
	for range lockedVerifies {
		if err := c.verify(id, "000000", "LOCKED"); err != nil {
			b.Fatal(err)
		}
	}
	return fmt.Sprintf("LOCKED: %.2f Redis round trips, %.2f SQL statements per verify (contact person from the settings cache)",
		float64(rc.roundTrips.Load()-rt)/lockedVerifies, float64(sql.Load()-q)/lockedVerifies)
}

// TestColdIssueIsOneStatement: an issue on an instance whose settings
// cache has not seen the company reads the user and the settings in one
// SQL statement (joined), and the next user's issue reads the user alone,
// the settings coming from the cache the first one filled.
func TestColdIssueIsOneStatement(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t)
	co := testenv.Company(t)
	admin := s.Admin(t, co)
	for i, id := range []string{"cold", "warm"} {
		admin.Must(t, mCreateUser, map[string]any{"input": map[string]any{"id": id, "phone": fmt.Sprintf("+3712000004%d", i)}}, nil)
		admin.Must(t, mSetUserTwoFactor, map[string]any{"input": map[string]any{"userId": id, "app": "WEB", "enabled": true}}, nil)
	}
	// A new instance: its cache is cold. Its mover waits, so that only
	// the issues' statements are counted.
	peer := apptest.StartPeer(t, s, func(o *app.Options) { o.AuditOutbox.Manual = true })
	statements := testenv.Statements(t, peer.Backends.DB)
	for _, id := range []string{"cold", "warm"} {
		user := benchClient{http: http.DefaultClient, url: peer.URL + "/query",
			token: peer.Token(t, auth.Caller{UserID: id, Company: co, Role: auth.RoleUser})}
		before := statements.Load()
		if _, err := user.issue(); err != nil {
			t.Fatal(err)
		}
		if n := statements.Load() - before; n != 1 {
			t.Errorf("%s cache: the issue ran %d SQL statements, want 1", id, n)
		}
	}
}
