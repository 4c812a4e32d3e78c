package models

import (
	"testing"

	"github.com/twofactor/service/internal/apps"
)

// TestEveryAppHasItsFields: for every app in the table, the user's switch
// and the company's default round-trip through the field the app's column
// names, and setting one app's touches no other's.
func TestEveryAppHasItsFields(t *testing.T) {
	for _, a := range apps.All() {
		var u User
		var s CompanySettings
		u.SetTwoFactor(a, true)
		s.SetDefault(a, true)
		for _, b := range apps.All() {
			if got := u.TwoFactor(b); got != (a == b) {
				t.Errorf("after SetTwoFactor(%s), TwoFactor(%s) = %v", a, b, got)
			}
			if got := s.Default(b); got != (a == b) {
				t.Errorf("after SetDefault(%s), Default(%s) = %v", a, b, got)
			}
		}
		u.SetTwoFactor(a, false)
		s.SetDefault(a, false)
		if u.TwoFactor(a) || s.Default(a) {
			t.Errorf("%s: switch stays on after setting it off", a)
		}
	}
	var u User
	u.SetTwoFactor("desktop", true)
	if u.TwoFactor("desktop") || u != (User{}) {
		t.Errorf("an unknown app changed the row: %+v", u)
	}
}
