// Package testenv opens the backends tests run against: SQLite and an
// in-process Redis by default, or the real PostgreSQL and Redis named by
// TEST_DATABASE_URL and TEST_REDIS_URL. When those are set and the servers
// are unreachable, tests fail; they never skip.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/twofactor/service/internal/store"
)

// Backends are the database and Redis for one test.
type Backends struct {
	DB    *gorm.DB
	Redis *store.Redis
	// DatabaseURL and RedisURL reach the same backends from another
	// process; both are empty in embedded mode.
	DatabaseURL string
	RedisURL    string
	// DataDir is where an embedded database lives.
	DataDir string
}

// Real reports whether tests run against real PostgreSQL and Redis.
func Real() bool { return os.Getenv("TEST_DATABASE_URL") != "" }

// Open returns fresh backends that are closed when the test ends. On
// PostgreSQL every call gets its own schema, so tests and packages can run
// in parallel without seeing each other's rows.
func Open(t testing.TB) Backends {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	b := Backends{DataDir: t.TempDir(), RedisURL: os.Getenv("TEST_REDIS_URL")}
	if base := os.Getenv("TEST_DATABASE_URL"); base != "" {
		if b.RedisURL == "" {
			t.Fatal("TEST_DATABASE_URL is set but TEST_REDIS_URL is not: set both to test against real backends")
		}
		b.DatabaseURL = freshSchema(t, ctx, base)
	}
	db, err := store.OpenDB(ctx, b.DatabaseURL, b.DataDir)
	if err != nil {
		t.Fatalf("open test database (is PostgreSQL up?): %v", err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	rdb, err := store.OpenRedis(ctx, b.RedisURL)
	if err != nil {
		t.Fatalf("open test redis (is Redis up?): %v", err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	b.DB, b.Redis = db, rdb
	return b
}

// freshSchema creates a schema that is dropped after the test, and returns
// base with its search_path pointing there.
func freshSchema(t testing.TB, ctx context.Context, base string) string {
	t.Helper()
	admin, err := store.OpenPostgres(ctx, base)
	if err != nil {
		t.Fatalf("connect to TEST_DATABASE_URL (is PostgreSQL up?): %v", err)
	}
	name := "t_" + randomHex(8)
	if err := admin.Exec("CREATE SCHEMA " + name).Error; err != nil {
		t.Fatalf("create test schema: %v", err)
	}
	t.Cleanup(func() {
		_ = admin.Exec("DROP SCHEMA " + name + " CASCADE").Error
		if sqlDB, err := admin.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("TEST_DATABASE_URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// Company returns a company id no other test uses, so tests can share one
// Redis.
func Company(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("co-%s", randomHex(6))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
