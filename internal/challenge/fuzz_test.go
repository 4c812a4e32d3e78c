package challenge_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/assertion"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/otp"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

const fuzzUser = "fuzz-user"

type oneUser struct{}

func (oneUser) ByID(_ context.Context, company, id string) (users.User, error) {
	if id != fuzzUser {
		return users.User{}, users.ErrNotFound
	}
	return users.User{Company: company, ID: id, Phone: "+37120000078", Email: "fuzz@example.com",
		TwoFactor: map[users.App]bool{users.Web: true, users.Manager: true}}, nil
}

type fixedSettings struct{}

func (fixedSettings) ForCompany(_ context.Context, company string) (settings.Settings, error) {
	return settings.Settings{Company: company, DeliveryMethod: settings.SMSWithEmailBackup}, nil
}

// harness is the challenge service on the test Redis with fakes around it.
type harness struct {
	svc    *challenge.Service
	caller auth.Caller
	offset atomic.Int64 // added to the wall clock
	last   atomic.Value // the last code sent
	redis  redis.UniversalClient
}

func newHarness(t testing.TB, cfg challenge.Config) *harness {
	t.Helper()
	b := testenv.Open(t)
	h := &harness{caller: auth.Caller{UserID: fuzzUser, Company: testenv.Company(t), Role: auth.RoleUser}, redis: b.Redis.UniversalClient}
	now := func() time.Time { return time.Now().Add(time.Duration(h.offset.Load())) }
	sender := delivery.SenderFunc(func(_ context.Context, m delivery.Message) error {
		h.last.Store(regexp.MustCompile(`\d{6}`).FindString(m.Text))
		return nil
	})
	h.svc = newService(t, b, oneUser{}, sender, now, cfg)
	return h
}

// newService is the challenge service on b's Redis, with users, one
// sender for both channels, a fixed code key, fake settings and audit,
// and the clock now (nil for the wall clock).
func newService(t testing.TB, b testenv.Backends, u challenge.UserLookup, sender delivery.Sender, now func() time.Time, cfg challenge.Config) *challenge.Service {
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
		Redis: b.Redis.UniversalClient, Users: u, Settings: fixedSettings{},
		Codes: codes, Signer: assertion.NewSigner("fuzz", key, now), SMS: sender, Email: sender, Now: now,
	}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// issue gets a fresh code, past the cooldown of the last one.
func (h *harness) issue(t testing.TB) (id, code string) {
	t.Helper()
	h.offset.Add(int64(time.Minute))
	ch, err := h.svc.Issue(context.Background(), h.caller, challenge.IssueRequest{App: users.Web})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	return ch.ID, h.last.Load().(string)
}

// FuzzVerifyInput throws arbitrary challenge ids and codes at Verify. It
// must never panic, never fail with anything but a refusal or not-found
// while Redis is up, and approve exactly the right code for the right
// challenge. In the inputs, $ID stands for the current challenge's id and
// $CODE for its code, so the fuzzer can work around the real values.
func FuzzVerifyInput(f *testing.F) {
	// No lock and no rate limit: the fuzzer makes many attempts.
	h := newHarness(f, challenge.Config{MaxFailedAttempts: 1 << 30, MaxCodesPerWindow: 1 << 30})
	var mu sync.Mutex
	curID, curCode := h.issue(f)

	for _, seed := range [][2]string{
		{"$ID", "$CODE"},
		{"$ID", "000000"},
		{"$ID", "999999"},
		{"$ID", ""},
		{"$ID", "12345"},
		{"$ID", "1234567"},
		{"$ID", "12345a"},
		{"$ID", "-12345"},
		{"$ID", "１２３４５６"},
		{"$ID", "$CODE "},
		{"$ID", " $CODE"},
		{"$ID", "$CODE\x00"},
		{"$ID", "$CODE$CODE"},
		{"$IDx", "$CODE"},
		{"x$ID", "$CODE"},
		{"$ID.", "$CODE"},
		{"", "$CODE"},
		{".", "123456"},
		{"..", "123456"},
		{"AAAAAAAAAAAAAAAAAAAAAA.w.", "$CODE"},
		{"AAAAAAAAAAAAAAAAAAAAAA.w.ZnV6ei11c2Vy", "$CODE"}, // the user's keys, no such challenge
		{"AAAAAAAAAAAAAAAAAAAAAA.m.ZnV6ei11c2Vy", "$CODE"},
		{"AAAAAAAAAAAAAAAAAAAAAA.x.ZnV6ei11c2Vy", "$CODE"},
		{"AAAAAAAAAAAAAAAAAAAAAA.w.b3RoZXI", "$CODE"}, // another user
		{"AAAAAAAAAAAAAAAAAAAAAA.w.!!", "123456"},
		{"AAAAAAAAAAAAAAAAAAAAAA.w.e30}", "123456"},
		{"*", "*"},
		{"2fa:{c:x}:*", "123456"},
		{strings.Repeat("A", 401), "123456"},
		{"$ID", strings.Repeat("1", 1000)},
		{"$ID", "\xff\xfe\xfd\xfc\xfb\xfa"},
	} {
		f.Add(seed[0], seed[1])
	}

	f.Fuzz(func(t *testing.T, rawID, rawCode string) {
		mu.Lock()
		defer mu.Unlock()
		id := strings.ReplaceAll(rawID, "$ID", curID)
		code := strings.ReplaceAll(rawCode, "$CODE", curCode)
		right := id == curID && code == curCode

		res, err := h.svc.Verify(context.Background(), h.caller, id, code)
		var refusal *challenge.Refusal
		switch {
		case err == nil, errors.Is(err, challenge.ErrNotFound), errors.As(err, &refusal):
		default:
			t.Fatalf("Verify(%q, %q): unexpected error %v", id, code, err)
		}
		if err != nil && curCode != "" && strings.Contains(err.Error(), curCode) {
			t.Errorf("error shows the code: %v", err)
		}
		if res.Status == challenge.Approved {
			if !right {
				t.Fatalf("Verify(%q, %q) approved; the challenge is %q with code %q", id, code, curID, curCode)
			}
			if res.Assertion == "" {
				t.Fatal("approved without an assertion")
			}
			curID, curCode = h.issue(t) // that one is used up
			return
		}
		if right {
			t.Fatalf("the right code for the current challenge was not approved: %+v, %v", res, err)
		}
		if res.Assertion != "" {
			t.Fatalf("status %s with an assertion", res.Status)
		}
		if res.Status == challenge.Locked {
			// Wrong codes count until a right one is given (NIST): enough
			// of them lock until an admin unlocks, whatever
			// MaxFailedAttempts says. The admin does, and a new code
			// follows; the right code must never meet a lock it did not
			// earn, which the check above would catch.
			admin := auth.Caller{UserID: "fuzz-admin", Company: h.caller.Company, Role: auth.RoleAdmin}
			if _, err := h.svc.Unlock(context.Background(), admin, h.caller.UserID, users.Web); err != nil {
				t.Fatalf("unlock: %v", err)
			}
			curID, curCode = h.issue(t)
		}
	})
}
