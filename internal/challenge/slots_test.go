package challenge_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

var slot = testenv.Slot

// TestSlotFunction checks crc16 and slot against the Cluster
// specification's own examples.
func TestSlotFunction(t *testing.T) {
	if got := testenv.CRC16("123456789"); got != 0x31C3 {
		t.Fatalf("testenv.CRC16(123456789) = %#x, want 0x31c3", got)
	}
	for _, tc := range []struct {
		key  string
		want int
	}{
		{"123456789", 12739},
		{"{123456789}.x", 12739},
		{"foo", 12182},
		{"foo{}{bar}", slot2("foo{}{bar}")}, // empty tag: the whole key
		{"foo{{bar}}zap", slot2("{bar")},    // tag is "{bar"
		{"foo{bar}{zap}", slot2("bar")},     // the first tag only
		{"{user1000}.following", slot2("user1000")},
	} {
		if got := slot(tc.key); got != tc.want {
			t.Errorf("slot(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
}

func slot2(s string) int { return int(testenv.CRC16(s) % 16384) }

// scriptKeys records the KEYS of every script call, and the keys of the
// multi-key commands, that go through a client.
type scriptKeys struct {
	mu    sync.Mutex
	calls [][]string // one entry per call: the command name, then its keys
}

func (r *scriptKeys) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *scriptKeys) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.record(cmd)
		return next(ctx, cmd)
	}
}

func (r *scriptKeys) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			r.record(c)
		}
		return next(ctx, cmds)
	}
}

func (r *scriptKeys) record(cmd redis.Cmder) {
	args := cmd.Args()
	name := strings.ToLower(cmd.Name())
	var ks []string
	switch name {
	case "eval", "evalsha", "eval_ro", "evalsha_ro":
		n, _ := args[2].(int)
		for _, a := range args[3 : 3+n] {
			ks = append(ks, fmt.Sprint(a))
		}
	case "del", "unlink", "mget", "exists", "touch":
		for _, a := range args[1:] {
			ks = append(ks, fmt.Sprint(a))
		}
	default:
		return
	}
	r.mu.Lock()
	r.calls = append(r.calls, append([]string{name}, ks...))
	r.mu.Unlock()
}

// slotUser has every id, with both channels and both apps on.
type slotUser struct{}

func (slotUser) ByID(_ context.Context, company, id string) (users.User, error) {
	return users.User{Company: company, ID: id, Phone: "+37120000078", Email: "slot@example.com",
		TwoFactor: map[users.App]bool{users.Web: true, users.Manager: true}}, nil
}

// hostileIDs are ids made of the hash tag's own characters and more.
var hostileIDs = []string{"{", "}", "{}", "}{", ":", "a:u:b", "{c:x:u:y}", "ünï-côdé", "日本語", "\x00", " ",
	"*?[]", strings.Repeat("{", 40), strings.Repeat("}x{", 30), strings.Repeat("é", 60)}

func randomID(rng *rand.Rand) string {
	const alphabet = "{}:ab*?[]\\/.=+ é日"
	r := []rune(alphabet)
	b := make([]rune, 1+rng.IntN(80))
	for i := range b {
		b[i] = r[rng.IntN(len(r))]
	}
	return string(b)
}

// TestEveryScriptTouchesOneSlot is issue 11: on a Cluster a script (or a
// multi-key command) whose keys span slots fails with CROSSSLOT. It runs
// every path that calls Redis for many hostile and random company and
// user ids, and checks that the keys of each call, whatever they are
// today, hash to one slot. On a real Cluster (TEST_REDIS_URL) the calls
// themselves would fail too.
func TestEveryScriptTouchesOneSlot(t *testing.T) {
	b := testenv.Open(t)
	rec := &scriptKeys{}
	b.Redis.AddHook(rec)
	var (
		mu   sync.Mutex
		code string
		fail bool
	)
	sender := delivery.SenderFunc(func(_ context.Context, m delivery.Message) error {
		mu.Lock()
		defer mu.Unlock()
		code = regexp.MustCompile(`\d{6}`).FindString(m.Text)
		if fail {
			return errors.New("provider down")
		}
		return nil
	})
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	svc := newService(t, b, slotUser{}, sender, now, challenge.Config{})
	state := &challenge.State{Redis: b.Redis.UniversalClient, Now: now}

	rng := rand.New(rand.NewPCG(11, uint64(time.Now().UnixNano())))
	prefix := testenv.Company(t)
	n := 0
	run := func(company, user string) {
		n++
		company = fmt.Sprintf("%s-%d%s", prefix, n, company)
		mu.Lock()
		clock = clock.Add(time.Hour)
		fail = n%2 == 0 // every other pair goes through the failed-delivery script
		mu.Unlock()
		exerciseUser(t, svc, state, company, user, func() string { mu.Lock(); defer mu.Unlock(); return code })
	}
	for _, id := range hostileIDs {
		run(id, id)
		run("", id)
		run(id, "u")
	}
	for range 60 {
		run(randomID(rng), randomID(rng))
	}
	checkOneSlotPerCall(t, rec)
}

// exerciseUser drives every Redis path for one company and user: issue,
// a wrong and a right code, unlock, locks, void and forget.
func exerciseUser(t *testing.T, svc *challenge.Service, state *challenge.State, company, user string, lastCode func() string) {
	t.Helper()
	ctx := context.Background()
	caller := auth.Caller{Company: company, UserID: user, Role: auth.RoleUser}
	admin := auth.Caller{Company: company, UserID: "admin", Role: auth.RoleAdmin}
	ch, err := svc.Issue(ctx, caller, challenge.IssueRequest{App: users.Web})
	var refusal *challenge.Refusal
	if errors.As(err, &refusal) && refusal.Code == challenge.CodeDeliveryFailed {
		// The delivery failed: the failed script has run; nothing to verify.
	} else if err != nil {
		t.Fatalf("issue for %q/%q: %v", company, user, err)
	} else {
		wrong := "000000"
		if lastCode() == wrong {
			wrong = "111111"
		}
		for _, c := range []string{wrong, lastCode()} {
			if _, err := svc.Verify(ctx, caller, ch.ID, c); err != nil {
				t.Fatalf("verify for %q/%q: %v", company, user, err)
			}
		}
	}
	if _, err := svc.Locks(ctx, company, user); err != nil {
		t.Fatalf("locks for %q/%q: %v", company, user, err)
	}
	if _, err := svc.Unlock(ctx, admin, user, users.Web); err != nil && !errors.Is(err, users.ErrNotFound) {
		t.Logf("unlock for %q/%q: %v", company, user, err)
	}
	if err := state.Void(ctx, company, user); err != nil {
		t.Fatalf("void for %q/%q: %v", company, user, err)
	}
	if err := state.Forget(ctx, company, user); err != nil {
		t.Fatalf("forget for %q/%q: %v", company, user, err)
	}
}

func checkOneSlotPerCall(t *testing.T, rec *scriptKeys) {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	scripts := 0
	for _, call := range rec.calls {
		name, ks := call[0], call[1:]
		if strings.HasPrefix(name, "eval") {
			scripts++
		}
		for _, k := range ks[min(1, len(ks)):] {
			if slot(k) != slot(ks[0]) {
				t.Errorf("%s touches slot %d (%q) and slot %d (%q)", name, slot(ks[0]), ks[0], slot(k), k)
				break
			}
		}
	}
	// Each pair ran at least issue's script and, without a failed delivery, verify's twice.
	if scripts < 100 {
		t.Fatalf("only %d script calls recorded: the hook saw nothing", scripts)
	}
}
