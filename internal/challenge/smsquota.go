package challenge

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The company's hourly SMS cap is one Redis counter, in the company's
// slot: on a Cluster another node than the user's keys, and one hot key
// for a busy company. So an instance reserves the allowance in blocks and
// hands the units out from memory; most SMS issues then cost no round
// trip to the counter. The counter counts every unit reserved by any
// instance, so the cap holds across instances and is never exceeded.
// What an instance holds but does not use lapses when the hour turns (or
// the instance stops): the cap can be reached up to that many SMS early.
const (
	// quotaShare: a block is at most 1/quotaShare of what was left of the
	// cap, so near the cap blocks are single units and counting is exact.
	quotaShare = 64
	// quotaMaxBlock bounds what one instance can hold for one company.
	quotaMaxBlock = 16
	// quotaMaxCompanies bounds the table; past it, units are reserved one
	// at a time.
	quotaMaxCompanies = 10_000
)

// smsCapTTL outlives the counter's clock hour.
const smsCapTTL = 2 * time.Hour

// smsCapScript reserves ARGV[2] units in the company's hourly counter and
// returns the counter; the first reservation of the hour sets its expiry.
var smsCapScript = redis.NewScript(`local n = redis.call('INCRBY', KEYS[1], ARGV[2])
if n == tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n`)

// smsGiveBackScript returns ARGV[1] units to a counter that still
// exists: on an expired one the DECRBY would start the hour below zero.
var smsGiveBackScript = redis.NewScript(`if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('DECRBY', KEYS[1], ARGV[1])
end
return 0`)

// smsQuota is the units this instance holds, per company, for one hour.
type smsQuota struct {
	mu    sync.Mutex
	hour  int64
	units map[string]*companyUnits
}

// companyUnits is what this instance knows of one company's cap.
type companyUnits struct {
	held int   // units reserved and not yet used
	seen int64 // the counter after the last reservation
}

// currentLocked starts hour's table if hour is later than the table's,
// and reports whether hour is the table's; q.mu is held. A late call for
// a past hour (an issue that read the clock before it turned) must not
// throw the current hour's units away.
func (q *smsQuota) currentLocked(hour int64) bool {
	if q.units == nil || hour > q.hour {
		q.hour, q.units = hour, map[string]*companyUnits{}
	}
	return hour == q.hour
}

// entryLocked is company's entry of the current hour, made if the table
// has room; nil when hour is not the table's or the table is full.
func (q *smsQuota) entryLocked(company string, hour int64) *companyUnits {
	if !q.currentLocked(hour) {
		return nil
	}
	c := q.units[company]
	if c == nil && len(q.units) < quotaMaxCompanies {
		c = &companyUnits{}
		q.units[company] = c
	}
	return c
}

// take uses one held unit of company's, if there is one.
func (q *smsQuota) take(company string, hour int64) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.currentLocked(hour) || q.units[company] == nil || q.units[company].held == 0 {
		return false
	}
	q.units[company].held--
	return true
}

// give holds n more units (a block's rest, or a unit an issue did not
// use). Units of an hour that has passed are dropped: that hour's cap no
// longer matters. It reports false when the table is full and the units
// were not kept.
func (q *smsQuota) give(company string, hour int64, n int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if n <= 0 || !q.currentLocked(hour) {
		return true
	}
	c := q.entryLocked(company, hour)
	if c == nil {
		return false
	}
	c.held += n
	return true
}

// block is how many units to reserve next for company: one at a time for
// a past hour, or when the table is full.
func (q *smsQuota) block(company string, hour int64, limit int) int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.entryLocked(company, hour)
	if c == nil {
		return 1
	}
	return min(quotaMaxBlock, max(1, (int64(limit)-c.seen)/quotaShare))
}

// reserved records a reservation of b units that left the counter at n,
// and returns how many of them are within the cap.
func (q *smsQuota) reserved(company string, hour int64, limit int, b, n int64) int {
	q.mu.Lock()
	if c := q.entryLocked(company, hour); c != nil {
		c.seen = max(c.seen, n)
	}
	q.mu.Unlock()
	return int(max(0, min(b, int64(limit)-(n-b))))
}

// smsUnit is one SMS's unit of the cap, for one issue: held in memory,
// or being reserved in the issue's own round trip.
type smsUnit struct {
	company string
	hour    int64
	local   bool       // taken from the units held
	cmd     *redis.Cmd // the reservation, when not local
	block   int64
}

// reserveSMS takes a held unit of the company's, or queues a reservation
// on pipe (nil: run it now).
func (s *Service) reserveSMS(ctx context.Context, pipe redis.Scripter, company string) smsUnit {
	hour := s.Now().Unix() / 3600
	u := smsUnit{company: company, hour: hour}
	if s.quota.take(company, hour) {
		u.local = true
		return u
	}
	u.block = s.quota.block(company, hour, s.cfg.SMSPerCompanyPerHour)
	if pipe == nil {
		pipe = s.Redis
	}
	u.cmd = smsCapScript.EvalSha(ctx, pipe, []string{smsKey(company, hour)}, int64(smsCapTTL.Seconds()), u.block)
	return u
}

// granted reads the reservation: how many units it got (a local unit
// is one), reading it again with EVAL if Redis did not know the script.
func (s *Service) granted(ctx context.Context, u smsUnit) (int, error) {
	if u.local {
		return 1, nil
	}
	n, err := rerun(ctx, s.Redis, smsCapScript, u.cmd, []string{smsKey(u.company, u.hour)},
		[]any{int64(smsCapTTL.Seconds()), u.block}).Int64()
	if err != nil {
		return 0, fmt.Errorf("sms cap: %w", err)
	}
	got := s.quota.reserved(u.company, u.hour, s.cfg.SMSPerCompanyPerHour, u.block, n)
	if excess := int(u.block) - got; excess > 0 {
		// Past the cap: what nobody got goes back, or it would swallow
		// the units that refused issues give back later.
		s.giveBack(ctx, u, excess)
	}
	return got, nil
}

// giveBack returns n of u's units to the counter.
func (s *Service) giveBack(ctx context.Context, u smsUnit, n int) {
	err := smsGiveBackScript.Run(context.WithoutCancel(ctx), s.Redis, []string{smsKey(u.company, u.hour)}, n).Err()
	if err != nil {
		s.Logger.WarnContext(ctx, "sms cap: could not give units back", "err", err)
	}
}

// useSMS spends the unit on this SMS: false when the cap is
// reached. The rest of a block is held for the next issues.
func (s *Service) useSMS(ctx context.Context, u smsUnit) (bool, error) {
	got, err := s.granted(ctx, u)
	if err != nil || got == 0 {
		return false, err
	}
	s.quota.give(u.company, u.hour, got-1)
	return true, nil
}

// unuseSMS keeps the unit(s) of an issue that sends no SMS for the next.
func (s *Service) unuseSMS(ctx context.Context, u smsUnit) {
	if !u.local && (u.cmd == nil || u.cmd.Err() != nil) {
		return // nothing was reserved
	}
	got, err := s.granted(ctx, u)
	if err != nil || got == 0 {
		return
	}
	// A unit reserved alone (near the cap, or past the table's bound) goes
	// back to the counter, where any instance can use it: held here, a
	// cap of 1 would be spent by one locked user's refusal, and past the
	// bound a user refused again and again would burn the cap.
	if (u.local || u.block > 1) && s.quota.give(u.company, u.hour, got) {
		return
	}
	s.giveBack(ctx, u, got)
}
