package challenge

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/twofactor/service/internal/apps"
)

var (
	//go:embed void.lua
	voidLua    string
	voidScript = redis.NewScript(voidLua)
)

// State is a user's Redis state as the users service needs it: voiding
// codes, forgetting a deleted user, and reading locks in bulk. It needs
// only Redis, so it can be built before the users service.
type State struct {
	Redis redis.UniversalClient
	Now   func() time.Time // nil for the wall clock
}

func (s *State) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// issuedIDs lists the user's challenges still in the issued set.
func (s *State) issuedIDs(ctx context.Context, k keys) ([]string, error) {
	ids, err := s.Redis.ZRange(ctx, k.issued(), 0, -1).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return ids, nil
}

// Void makes the user's pending codes answer EXPIRED (they went to an old
// address) and lets a new code be asked for at once. Counters and locks
// stay: a new address does not undo failed attempts.
func (s *State) Void(ctx context.Context, company, userID string) error {
	k := keysFor(company, userID)
	ids, err := s.issuedIDs(ctx, k)
	if err != nil {
		return fmt.Errorf("void codes: %w", err)
	}
	uid, err := newUID()
	if err != nil {
		return fmt.Errorf("void codes: %w", err)
	}
	all := apps.All()
	ks := make([]string, 0, 1+len(all)+len(ids))
	ks = append(ks, k.kept())
	for _, app := range all {
		ks = append(ks, k.login(app))
	}
	for _, id := range ids {
		ks = append(ks, k.challenge(id))
	}
	if err := voidScript.Run(ctx, s.Redis, ks, len(all), uid, keptReplyTTL.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("void codes: %w: %v", ErrUnavailable, err)
	}
	return nil
}

// Forget deletes every key of the user: codes, counters, locks, in one
// DEL (one hash tag, one slot). The keys are named by the key builders:
// the issued set holds every challenge whose hash may still exist
// (issue.lua), so no SCAN of the keyspace is needed.
func (s *State) Forget(ctx context.Context, company, userID string) error {
	k := keysFor(company, userID)
	ids, err := s.issuedIDs(ctx, k)
	if err != nil {
		return fmt.Errorf("forget user: %w", err)
	}
	// The outbox stays: the user's sign-in events still go to the log.
	ks := []string{k.issued(), k.kept()}
	for _, app := range apps.All() {
		ks = append(ks, k.login(app), k.lock(app), k.failures(app))
	}
	for _, id := range ids {
		ks = append(ks, k.challenge(id))
	}
	if err := s.Redis.Del(ctx, ks...).Err(); err != nil {
		return fmt.Errorf("forget user: %w: %v", ErrUnavailable, err)
	}
	return nil
}

// Locked tells which of ids, users of company, are locked now in any app.
// One pipelined round trip of GETs: the users' keys are in different
// slots, so one MGET would not do on a cluster.
func (s *State) Locked(ctx context.Context, company string, ids []string) (map[string]bool, error) {
	all := apps.All()
	pipe := s.Redis.Pipeline()
	cmds := make([]*redis.StringCmd, 0, len(ids)*len(all))
	for _, id := range ids {
		k := keysFor(company, id)
		for _, app := range all {
			cmds = append(cmds, pipe.Get(ctx, k.lock(app)))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("lock state: %w: %v", ErrUnavailable, err)
	}
	now := s.now().UnixMilli()
	out := make(map[string]bool, len(ids))
	for i, cmd := range cmds {
		if until, err := cmd.Int64(); err == nil && until > now {
			out[ids[i/len(all)]] = true
		}
	}
	return out, nil
}
