package challenge

import (
	"fmt"
	"testing"
)

// TestSMSQuotaReserved: a reservation's units within the cap are granted,
// the rest are not, and nothing past the cap is ever granted.
func TestSMSQuotaReserved(t *testing.T) {
	for _, tc := range []struct {
		name         string
		limit        int
		block, after int64
		want         int
	}{
		{"all within", 1000, 15, 15, 15},
		{"cap reached by this block", 1000, 15, 1000, 15},
		{"cap crossed by this block", 1000, 15, 1005, 10},
		{"cap passed before", 1000, 15, 1015, 0},
		{"far past the cap", 10, 1, 500, 0},
		{"one unit, last one", 3, 1, 3, 1},
		{"one unit, over", 3, 1, 4, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q smsQuota
			if got := q.reserved("co", 1, tc.limit, tc.block, tc.after); got != tc.want {
				t.Fatalf("reserved(limit %d, block %d, counter %d) = %d, want %d", tc.limit, tc.block, tc.after, got, tc.want)
			}
		})
	}
}

// TestSMSQuotaBlock: blocks shrink to single units near the cap, so the
// units other instances may hold while this one is refused stay few.
func TestSMSQuotaBlock(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit int
		seen  int64
		want  int64
	}{
		{"fresh, default cap", 1000, 0, 15},
		{"fresh, big cap", 1 << 30, 0, quotaMaxBlock},
		{"small cap counts one by one", 2, 0, 1},
		{"63 left", 1000, 937, 1},
		{"128 left", 1000, 872, 2},
		{"past the cap", 1000, 2000, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q smsQuota
			if tc.seen > 0 {
				q.reserved("co", 7, tc.limit, 1, tc.seen)
			}
			if got := q.block("co", 7, tc.limit); got != tc.want {
				t.Fatalf("block = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestSMSQuotaHourTurns: held units are the hour's; a new hour starts empty
// and a late give for the old hour is dropped.
func TestSMSQuotaHourTurns(t *testing.T) {
	var q smsQuota
	q.give("co", 1, 3)
	if !q.take("co", 1) {
		t.Fatal("a held unit was not taken")
	}
	if q.take("co", 2) {
		t.Fatal("a unit of hour 1 was taken in hour 2")
	}
	q.give("co", 1, 5)
	if q.take("co", 2) {
		t.Fatal("a late give for hour 1 was kept in hour 2")
	}
	for range 2 {
		q.give("co", 2, 1)
	}
	if !q.take("co", 2) || !q.take("co", 2) || q.take("co", 2) {
		t.Fatal("hour 2 did not hold exactly the 2 units given")
	}
}

// TestSMSQuotaBounded: the table holds at most quotaMaxCompanies
// companies; past it, units are reserved one at a time and none held.
func TestSMSQuotaBounded(t *testing.T) {
	var q smsQuota
	for i := range quotaMaxCompanies {
		q.give(fmt.Sprint("co-", i), 1, 1)
	}
	q.give("one-too-many", 1, 5)
	if q.take("one-too-many", 1) {
		t.Fatal("a company past the bound held units")
	}
	if b := q.block("one-too-many", 1, 1000); b != 1 {
		t.Fatalf("block past the bound = %d, want 1", b)
	}
	if len(q.units) > quotaMaxCompanies {
		t.Fatalf("table grew to %d companies", len(q.units))
	}
	if !q.take("co-0", 1) {
		t.Fatal("a company within the bound lost its unit")
	}
}
