package challenge_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

// reservations counts the round trips that reserved SMS units: calls on
// the hourly counter, the only key with ":sms:".
func reservations(r *scriptKeys) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if slices.ContainsFunc(c[1:], func(k string) bool { return strings.Contains(k, ":sms:") }) {
			n++
		}
	}
	return n
}

// TestSMSCapAcrossInstances: two instances hold parts of one company's
// hourly SMS allowance. However the issues are spread and raced, no more
// SMS go out than the cap, and once both are refused in turn exactly the
// cap went out: no unit is lost between them. Most issues reserve
// nothing: they use a unit their instance already holds.
func TestSMSCapAcrossInstances(t *testing.T) {
	t.Parallel()
	const limit = 2000 // blocks of 16 up to 976 SMS, then smaller
	b := testenv.Open(t)
	hook := &scriptKeys{}
	b.Redis.AddHook(hook)
	var sent atomic.Int64
	sender := delivery.SenderFunc(func(context.Context, delivery.Message) error { sent.Add(1); return nil })
	cfg := challenge.Config{SMSPerCompanyPerHour: limit}
	instances := []*challenge.Service{
		newService(t, b, benchUsers{}, sender, nil, cfg),
		newService(t, b, benchUsers{}, sender, nil, cfg),
	}
	co := testenv.Company(t)
	var next atomic.Int64
	// issue asks for a code for a new user on instance i: true if it went.
	issue := func(i int) (bool, error) {
		c := auth.Caller{Company: co, UserID: fmt.Sprintf("+3712%07d", next.Add(1)), Role: auth.RoleUser}
		_, err := instances[i].Issue(context.Background(), c, challenge.IssueRequest{App: users.Web})
		var r *challenge.Refusal
		if errors.As(err, &r) && r.Code == challenge.CodeRateLimited {
			return false, nil
		}
		return err == nil, err
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 30 { // 240 in all: under the cap
				if _, err := issue(w % 2); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := sent.Load(); got != 240 {
		t.Fatalf("%d SMS sent for 240 issues under the cap", got)
	}
	if r := reservations(hook); r > 240/4 {
		t.Errorf("%d reservations for 240 SMS: most issues should use a held unit", r)
	}
	// Each instance in turn until it is refused.
	for i := range instances {
		for {
			ok, err := issue(i)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
		}
	}
	if got := sent.Load(); got != limit {
		t.Fatalf("%d SMS sent once both instances were refused, want the cap, %d", got, limit)
	}
}
