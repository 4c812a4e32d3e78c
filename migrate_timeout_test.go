package main

import (
	"strings"
	"testing"
	"time"
)

// TestMigrateTimeout: migrations get their own timeout (MIGRATE_TIMEOUT,
// default 10m), since migration 0004 hashes every audit row and takes
// longer than the 30 s that connecting gets; bad values are refused.
func TestMigrateTimeout(t *testing.T) {
	cases := []struct {
		value string
		want  time.Duration // 0: refused
	}{
		{"", 10 * time.Minute},
		{"45m", 45 * time.Minute},
		{"90s", 90 * time.Second},
		{"0", 0},
		{"-5m", 0},
		{"10", 0},
		{"soon", 0},
	}
	for _, tc := range cases {
		t.Run(tc.value, func(t *testing.T) {
			t.Setenv("DATA_DIR", t.TempDir())
			t.Setenv("MIGRATE_TIMEOUT", tc.value)
			cfg, err := loadConfig()
			switch {
			case tc.want == 0 && (err == nil || !strings.Contains(err.Error(), "MIGRATE_TIMEOUT")):
				t.Errorf("MIGRATE_TIMEOUT=%q: %v, want it refused", tc.value, err)
			case tc.want != 0 && (err != nil || cfg.MigrateTimeout != tc.want):
				t.Errorf("MIGRATE_TIMEOUT=%q: %v, %v; want %v", tc.value, cfg.MigrateTimeout, err, tc.want)
			}
		})
	}
}
