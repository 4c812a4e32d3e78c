package users_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/twofactor/service/internal/audit"
	"github.com/twofactor/service/internal/auth"
	"github.com/twofactor/service/internal/settings"
	"github.com/twofactor/service/internal/testenv"
	"github.com/twofactor/service/internal/users"
	"github.com/twofactor/service/models"
)

// cachedEnv is newEnv with the settings read through a cache, as the app
// wires them, and the help desk as the company's contact person.
func cachedEnv(t *testing.T) (env, *settings.Cache) {
	t.Helper()
	b := testenv.Open(t)
	log := audit.NewLog(b.DB, nil, nil)
	cache := settings.NewCache(settings.Loader(b.DB))
	cache.SetLive(true)
	st := settings.NewService(b.DB, log, settings.WithCache(cache))
	co := testenv.Company(t)
	e := env{db: b.DB, log: log, settings: st, svc: users.NewService(b.DB, log, st), co: co,
		admin: auth.Caller{UserID: "root", Company: co, Role: auth.RoleAdmin, Name: "Root"}}
	method := settings.EmailOnly
	if _, err := st.UpdateGeneral(context.Background(), e.admin, settings.GeneralUpdate{
		DeliveryMethod: &method, SetContact: true, Contact: &settings.ContactPerson{Name: "Help Desk", Email: "help@example.com"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Create(context.Background(), e.admin, users.NewUser{ID: "u1", Email: "u1@example.com"}); err != nil {
		t.Fatal(err)
	}
	return e, cache
}

// TestIssueReadsAreOneStatement: what an issue reads, the user and then
// its company's settings, is one SQL statement on a cold settings cache
// (the user joined with the settings, which fill the cache) as on a warm
// one; only a dark cache (Redis away) reads the settings apart.
func TestIssueReadsAreOneStatement(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cache func(c *settings.Cache, co string)
		want  int64
	}{
		{"cold", func(c *settings.Cache, co string) { c.Invalidate(co) }, 1},
		{"warm", func(*settings.Cache, string) {}, 1},
		{"dark", func(c *settings.Cache, _ string) { c.SetLive(false) }, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, cache := cachedEnv(t)
			ctx := context.Background()
			if _, err := e.settings.ForCompany(ctx, e.co); err != nil { // cached now
				t.Fatal(err)
			}
			tc.cache(cache, e.co)
			n := testenv.Statements(t, e.db)
			for round := range 2 { // the second round finds the cache as the first left it
				before := n.Load()
				u, err := e.svc.ByID(ctx, e.co, "u1")
				if err != nil {
					t.Fatal(err)
				}
				set, err := e.settings.ForCompany(ctx, e.co)
				if err != nil {
					t.Fatal(err)
				}
				if got := n.Load() - before; got != tc.want { // counted before the loader's check below
					t.Errorf("round %d: %d statements, want %d", round, got, tc.want)
				}
				if u.ID != "u1" || u.Email != "u1@example.com" || u.Company != e.co || u.CreatedAt.IsZero() {
					t.Errorf("round %d: user %+v", round, u)
				}
				if set.DeliveryMethod != settings.EmailOnly || set.Contact == nil || set.Contact.Name != "Help Desk" ||
					set.Company != e.co || set.UpdatedAt.IsZero() {
					t.Errorf("round %d: settings %+v", round, set)
				}
				if want, err := settings.Loader(e.db)(ctx, e.co); err != nil || !reflect.DeepEqual(set, want) {
					t.Errorf("round %d: settings %+v, the loader's %+v (err %v)", round, set, want, err)
				}
			}
		})
	}
}

// TestColdReadOfAMissingUser: an unknown user is ErrNotFound on a cold
// cache too, and a company with no settings row yet (an outer join's
// empty half) keeps nothing: the settings read creates the defaults.
func TestColdReadOfAMissingUser(t *testing.T) {
	e, cache := cachedEnv(t)
	ctx := context.Background()
	cache.Invalidate(e.co)
	if _, err := e.svc.ByID(ctx, e.co, "nobody"); !errors.Is(err, users.ErrNotFound) {
		t.Fatalf("unknown user: %v, want ErrNotFound", err)
	}
	other := e.co + "-new"
	if err := e.db.Create(&models.User{CompanyID: other, ID: "u2"}).Error; err != nil {
		t.Fatal(err)
	}
	if u, err := e.svc.ByID(ctx, other, "u2"); err != nil || u.ID != "u2" {
		t.Fatalf("user of a company without settings: %+v, %v", u, err)
	}
	set, err := e.settings.ForCompany(ctx, other)
	if err != nil || set.DeliveryMethod != settings.SMSWithEmailBackup || set.Company != other {
		t.Fatalf("the new company's settings: %+v, %v; want the defaults", set, err)
	}
}
