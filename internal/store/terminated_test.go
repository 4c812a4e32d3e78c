package store_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/twofactor/service/internal/store"
	"github.com/twofactor/service/internal/testenv"
)

// TestTerminatedConnectionIsReplaced: PostgreSQL ends the backend of a
// pooled connection (as a restart or failover ends them all), and the
// next statement, sent well within the second after which pgx pings an
// idle connection anyway, still succeeds: the unread error and close are
// seen before reuse, and database/sql takes a new connection. Before,
// that statement failed with SQLSTATE 57P01. Through PgBouncer the
// client's connection outlives the server's, so there it passes either
// way.
func TestTerminatedConnectionIsReplaced(t *testing.T) {
	if !testenv.Real() {
		t.Skip("needs TEST_DATABASE_URL (PostgreSQL)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := testenv.Open(t)
	sqlDB, err := b.DB.DB()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB.SetMaxOpenConns(1) // one pooled connection: the one ended
	admin, err := store.OpenPostgres(ctx, os.Getenv("TEST_DATABASE_URL"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if db, err := admin.DB(); err == nil {
			_ = db.Close()
		}
	}()
	for round := range 3 {
		var pid int
		if err := b.DB.WithContext(ctx).Raw("SELECT pg_backend_pid()").Row().Scan(&pid); err != nil {
			t.Fatal(err)
		}
		var ended bool
		if err := admin.WithContext(ctx).Raw("SELECT pg_terminate_backend(?)", pid).Row().Scan(&ended); err != nil || !ended {
			t.Fatalf("terminate backend %d: %v, %v", pid, ended, err)
		}
		// The backend sends its error before it leaves pg_stat_activity.
		for gone := false; !gone; {
			var n int64
			if err := admin.WithContext(ctx).Raw("SELECT count(*) FROM pg_stat_activity WHERE pid = ?", pid).Row().Scan(&n); err != nil {
				t.Fatal(err)
			}
			gone = n == 0
		}
		if err := b.DB.WithContext(ctx).Exec("SELECT 1").Error; err != nil {
			t.Fatalf("round %d: the statement after the backend ended failed: %v", round, err)
		}
	}
}
