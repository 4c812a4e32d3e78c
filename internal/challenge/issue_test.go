package challenge_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

// TestCodeSentIsWrittenWithTheCode is the red-team finding "CODE_SENT is
// written after delivery": an instance that crashed between the send and
// the event left a delivered code with no record. Now issue.lua appends
// CODE_SENT in the step that stores the code, so it is in the outbox
// before the code leaves; a failed send follows it with
// CODE_DELIVERY_FAILED.
func TestCodeSentIsWrittenWithTheCode(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		fail bool
		want []string
	}{
		{"delivered", false, []string{"CODE_SENT"}},
		{"delivery fails", true, []string{"CODE_SENT", "CODE_DELIVERY_FAILED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := testenv.Open(t)
			caller := auth.Caller{Company: testenv.Company(t), UserID: "u", Role: auth.RoleUser}
			key := challenge.OutboxKey(caller.Company, caller.UserID)
			var mu sync.Mutex
			var atSend []string // the outbox's actions when the code leaves
			sender := delivery.SenderFunc(func(ctx context.Context, _ delivery.Message) error {
				msgs, err := b.Redis.XRange(ctx, key, "-", "+").Result()
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				for _, m := range msgs {
					a, _ := m.Values["action"].(string)
					atSend = append(atSend, a)
				}
				if tc.fail {
					return errors.New("provider down")
				}
				return nil
			})
			svc := newService(t, b, anyUser{}, sender, time.Now, challenge.Config{})
			_, err := svc.Issue(ctx, caller, challenge.IssueRequest{App: users.Web})
			if (err != nil) != tc.fail {
				t.Fatalf("issue: %v", err)
			}
			mu.Lock()
			if len(atSend) != 1 || atSend[0] != "CODE_SENT" {
				t.Errorf("when the code left, the outbox held %v, want CODE_SENT", atSend)
			}
			mu.Unlock()
			msgs, err := b.Redis.XRange(ctx, key, "-", "+").Result()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range msgs {
				e, err := challenge.DecodeOutboxEntry(key, m.Values)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(e.Action))
				if e.Action == "CODE_SENT" && (e.Actor.ID != "u" || e.Target.ID != "u" || len(e.Details) == 0) {
					t.Errorf("CODE_SENT %+v", e)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("outbox %v, want %v", got, tc.want)
			}
		})
	}
}
