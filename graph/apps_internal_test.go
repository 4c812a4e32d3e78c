package graph

import (
	"testing"

	"github.com/twofactor/service/graph/model"
	"github.com/twofactor/service/internal/apps"
)

// TestAppEnumMapping: every app has an enum value and back, and every enum
// value has an app, so an app added to one side only fails here.
func TestAppEnumMapping(t *testing.T) {
	for _, a := range apps.All() {
		e, ok := appEnums[a]
		if !ok || !e.IsValid() {
			t.Errorf("app %s has no GraphQL enum value", a)
			continue
		}
		if back := fromApp(toApp(a)); back != a {
			t.Errorf("fromApp(toApp(%s)) = %s", a, back)
		}
	}
	for _, e := range model.AllApp {
		if a := fromApp(e); !a.Valid() || toApp(a) != e {
			t.Errorf("enum %s maps to %q, not a known app", e, a)
		}
	}
	if len(appEnums) != len(apps.All()) || len(appsByEnum) != len(model.AllApp) {
		t.Errorf("%d rows, %d apps, %d enum values", len(appEnums), len(apps.All()), len(model.AllApp))
	}
	if a := fromApp("MOBILE"); a.Valid() || a == "" {
		t.Errorf(`fromApp("MOBILE") = %q, want an invalid, non-empty app`, a)
	}
}
