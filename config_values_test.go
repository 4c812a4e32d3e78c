package main

import (
	"strings"
	"testing"
	"time"
)

// TestConfigValues: the variables issue 10 and 11 added take their
// documented defaults and good values, and a hostile value stops the
// start with an error that names the variable. MIGRATE_TIMEOUT exists
// because migration 0004 hashes every audit row (85 s per million rows),
// longer than the 30 s that connecting gets.
func TestConfigValues(t *testing.T) {
	migrate := func(c config) any { return c.MigrateTimeout }
	maxLock := func(c config) any { return c.Challenge.MaxLockDuration }
	consecutive := func(c config) any { return c.Challenge.MaxConsecutiveFailures }
	retention := func(c config) any { return c.AuditRetention }
	cases := []struct {
		key, value string
		got        func(config) any
		want       any // nil: refused
	}{
		{"MIGRATE_TIMEOUT", "", migrate, 10 * time.Minute},
		{"MIGRATE_TIMEOUT", "45m", migrate, 45 * time.Minute},
		{"MIGRATE_TIMEOUT", "0", migrate, nil},
		{"MIGRATE_TIMEOUT", "-5m", migrate, nil},
		{"MIGRATE_TIMEOUT", "10", migrate, nil},
		{"MIGRATE_TIMEOUT", "soon", migrate, nil},

		{"MAX_LOCK_DURATION", "", maxLock, 24 * time.Hour},
		{"MAX_LOCK_DURATION", "2h", maxLock, 2 * time.Hour},
		{"MAX_LOCK_DURATION", "1m", maxLock, nil}, // shorter than LOCK_DURATION (15m)
		{"MAX_LOCK_DURATION", "-1h", maxLock, nil},
		{"MAX_LOCK_DURATION", "9999999999h", maxLock, nil}, // overflows a duration
		{"MAX_LOCK_DURATION", "forever", maxLock, nil},

		{"MAX_CONSECUTIVE_FAILURES", "", consecutive, 30},
		{"MAX_CONSECUTIVE_FAILURES", "100", consecutive, 100},
		{"MAX_CONSECUTIVE_FAILURES", "101", consecutive, nil}, // NIST's bound
		{"MAX_CONSECUTIVE_FAILURES", "0", consecutive, nil},
		{"MAX_CONSECUTIVE_FAILURES", "-3", consecutive, nil},
		{"MAX_CONSECUTIVE_FAILURES", "99999999999999999999", consecutive, nil},
		{"MAX_CONSECUTIVE_FAILURES", "3e1", consecutive, nil},

		{"AUDIT_RETENTION_AUTHENTICATION", "", retention, 400 * 24 * time.Hour},
		{"AUDIT_RETENTION_AUTHENTICATION", "90d", retention, 90 * 24 * time.Hour},
		{"AUDIT_RETENTION_AUTHENTICATION", "off", retention, time.Duration(0)},
		{"AUDIT_RETENTION_AUTHENTICATION", "0", retention, nil},
		{"AUDIT_RETENTION_AUTHENTICATION", "400s", retention, nil}, // a typo must not wipe the table
		{"AUDIT_RETENTION_AUTHENTICATION", "-1d", retention, nil},
		{"AUDIT_RETENTION_AUTHENTICATION", "99999999999d", retention, nil},
		{"AUDIT_RETENTION_AUTHENTICATION", " 1d ", retention, 24 * time.Hour}, // trimmed, as documented
	}
	for _, tc := range cases {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			t.Setenv("DATA_DIR", t.TempDir())
			t.Setenv(tc.key, tc.value)
			cfg, err := loadConfig()
			if tc.want == nil {
				if err == nil || !strings.Contains(err.Error(), tc.key) {
					t.Errorf("%s=%q: error %v, want a refusal that names %s", tc.key, tc.value, err, tc.key)
				}
				return
			}
			if err != nil || tc.got(cfg) != tc.want {
				t.Errorf("%s=%q: %v, %v; want %v", tc.key, tc.value, tc.got(cfg), err, tc.want)
			}
		})
	}
}
