// Package testenv opens the backends tests run against: SQLite and an
// in-process Redis by default, or the real PostgreSQL and Redis named by
// TEST_DATABASE_URL and TEST_REDIS_URL. When those are set and the servers
// are unreachable, tests fail; they never skip.
//
// TEST_REDIS_URL takes every REDIS_URL form (a Cluster, Sentinel, TLS).
// TEST_DATABASE_ISOLATION=database gives each test its own database
// instead of its own schema, for a pooler such as PgBouncer in
// transaction mode, which cannot carry a per-connection search_path.
// TEST_REDIS_CLUSTER_URL names a Redis Cluster for the tests that need
// one whatever TEST_REDIS_URL is (see Cluster).
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
		if os.Getenv("TEST_DATABASE_ISOLATION") == "database" {
			b.DatabaseURL = freshDatabase(t, ctx, base)
		} else {
			b.DatabaseURL = freshSchema(t, ctx, base)
		}
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

// EmptyDatabaseURL returns the URL of a fresh PostgreSQL schema (or
// database, under TEST_DATABASE_ISOLATION=database) with no tables, for
// tests that migrate step by step; it is dropped when the test ends. It
// is empty when TEST_DATABASE_URL is. Build URLs with it rather than
// setting search_path: PgBouncer refuses that startup parameter.
func EmptyDatabaseURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("TEST_DATABASE_URL")
	if base == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if os.Getenv("TEST_DATABASE_ISOLATION") == "database" {
		return freshDatabase(t, ctx, base)
	}
	return freshSchema(t, ctx, base)
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

// freshDatabase creates a database that is dropped after the test, and
// returns base pointing at it. A pooler passes any database name through
// (PgBouncer's "*" entry).
func freshDatabase(t testing.TB, ctx context.Context, base string) string {
	t.Helper()
	admin, err := store.OpenPostgres(ctx, base)
	if err != nil {
		t.Fatalf("connect to TEST_DATABASE_URL (is PostgreSQL up?): %v", err)
	}
	name := "tdb_" + randomHex(8)
	// Concurrent CREATE DATABASEs from one template can collide
	// ("source database is being accessed by other users"): retry.
	for attempt := 0; ; attempt++ {
		err = admin.WithContext(ctx).Exec("CREATE DATABASE " + name).Error
		if err == nil || attempt == 20 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		// Not WITH (FORCE): killing the server connections PgBouncer
		// still pools for this database crashed PgBouncer 1.18 ("server
		// in bad state") on a later cancel request. A database still
		// pooled stays, and .ci/scale-backends stop drops it.
		// PgBouncer closes its idle server connections within about 2 s
		// (server_idle_timeout in .ci/scale-backends).
		for attempt := 0; attempt < 30; attempt++ {
			if admin.Exec("DROP DATABASE IF EXISTS "+name).Error == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if sqlDB, err := admin.DB(); err == nil {
			_ = sqlDB.Close()
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Cluster opens the Redis Cluster named by TEST_REDIS_CLUSTER_URL, a new
// client per call (one per instance in multi-instance tests), closed when
// the test ends. Without it the test fails on CI (CI set) and skips
// elsewhere, as the browser tests do without chromium.
func Cluster(t testing.TB) *store.Redis {
	t.Helper()
	u := os.Getenv("TEST_REDIS_CLUSTER_URL")
	if u == "" {
		msg := "TEST_REDIS_CLUSTER_URL is not set (a Redis Cluster, e.g. redis+cluster://127.0.0.1:7000 from .ci/scale-backends start)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; set CI=true to make this a failure")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb, err := store.OpenRedis(ctx, u)
	if err != nil {
		t.Fatalf("open TEST_REDIS_CLUSTER_URL (is the Cluster up?): %v", err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
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
