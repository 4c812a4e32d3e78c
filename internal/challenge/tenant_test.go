package challenge_test

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/delivery"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
)

// anyUser says every id of every company is a user with 2FA on.
type anyUser struct{}

func (anyUser) ByID(_ context.Context, company, id string) (users.User, error) {
	return users.User{Company: company, ID: id, Phone: "+37120000078", Email: "u@example.com",
		TwoFactor: map[users.App]bool{users.Web: true, users.Manager: true}}, nil
}

// outbox keeps the last code sent to each caller's company.
type outbox struct {
	mu   sync.Mutex
	last string
}

func (o *outbox) Send(_ context.Context, m delivery.Message) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.last = regexp.MustCompile(`\d{6}`).FindString(m.Text)
	return nil
}

func (o *outbox) code() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// TestRedisKeyCollisionsAcrossTenants is issue 8, finding 6, against the
// test Redis: keys were built without escaping, so three wrong codes for
// company "<co>:u:jane" and user "x" locked company <co>'s user
// "jane:u:x". Now the lock stays with the tenant that earned it.
func TestRedisKeyCollisionsAcrossTenants(t *testing.T) {
	t.Parallel()
	out := &outbox{}
	svc := newService(t, testenv.Open(t), anyUser{}, out, nil, challenge.Config{})
	ctx := context.Background()
	co := testenv.Company(t)
	attacker := auth.Caller{Company: co + ":u:jane", UserID: "x", Role: auth.RoleUser}
	victim := auth.Caller{Company: co, UserID: "jane:u:x", Role: auth.RoleUser}

	var res challenge.VerifyResult
	for i := range 3 {
		// After a wrong code the next may come at once: no cooldown to wait.
		ch, err := svc.Issue(ctx, attacker, challenge.IssueRequest{App: users.Web})
		if err != nil {
			t.Fatalf("attacker's code %d: %v", i+1, err)
		}
		wrong := strings.Map(func(r rune) rune { return '0' + (r-'0'+1)%10 }, out.code())
		if res, err = svc.Verify(ctx, attacker, ch.ID, wrong); err != nil {
			t.Fatalf("attacker's verify %d: %v", i+1, err)
		}
	}
	if res.Status != challenge.Locked {
		t.Fatalf("the attacker's own login after 3 wrong codes: %s, want LOCKED", res.Status)
	}

	locks, err := svc.Locks(ctx, victim.Company, victim.UserID)
	if err != nil || len(locks) != 0 {
		t.Errorf("the victim's locks: %v, %v; want none", locks, err)
	}
	ch, err := svc.Issue(ctx, victim, challenge.IssueRequest{App: users.Web})
	if err != nil {
		t.Fatalf("the victim cannot get a code: %v", err)
	}
	if ch.AttemptsRemaining != 3 {
		t.Errorf("the victim's attempts: %d, want 3 (a fresh login)", ch.AttemptsRemaining)
	}
	if res, err := svc.Verify(ctx, victim, ch.ID, out.code()); err != nil || res.Status != challenge.Approved {
		t.Errorf("the victim's right code: %+v, %v", res, err)
	}
}
