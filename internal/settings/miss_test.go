package settings_test

import (
	"testing"

	"github.com/twofactor/service/internal/settings"
)

// TestMissFillKeepsByTheLoadRules: settings a caller read itself (joined
// with its own row) are kept like a load's, unless a notice, this
// instance's own commit or a dark spell came in between.
func TestMissFillKeepsByTheLoadRules(t *testing.T) {
	filled := settings.Settings{DeliveryMethod: settings.EmailOnly}
	for _, tc := range []struct {
		name    string
		between func(c *settings.Cache)
		kept    bool
	}{
		{"nothing", func(*settings.Cache) {}, true},
		{"a notice", func(c *settings.Cache) { c.Invalidate("co") }, false},
		{"its own commit", func(c *settings.Cache) { c.Put("co", settings.Settings{DeliveryMethod: settings.SMSWithEmailBackup}) }, false},
		{"a dark spell", func(c *settings.Cache) { c.SetLive(false); c.SetLive(true) }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeStore{method: settings.SMSWithEmailBackup}
			c := settings.NewCache(f.load)
			c.SetLive(true)
			fill, miss := c.Miss("co")
			if !miss || fill == nil {
				t.Fatal("a cold cache does not miss")
			}
			tc.between(c)
			fill(filled)
			got := mustGet(t, c, "co")
			if tc.kept && (got.DeliveryMethod != settings.EmailOnly || f.loads.Load() != 0) {
				t.Errorf("got %s after %d loads, want the filled settings and no load", got.DeliveryMethod, f.loads.Load())
			}
			if !tc.kept && (got.DeliveryMethod != settings.SMSWithEmailBackup || f.loads.Load() != 1) {
				t.Errorf("got %s after %d loads, want one load of the stored settings", got.DeliveryMethod, f.loads.Load())
			}
			if _, miss := c.Miss("co"); miss {
				t.Error("a cached company misses")
			}
		})
	}
}

// TestMissWhenDark: a dark cache never misses (reads go to the database
// and nothing is kept), so no caller reads settings for it.
func TestMissWhenDark(t *testing.T) {
	c := settings.NewCache((&fakeStore{}).load)
	if fill, miss := c.Miss("co"); miss || fill != nil {
		t.Error("a dark cache misses")
	}
}
