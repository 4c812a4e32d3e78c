package challenge_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/assertion"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/otp"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

// beforeWrite runs an action once, just before the next command that may
// clear a lock (a DEL or a script) goes to Redis: another request acting
// between an unlock's read and its write.
type beforeWrite struct {
	mu     sync.Mutex
	action func()
}

func (h *beforeWrite) arm(action func()) { h.mu.Lock(); h.action = action; h.mu.Unlock() }

func (h *beforeWrite) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *beforeWrite) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		switch strings.ToLower(cmd.Name()) {
		case "del", "evalsha", "eval":
			h.mu.Lock()
			action := h.action
			h.action = nil
			h.mu.Unlock()
			if action != nil {
				action()
			}
		}
		return next(ctx, cmd)
	}
}

func (h *beforeWrite) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// unlockEvents is the USER_TWO_FACTOR_UNLOCKED entries of the user's outbox,
// decoded.
func unlockEvents(t *testing.T, rdb redis.UniversalClient, company, user string) []audit.Change {
	t.Helper()
	key := challenge.OutboxKey(company, user)
	msgs, err := rdb.XRange(context.Background(), key, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Change
	for _, m := range msgs {
		e, err := challenge.DecodeOutboxEntry(key, m.Values)
		if err != nil {
			t.Fatal(err)
		}
		if e.Action != audit.UserTwoFactorUnlocked {
			continue
		}
		var c audit.Change
		if err := json.Unmarshal(e.Details, &c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// TestUnlockRace is the red-team finding "unlock race": Unlock read the
// lock in one round trip and deleted it later, inside a database
// transaction. A lock set in between was lifted with the first one's
// record, and a commit that failed after the delete left no lock and no
// row. Now one script reads and clears, and appends the event to the
// user's outbox in the same step: what is lifted is what is recorded, and
// the record cannot be lost once the lock is gone.
func TestUnlockRace(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		between bool // a later lock is set just before the unlock writes
	}{
		{"a lock set before the write is the one recorded", true},
		{"an unlock with nothing in between", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := testenv.Open(t)
			hook := &beforeWrite{}
			b.Redis.AddHook(hook)
			clock := time.Now()
			out := &outbox{}
			svc := newServiceRecording(t, b.Redis.UniversalClient, out, func() time.Time { return clock })
			caller := auth.Caller{Company: testenv.Company(t), UserID: "u", Role: auth.RoleUser}
			admin := auth.Caller{Company: caller.Company, UserID: "boss", Role: auth.RoleAdmin}
			ch, err := svc.Issue(ctx, caller, challenge.IssueRequest{App: users.Web})
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if _, err := svc.Verify(ctx, caller, ch.ID, wrongCode(out.code())); err != nil {
					t.Fatal(err)
				}
			}
			until := clock.Add(15 * time.Minute).UnixMilli()
			if tc.between {
				until = clock.Add(time.Hour).UnixMilli() // another lock, a later end
				hook.arm(func() {
					key := challenge.LockKey(caller.Company, caller.UserID, users.Web)
					if err := b.Redis.Set(ctx, key, until, time.Hour).Err(); err != nil {
						t.Error(err)
					}
				})
			}
			_, err = svc.Unlock(ctx, admin, caller.UserID, users.Web)
			locks, lerr := svc.LockStates(ctx, caller.Company, caller.UserID)
			if lerr != nil {
				t.Fatal(lerr)
			}
			if _, locked := locks[users.Web]; locked {
				t.Fatalf("still locked after the unlock (error %v)", err)
			}
			events := unlockEvents(t, b.Redis.UniversalClient, caller.Company, caller.UserID)
			want := time.UnixMilli(until).UTC().Format(time.RFC3339)
			if err != nil || len(events) != 1 || events[0].Before["lockedUntil"] != want ||
				events[0].Before["consecutiveFailures"] != float64(3) {
				t.Fatalf("the lock until %s was lifted (unlock error %v); recorded in the outbox: %+v", want, err, events)
			}
		})
	}
}

// newServiceRecording is newService on rdb, with its own clock.
func newServiceRecording(t *testing.T, rdb redis.UniversalClient, out *outbox, now func() time.Time) *challenge.Service {
	t.Helper()
	codes, err := otp.NewHasher([]byte(strings.Repeat("k", otp.MinKeyLen)), 6)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := challenge.NewService(challenge.Deps{
		Redis: rdb, Users: anyUser{}, Settings: fixedSettings{},
		Codes: codes, Signer: assertion.NewSigner("unlock", key, now), SMS: out, Email: out, Now: now,
	}, challenge.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}
