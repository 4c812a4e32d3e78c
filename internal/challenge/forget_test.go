package challenge_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/users"
)

// TestForgetCodesPastTheWindow: a challenge older than the login window no
// longer counts against the rate, but its hash lives a code TTL longer.
// The issued set keeps naming it, so Forget deletes it without a SCAN of
// the keyspace, and the rate still counts only the last window.
func TestForgetCodesPastTheWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t, challenge.Config{})
	cfg := challenge.DefaultConfig
	for range cfg.MaxCodesPerWindow {
		h.issue(t) // a minute apart: past the cooldown
	}
	h.offset.Add(int64(time.Minute))
	_, err := h.svc.Issue(ctx, h.caller, challenge.IssueRequest{App: users.Web})
	var refusal *challenge.Refusal
	if !errors.As(err, &refusal) || refusal.Code != challenge.CodeRateLimited {
		t.Fatalf("code %d in one window: %v, want %s", cfg.MaxCodesPerWindow+1, err, challenge.CodeRateLimited)
	}
	// Past the window of every code so far, within a TTL of the first.
	h.offset.Add(int64(cfg.LoginWindow - 30*time.Second))
	if _, err := h.svc.Issue(ctx, h.caller, challenge.IssueRequest{App: users.Web}); err != nil {
		t.Fatalf("a code after the window: %v", err)
	}

	b64 := base64.RawURLEncoding.EncodeToString
	pattern := "2fa:v2:{c:" + b64([]byte(h.caller.Company)) + ":u:" + b64([]byte(h.caller.UserID)) + "}*"
	keys := func() []string {
		var out []string
		iter := h.redis.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			out = append(out, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if n := len(keys()); n < cfg.MaxCodesPerWindow+2 {
		t.Fatalf("%d keys before Forget, want the old challenges too; the pattern is wrong", n)
	}
	st := &challenge.State{Redis: h.redis}
	if err := st.Forget(ctx, h.caller.Company, h.caller.UserID); err != nil {
		t.Fatal(err)
	}
	// Only the outbox stays: the user's sign-in events still go to the log.
	if left := keys(); len(left) != 1 || !strings.HasSuffix(left[0], ":outbox") {
		t.Errorf("keys left after Forget: %q, want the outbox alone", left)
	}
}
