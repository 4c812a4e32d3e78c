package apptest_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/feed"
	"github.com/twofactor/service/internal/testenv"
)

const (
	mCreate = `mutation($input: CreateUserInput!) { createUser(input: $input) { user { id } userErrors { code } } }`
	mTwoFA  = `mutation($input: SetUserTwoFactorInput!) { setUserTwoFactor(input: $input) { user { id } userErrors { code } } }`
	mIssue  = `mutation($input: IssueChallengeInput!) { issueChallenge(input: $input) { challenge { id } userErrors { code } } }`
	mVerify = `mutation($input: VerifyChallengeInput!) { verifyChallenge(input: $input) { status attemptsRemaining userErrors { code } } }`
)

// onCluster gives an instance its own client to the Cluster.
func onCluster(t testing.TB) func(*app.Options) {
	return func(o *app.Options) { o.Redis = testenv.Cluster(t) }
}

// threeInstances starts A, B and C: separate apps, each with its own
// Cluster client and live feed hub, on one database.
func threeInstances(t *testing.T) [3]*apptest.Server {
	t.Helper()
	a := apptest.Start(t, onCluster(t))
	return [3]*apptest.Server{a, apptest.StartPeer(t, a, onCluster(t)), apptest.StartPeer(t, a, onCluster(t))}
}

var phones atomic.Int64

// twoFactorUser creates a user with a phone and 2FA on for WEB, through s.
func twoFactorUser(t *testing.T, s *apptest.Server, co, id string) (phone string) {
	t.Helper()
	phone = fmt.Sprintf("+3712%07d", 5000000+phones.Add(1))
	var out struct{ CreateUser struct{ UserErrors []any } }
	s.Admin(t, co).Must(t, mCreate, map[string]any{"input": map[string]any{"id": id, "displayName": id, "phone": phone}}, &out)
	s.Admin(t, co).Must(t, mTwoFA, map[string]any{"input": map[string]any{"userId": id, "app": "WEB", "enabled": true}}, nil)
	return phone
}

func issue(t *testing.T, s *apptest.Server, co, user string) string {
	t.Helper()
	var out struct {
		IssueChallenge struct {
			Challenge  *struct{ ID string }
			UserErrors []struct{ Code string }
		}
	}
	s.User(t, co, user).Must(t, mIssue, map[string]any{"input": map[string]any{"app": "WEB"}}, &out)
	if out.IssueChallenge.Challenge == nil {
		t.Fatalf("issueChallenge: %+v", out.IssueChallenge.UserErrors)
	}
	return out.IssueChallenge.Challenge.ID
}

type verified struct {
	Status            string
	AttemptsRemaining int
	UserErrors        []struct{ Code string }
}

func verify(t *testing.T, s *apptest.Server, co, user, id, code string) verified {
	t.Helper()
	var out struct{ VerifyChallenge verified }
	s.User(t, co, user).Must(t, mVerify, map[string]any{"input": map[string]any{"challengeId": id, "code": code}}, &out)
	return out.VerifyChallenge
}

func wrongCode(code string) string {
	if code == "000000" {
		return "111111"
	}
	return "000000"
}

// TestClusterIssueOnAVerifyOnB is issue 11: a challenge issued on one
// instance is verified on another, through a Redis Cluster.
func TestClusterIssueOnAVerifyOnB(t *testing.T) {
	t.Parallel()
	in := threeInstances(t)
	co := testenv.Company(t)
	phone := twoFactorUser(t, in[0], co, "u1")
	id := issue(t, in[0], co, "u1")
	if got := verify(t, in[1], co, "u1", id, in[0].Outbox.LastCode(t, phone)); got.Status != "APPROVED" {
		t.Fatalf("the right code on B: %+v, want APPROVED", got)
	}
	if got := verify(t, in[2], co, "u1", id, in[0].Outbox.LastCode(t, phone)); got.Status == "APPROVED" {
		t.Fatalf("the same code again on C: %+v, want it refused", got)
	}
}

// TestClusterWrongCodesLockAcrossInstances: wrong codes spread over A, B
// and C count together and lock after exactly three (the default).
func TestClusterWrongCodesLockAcrossInstances(t *testing.T) {
	t.Parallel()
	in := threeInstances(t)
	co := testenv.Company(t)
	phone := twoFactorUser(t, in[0], co, "u1")
	id := issue(t, in[1], co, "u1")
	code := in[0].Outbox.LastCode(t, phone)
	var statuses []string
	for i := range 3 {
		statuses = append(statuses, verify(t, in[i], co, "u1", id, wrongCode(code)).Status)
	}
	if want := []string{"REJECTED", "REJECTED", "LOCKED"}; !slices.Equal(statuses, want) {
		t.Fatalf("three wrong codes on A, B, C: %v, want %v", statuses, want)
	}
	if got := verify(t, in[0], co, "u1", id, code); got.Status == "APPROVED" {
		t.Fatalf("the right code after the lock: %+v, want it refused", got)
	}
}

// TestClusterFeedAcrossInstances: a subscriber on A sees a change made on
// C, and resumes from its cursor through B without a gap or a duplicate.
func TestClusterFeedAcrossInstances(t *testing.T) {
	t.Parallel()
	in := threeInstances(t)
	co := testenv.Company(t)
	admin := auth.Caller{UserID: "admin-" + co, Company: co, Role: auth.RoleAdmin}
	ids := func(e audit.Event) int64 { return e.ID }

	ctxA, cancelA := context.WithCancel(t.Context())
	onA, err := feed.Stream(ctxA, in[0].App.Feed, feed.Request{Caller: admin}, ids, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	twoFactorUser(t, in[2], co, "made-on-c") // two events: created, 2FA on
	got := receive(t, onA, 2)
	cancelA()

	// While nobody listens, C and A write more; B's stream resumes from
	// the last event A delivered.
	twoFactorUser(t, in[2], co, "while-away")
	onB, err := feed.Stream(t.Context(), in[1].App.Feed, feed.Request{Caller: admin, After: got[1]}, ids, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	twoFactorUser(t, in[0], co, "after-resume")
	rest := receive(t, onB, 4)
	all := append(got, rest...)
	for i := 1; i < len(all); i++ {
		if all[i] <= all[i-1] {
			t.Fatalf("events %v: not strictly increasing (a duplicate or reordering)", all)
		}
	}
	last, err := in[1].App.Audit.LastID(t.Context(), co)
	if err != nil {
		t.Fatal(err)
	}
	if all[len(all)-1] != last {
		t.Fatalf("events %v end before the log's last id %d", all, last)
	}
}

// receive reads n events, failing after a generous deadline.
func receive(t *testing.T, ch <-chan int64, n int) []int64 {
	t.Helper()
	var out []int64
	deadline := time.After(30 * time.Second)
	for len(out) < n {
		select {
		case id, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended after %v, want %d events", out, n)
			}
			out = append(out, id)
		case <-deadline:
			t.Fatalf("got %v, want %d events", out, n)
		}
	}
	return out
}
