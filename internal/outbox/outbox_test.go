package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/outbox"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/models"
)

// wait bounds each poll; nothing is asserted about time.
const wait = 20 * time.Second

// env is one test's Redis, audit log and outbox keys.
type env struct {
	t       *testing.T
	rdb     redis.UniversalClient
	log     *audit.Log
	db      testenv.Backends
	company string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	b := testenv.Open(t)
	return &env{t: t, rdb: b.Redis.UniversalClient, log: audit.NewLog(b.DB, nil, nil), db: b, company: testenv.Company(t)}
}

// key is user's outbox key, in the user's own slot.
func (e *env) key(user string) string { return "outboxtest:{" + e.company + ":" + user + "}:outbox" }

func (e *env) match() string { return "outboxtest:{" + e.company + ":*}:outbox" }

// add appends n events to user's outbox.
func (e *env) add(user string, n int) {
	e.t.Helper()
	for i := range n {
		err := e.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: e.key(user), Values: []any{
			"uid", fmt.Sprintf("%s-%d", user, i), "company", e.company, "action", string(audit.CodeVerified), "user", user,
		}}).Err()
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

// decode reads add's entries; "bad" entries fail.
func decode(_ string, v map[string]any) (*audit.Event, error) {
	if v["bad"] != nil {
		return nil, errors.New("unreadable")
	}
	user, _ := v["user"].(string)
	return &audit.Event{Company: v["company"].(string), Action: audit.Action(v["action"].(string)),
		Actor: audit.Party{ID: user}, Target: &audit.Party{ID: user}, UID: v["uid"].(string)}, nil
}

// rows counts the company's stored events.
func (e *env) rows() int {
	e.t.Helper()
	var n int64
	if err := e.db.DB.Model(&models.AuditEvent{}).Where("company_id = ?", e.company).Count(&n).Error; err != nil {
		e.t.Fatal(err)
	}
	return int(n)
}

func (e *env) exists(key string) bool {
	e.t.Helper()
	n, err := e.rdb.Exists(context.Background(), key).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	return n == 1
}

// flaky stores events and then fails (a move cut off after the commit,
// before the delete), or fails outright, while its counters last.
type flaky struct {
	next            outbox.Appender
	storeThenFail   atomic.Int64
	failBeforeStore atomic.Int64
}

func (f *flaky) AppendOnce(ctx context.Context, events []*audit.Event) (audit.AppendResult, error) {
	if f.failBeforeStore.Add(-1) >= 0 {
		return audit.AppendResult{}, errors.New("database down")
	}
	res, err := f.next.AppendOnce(ctx, events)
	if err == nil && f.storeThenFail.Add(-1) >= 0 {
		// The caller cannot tell what was committed.
		return audit.AppendResult{}, errors.New("connection lost after the commit")
	}
	return res, err
}

// TestMoveIsIdempotent: a move that stored the events but failed before
// deleting them is retried without duplicates; batches smaller than the
// outbox still move everything; the emptied outbox key is deleted.
func TestMoveIsIdempotent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.add("ann", 7)
	e.add("bob", 2)
	sink := &flaky{next: e.log}
	sink.storeThenFail.Store(1)
	m := outbox.New(e.rdb, decode, sink, nil, outbox.Options{Manual: true, Batch: 3, Match: e.match()})
	defer m.Close()

	if _, err := m.Move(context.Background(), e.key("ann"), e.key("bob")); err == nil {
		t.Fatal("the first move did not fail")
	}
	// The first batch (ann's first 3, bob's 2) was committed; nothing was
	// deleted.
	if got := e.rows(); got != 5 {
		t.Errorf("rows after the failed move: %d, want 5", got)
	}
	if n, err := e.rdb.XLen(context.Background(), e.key("ann")).Result(); err != nil || n != 7 {
		t.Errorf("ann's outbox after the failed move: %d entries (err %v), want 7", n, err)
	}
	n, err := m.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := e.rows(); got != 9 || n != 4 {
		t.Errorf("after the retry: %d rows, %d stored by it; want 9 and 4", got, n)
	}
	// Moving again, by another mover, stores nothing more.
	other := outbox.New(e.rdb, decode, e.log, nil, outbox.Options{Manual: true, Match: e.match()})
	defer other.Close()
	if n, err := other.Move(context.Background(), e.key("ann"), e.key("bob")); err != nil || n != 0 {
		t.Errorf("a second move stored %d (err %v), want 0", n, err)
	}
	for _, k := range []string{e.key("ann"), e.key("bob")} {
		if e.exists(k) {
			t.Errorf("outbox %s still exists once moved", k)
		}
	}
}

// TestMoveRewritesTheSameUIDOnce: the same entries written twice (a
// retried script) are stored once.
func TestMoveRewritesTheSameUIDOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.add("cat", 3)
	e.add("cat", 3) // the same uids again
	m := outbox.New(e.rdb, decode, e.log, nil, outbox.Options{Manual: true})
	defer m.Close()
	if n, err := m.Move(context.Background(), e.key("cat")); err != nil || n != 3 {
		t.Fatalf("move stored %d (err %v), want 3", n, err)
	}
	if got := e.rows(); got != 3 {
		t.Errorf("rows %d, want 3", got)
	}
}

