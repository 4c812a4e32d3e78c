package graph_test

import (
	"testing"

	"github.com/twofactor/service/internal/app"
	"github.com/twofactor/service/internal/apptest"
	"github.com/twofactor/service/internal/challenge"
	"github.com/twofactor/service/internal/testenv"
)

// TestSMSCapCountsOnlySentSMS: an issue counts its SMS against the
// company's cap in the same round trip as the script, so a refused issue
// (here RESEND_TOO_SOON) must give its count back: with a cap of 2, two
// users get their SMS however often the first one is refused, and a
// third is over the cap.
func TestSMSCapCountsOnlySentSMS(t *testing.T) {
	t.Parallel()
	s := apptest.Start(t, func(o *app.Options) { o.Challenge = challenge.Config{SMSPerCompanyPerHour: 2} })
	co := testenv.Company(t)
	first := newLogin(t, s, co, "first", uniquePhone(), uniqueEmail(), "WEB")
	if ch := first.mustIssue(t, ""); ch.Channel != "SMS" {
		t.Fatalf("first issue went by %s, want SMS", ch.Channel)
	}
	for range 3 {
		wantUserError(t, "again at once", first.issue(t, "").UserErrors, "RESEND_TOO_SOON")
	}
	second := newLogin(t, s, co, "second", uniquePhone(), uniqueEmail(), "WEB")
	if ch := second.mustIssue(t, ""); ch.Channel != "SMS" {
		t.Fatalf("second issue went by %s, want SMS", ch.Channel)
	}
	third := newLogin(t, s, co, "third", uniquePhone(), uniqueEmail(), "WEB")
	wantUserError(t, "over the cap", third.issue(t, "").UserErrors, "RATE_LIMITED")
}
