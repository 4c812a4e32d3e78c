package users_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twofactor/service/internal/apps"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/internal/validation"
	"github.com/twofactor/service/models"
)

// hostileIDs are ids no user can have: each must be refused by field,
// never matched, run as SQL, nor rewritten into another id. ("%" and "_"
// are valid ids: TestListQueryEscapes covers them.)
var hostileIDs = []string{
	"",
	"a b",
	"x' OR '1'='1",
	"ad\u200bmin", // zero-width space
	"\u202eadmin", // bidi override
	"a\x00b",      // NUL
	"\xff\xfe",    // not UTF-8
	strings.Repeat("a", validation.MaxIDLen+1),
}

func fieldErr(t *testing.T, err error, field ...string) {
	t.Helper()
	var verr validation.Errors
	if !errors.As(err, &verr) {
		t.Fatalf("err = %v, want validation errors on %q", err, field)
	}
	for _, fe := range verr {
		if strings.Join(fe.Field, ".") == strings.Join(field, ".") {
			return
		}
	}
	t.Fatalf("err = %v, want one on %q", verr, field)
}

// TestSwitchRefusesHostileIDs: setTwoFactorForUsers' userIds are checked
// like any id, and a refused call switches no one, not even the valid ids
// beside the hostile one.
func TestSwitchRefusesHostileIDs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.Create(ctx, e.admin, users.NewUser{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range hostileIDs {
		n, err := e.svc.SetTwoFactorFor(ctx, e.admin, users.Switch{App: apps.Web, Enabled: true, IDs: []string{"a", id}})
		if n != 0 {
			t.Errorf("%q: switched %d users", id, n)
		}
		fieldErr(t, err, "userIds", "1")
	}
	if row, _ := e.userRow(t, e.db, "a"); row.TwoFactor(apps.Web) {
		t.Error("user a was switched by a refused call")
	}
	_, err := e.svc.SetTwoFactorFor(ctx, e.admin, users.Switch{App: apps.Web, IDs: make([]string, users.MaxUpsert+1)})
	fieldErr(t, err, "userIds")
	_, err = e.svc.SetTwoFactorFor(ctx, e.admin, users.Switch{App: apps.Web,
		Filter: &users.Filter{TwoFactor: &users.TwoFactorFilter{App: "sms' OR 1=1"}}})
	fieldErr(t, err, "filter", "twoFactor", "app")
	_, err = e.svc.SetTwoFactorFor(ctx, e.admin, users.Switch{App: "two_factor_web = true OR 1"})
	fieldErr(t, err, "app")
}

// TestUpsertRefusesHostileIDs: one hostile id among valid items means
// nothing is written, and the fault names its index.
func TestUpsertRefusesHostileIDs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, id := range hostileIDs {
		_, err := e.svc.Upsert(ctx, e.admin, []users.NewUser{{ID: "ok"}, {ID: id}})
		fieldErr(t, err, "users", "1", "id")
	}
	if n := e.count(t, &models.User{}); n != 0 {
		t.Errorf("%d users written by refused upserts", n)
	}
}

// TestListRefusesHostileFilter: an unknown app in the filter is refused
// by field, and a locked filter without the Redis state fails, never
// reads as "nobody is locked".
func TestListRefusesHostileFilter(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.Create(ctx, e.admin, users.NewUser{ID: "a"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.List(ctx, e.admin, users.ListRequest{Filter: &users.Filter{TwoFactor: &users.TwoFactorFilter{App: "1 = 1 --"}}})
	fieldErr(t, err, "filter", "twoFactor", "app")
	no := false
	if _, err := e.svc.List(ctx, e.admin, users.ListRequest{Filter: &users.Filter{Locked: &no}}); !errors.Is(err, users.ErrStateUnavailable) {
		t.Errorf("locked filter without state: %v, want ErrStateUnavailable", err)
	}
	for _, after := range []string{"a", "%", strings.Repeat("A", 10000), "\r\n"} {
		if _, err := e.svc.List(ctx, e.admin, users.ListRequest{After: after}); err == nil {
			t.Errorf("after %q: accepted", after)
		}
	}
}