// TestUnreadableEntriesStay: an entry this version cannot read stays for
// a newer one; the rest move.
func TestUnreadableEntriesStay(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.add("dan", 2)
	if err := e.rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: e.key("dan"), Values: []any{"bad", "1"}}).Err(); err != nil {
		t.Fatal(err)
	}
	m := outbox.New(e.rdb, decode, e.log, nil, outbox.Options{Manual: true, Batch: 1})
	defer m.Close()
	if n, err := m.Move(context.Background(), e.key("dan")); err != nil || n != 2 {
		t.Fatalf("move stored %d (err %v), want 2", n, err)
	}
	if left, err := e.rdb.XLen(context.Background(), e.key("dan")).Result(); err != nil || left != 1 {
		t.Errorf("entries left %d (err %v), want the unreadable one", left, err)
	}
}

// TestWorkerRetriesAndSweeperScopes: kicked keys move in the background,
// with retries while the database fails; the sweeper finds keys nobody
// kicked, and only those its pattern matches.
func TestWorkerRetriesAndSweeperScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	stranger := newEnv(t)
	stranger.add("zed", 2)
	e.add("eve", 4)
	e.add("fay", 3) // never kicked: the sweeper's
	sink := &flaky{next: e.log}
	sink.failBeforeStore.Store(3)
	m := outbox.New(e.rdb, decode, sink, nil, outbox.Options{
		Match: e.match(), SweepEvery: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
	})
	defer m.Close()
	m.Kick(e.key("eve"))
	deadline := time.Now().Add(wait)
	for e.rows() < 7 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := e.rows(); got != 7 {
		t.Fatalf("rows %d, want 7 (4 kicked, 3 swept)", got)
	}
	if !stranger.exists(stranger.key("zed")) || stranger.rows() != 0 {
		t.Error("the sweeper moved another company's outbox")
	}
}

// TestCloseLeavesNoGoroutine: movers started and closed leave nothing
// running, even while their moves fail.
func TestCloseLeavesNoGoroutine(t *testing.T) {
	e := newEnv(t)
	e.add("gus", 1)
	before := runtime.NumGoroutine()
	for range 50 {
		sink := &flaky{next: e.log}
		sink.failBeforeStore.Store(1 << 30)
		m := outbox.New(e.rdb, decode, sink, nil, outbox.Options{Match: e.match(), SweepEvery: time.Millisecond, MinBackoff: time.Millisecond})
		m.Kick(e.key("gus"))
		m.Close()
		m.Close() // idempotent
		m.Kick(e.key("gus"))
	}
	deadline := time.Now().Add(wait)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		t.Fatalf("%d goroutines after 50 movers, %d before:\n%s", after, before, buf.String())
	}
}

// batches records how many events each AppendOnce call was given.
type batches struct {
	next  outbox.Appender
	mu    sync.Mutex
	sizes []int
}

func (b *batches) AppendOnce(ctx context.Context, events []*audit.Event) (audit.AppendResult, error) {
	b.mu.Lock()
	b.sizes = append(b.sizes, len(events))
	b.mu.Unlock()
	return b.next.AppendOnce(ctx, events)
}

func (b *batches) got() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.sizes)
}

// waitRows polls until the company has n rows; nothing is asserted about
// time.
func (e *env) waitRows(n int) {
	e.t.Helper()
	deadline := time.Now().Add(wait)
	for e.rows() < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.rows(); got != n {
		e.t.Fatalf("rows %d, want %d", got, n)
	}
}

// TestLingerGathersKeysAfterASmallMove: a kick on a quiet mover moves at
// once; keys kicked right after a move wait (here up to an hour) until a
// whole batch of keys is pending, and then move in one call; a key that
// holds more than a batch is read again at once, not after the linger;
// Close ends a linger and leaves its keys in Redis for the sweeper.
func TestLingerGathersKeysAfterASmallMove(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, u := range []string{"u0", "u1", "u2", "u3", "u4", "u6"} {
		e.add(u, 1)
	}
	e.add("u5", 7) // more than a batch
	sink := &batches{next: e.log}
	m := outbox.New(e.rdb, decode, sink, nil, outbox.Options{SweepEvery: -1, KeysPerMove: 4, Batch: 2, Linger: time.Hour})
	m.Kick(e.key("u0"))
	e.waitRows(1) // quiet: no linger
	for _, u := range []string{"u1", "u2", "u3"} {
		m.Kick(e.key(u)) // lingering: 3 of 4 keys
	}
	m.Kick(e.key("u5"))
	e.waitRows(1 + 3 + 7)
	if got, want := sink.got(), []int{1, 5, 2, 2, 1}; !slices.Equal(got, want) {
		t.Errorf("AppendOnce batch sizes %v, want %v (u0 alone; u1-u3 and u5's first 2; then the rest of u5 at once)", got, want)
	}
	m.Kick(e.key("u6")) // lingers: one key of four
	m.Close()
	if !e.exists(e.key("u6")) || e.rows() != 11 {
		t.Error("the key kicked during the linger was moved or lost on Close")
	}
}
